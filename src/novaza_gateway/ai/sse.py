"""A server-sent-events answer that notices the client leaving.

Each chunk is sent as it is produced. A second task waits on ``receive`` for
``http.disconnect``; when the client goes, the chunk iterator is cancelled and closed, which
cancels the generation behind it (whatever the server's ASGI spec version, and even while
the request still waits in the model's queue).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


def event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


DONE = event(b"[DONE]")


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncGenerator[bytes, None], headers: Mapping[str, str]) -> None:
        # Like Starlette's StreamingResponse: no body, so no content-length.
        self.status_code = 200
        self.background = None
        self.chunks = chunks
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                async with contextlib.aclosing(self.chunks) as chunks:
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the server reports the client gone on send
                pass
            group.cancel_scope.cancel()
