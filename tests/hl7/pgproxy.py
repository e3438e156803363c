"""A TCP proxy between the gateway and PostgreSQL that loses a connection on purpose.

Armed with a marker (bytes a statement of the gateway binds, e.g. a message's MSH-10), it
watches each connection's client-to-server bytes: once a connection has carried the marker,
its next ``COMMIT`` is forwarded to PostgreSQL, the server's answer is withheld, and both
sides are cut a moment later. PostgreSQL commits; the gateway sees its connection drop in
the middle of the commit (asyncpg: ``ConnectionDoesNotExistError``) and cannot know.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    marked: bool = False
    cut: bool = False


@dataclass
class CuttingProxy:
    upstream_host: str
    upstream_port: int
    marker: bytes | None = None
    cuts: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def for_url(cls, url: str) -> CuttingProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url(self, url: str) -> str:
        """``url`` through the proxy."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        link = _Link(writer, up_writer)
        tasks = [
            asyncio.create_task(self._to_server(reader, link)),
            asyncio.create_task(self._to_client(up_reader, link)),
        ]
        self._tasks.update(tasks)
        try:  # one direction ends (a cut, a close): the link ends
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            self._tasks.difference_update(tasks)
            for side in (writer, up_writer):
                side.transport.abort()

    async def _to_server(self, reader: asyncio.StreamReader, link: _Link) -> None:
        tail = b""
        while data := await reader.read(65536):
            window = tail + data
            tail = window[-64:]
            marker, marked_before = self.marker, link.marked
            if marker is not None and marker in window:
                link.marked = True
            commit = data.find(b"COMMIT")  # in these bytes, after the marker
            if (
                marker is not None
                and commit >= 0
                and (marked_before or 0 <= data.find(marker) < commit)
            ):
                link.cut = True  # the server's answer to this COMMIT never reaches the client
                self.marker = None
                self.cuts += 1
                link.server.write(data)
                await link.server.drain()
                await asyncio.sleep(5)  # until the server's answer ends the link (below)
                return
            link.server.write(data)
            await link.server.drain()

    async def _to_client(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            if link.cut:  # the COMMIT's answer: committed. Withheld; the link is cut.
                return
            link.client.write(data)
            await link.client.drain()
