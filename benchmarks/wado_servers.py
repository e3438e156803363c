"""Baselines for the WADO retrieve benchmark (``benchmarks/imaging.py``), each its own process.

- ``bare``: a bare Starlette app on the same uvicorn, with the same ``uvicorn.run`` keywords as
  ``novaza serve`` (uvloop and httptools when installed, access log off): one route, no
  middleware, no authentication, no database, no audit. It answers the same files as the
  gateway in the same ``multipart/related`` framing, with ``Content-Length``, read in 1 MiB
  chunks with one chunk read ahead in a worker thread (the technique the gateway uses), so the
  gap between this and the gateway is the gateway's own cost, and the gap between this and a
  direct read is the HTTP stack's.
- ``raw``: no HTTP framework and no event loop: a blocking socket answering any request with
  the same body through ``os.sendfile`` (zero-copy). What loopback TCP itself allows here.

Run: ``python benchmarks/wado_servers.py bare|raw PORT FILE...``
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

CHUNK = 1024 * 1024
BOUNDARY = "bare-baseline-0123456789abcdef01234567"
MEDIA = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def part_head(index: int) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return (b"\r\n" if index else b"") + head


def body_length(files: list[Path]) -> int:
    heads = sum(len(part_head(index)) for index in range(len(files)))
    return heads + sum(path.stat().st_size for path in files) + len(TAIL)


def _pread(path: Path, position: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, CHUNK, position)
    finally:
        os.close(fd)


async def stream(files: list[Path]) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    for index, path in enumerate(files):
        yield part_head(index)
        size, position = path.stat().st_size, 0
        pending: asyncio.Future[bytes] | None = loop.run_in_executor(None, _pread, path, 0)
        while pending is not None:
            chunk = await pending
            position += len(chunk)
            more = bool(chunk) and position < size
            pending = loop.run_in_executor(None, _pread, path, position) if more else None
            yield chunk
    yield TAIL


def bare_app(files: list[Path]) -> Starlette:
    length = str(body_length(files))

    async def retrieve(request: Request) -> Response:
        headers = {"content-length": length}
        return StreamingResponse(stream(files), media_type=MEDIA, headers=headers)

    return Starlette(routes=[Route("/{path:path}", retrieve)])


def serve_raw(port: int, files: list[Path]) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {MEDIA}\r\n"
    head += f"Content-Length: {body_length(files)}\r\nConnection: close\r\n\r\n"
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):  # a readiness probe hangs up at once
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    break
                request += data
            else:
                send_files(conn, head.encode(), files)


def send_files(conn: socket.socket, head: bytes, files: list[Path]) -> None:
    conn.sendall(head)
    for index, path in enumerate(files):
        conn.sendall(part_head(index))
        with path.open("rb") as handle:
            size, sent = path.stat().st_size, 0
            while sent < size:
                sent += os.sendfile(conn.fileno(), handle.fileno(), sent, size - sent)
    conn.sendall(TAIL)


def main() -> None:
    kind, port, files = sys.argv[1], int(sys.argv[2]), [Path(f) for f in sys.argv[3:]]
    if kind == "raw":
        serve_raw(port, files)
        return
    uvicorn.run(
        bare_app(files),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=True,
        server_header=False,
    )


if __name__ == "__main__":
    main()
