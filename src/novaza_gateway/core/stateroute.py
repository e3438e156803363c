"""``StateRoute``: a route answered from what its guard put in ``request.state``.

FastAPI's per-request machinery (an exit stack per request, dependency solving, validating the
return value again against the response model) is a third to a half of the CPU of a request
that does no I/O (docs/benchmarks.md). A hot route that takes no parameters and reads only the
principal and tenant the ``RouteGuard`` resolved does not need it: its endpoint gets the
``Request`` and returns a pydantic model, which goes out as JSON by alias, as FastAPI would
send it (or a dict already in the model's wire form, where building the model costs too
much). The route stays an ``APIRoute``, so OpenAPI documents it and the guard wraps it, and
the front door (``core.frontdoor``) calls it without the framework's layers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

_JSON = (b"content-type", b"application/json")

# A model goes out by alias; a dict is taken as the model's wire form already (whoami).
StateEndpoint = Callable[[Request], Awaitable[BaseModel | dict[str, Any]]]


class StateRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if len(parameters) != 1 or parameters[0].annotation not in (Request, "Request"):
            raise TypeError(f"{endpoint.__name__}: a StateRoute endpoint takes only the Request")
        super().__init__(path, endpoint, **kwargs)
        self.app = _answer(endpoint, self.status_code or 200)


def _answer(endpoint: StateEndpoint, status: int) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        answer = await endpoint(Request(scope, receive))
        if isinstance(answer, BaseModel):
            body = answer.__pydantic_serializer__.to_json(answer, by_alias=True)
        else:
            body = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app
