"""A pipelined RESP2 connection for the rate limiter's one script call per request.

redis-py's asyncio client spends 230-450 us of CPU per ``EVALSHA`` on our benchmark machine
(docs/benchmarks.md): more than the rest of a gateway request. The limiter needs a single
command, so this speaks just enough RESP2 for it. One connection per process; the commands of
every request that asks during one event-loop turn leave in one write, and replies are matched
to callers in order (Redis answers a connection's commands in the order it received them).

``redis://`` and ``rediss://`` (TLS) URLs: host, port, database, user and password.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlsplit

CRLF = b"\r\n"


class RespError(Exception):
    """An error reply from the server (``-ERR ...``, ``-NOSCRIPT ...``)."""


class ConnectionClosed(ConnectionError):
    """The connection went away with the command unanswered."""


def encode_command(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        value = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def parse_reply(buf: bytes | bytearray, pos: int = 0) -> tuple[Any, int] | None:
    """One reply starting at ``pos``: (value, position after it), or None when incomplete.

    Error replies are returned as ``RespError`` values (they may sit inside arrays).
    """
    end = buf.find(CRLF, pos)
    if end < 0:
        return None
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    after = end + 2
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line.decode(), after
    if kind == b"-":
        return RespError(line.decode(errors="replace")), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            return None
        return bytes(buf[after : after + size]), after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            parsed = parse_reply(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise RespError(f"unexpected reply type {kind!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.closed = False
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here
        self.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self.closed:
            future.set_exception(ConnectionClosed("connection closed"))
            return future
        self.pending.append(future)
        if not self._outgoing:
            loop.call_soon(self._flush)  # every command asked for in this loop turn, one write
        self._outgoing.append(command)
        return future

    def _flush(self) -> None:
        if self.transport is not None and not self.closed and self._outgoing:
            self.transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        pos = 0
        try:
            while self.pending:
                parsed = parse_reply(self._buffer, pos)
                if parsed is None:
                    break
                value, pos = parsed
                future = self.pending.popleft()
                if future.done():  # its caller timed out; the reply is consumed all the same
                    continue
                if isinstance(value, RespError):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        except (RespError, ValueError):  # a stream we cannot parse: nothing after it is safe
            self._fail(ConnectionClosed("unparseable reply"))
            if self.transport is not None:
                self.transport.abort()
        del self._buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed(str(exc) if exc else "closed by the server"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)


def _expire_after_a_turn(loop: asyncio.AbstractEventLoop, reply: asyncio.Future[Any]) -> None:
    def second_hop() -> None:
        if not reply.done():
            reply.set_exception(TimeoutError("no reply from Redis within the deadline"))

    loop.call_soon(loop.call_soon, second_hop)  # a turn (its I/O poll included) in between


class PipelinedRedis:
    def __init__(
        self,
        host: str,
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 0.025,
        tls: bool = False,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self._auth = (username, password)
        self._tls = ssl.create_default_context() if tls else None
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, timeout: float) -> PipelinedRedis:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("expected redis://host or rediss://host")
        path = parts.path.strip("/")
        return cls(
            parts.hostname,
            parts.port or 6379,
            int(path) if path else 0,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            timeout,
            tls=parts.scheme == "rediss",
        )

    async def execute(self, *args: str | bytes | int) -> Any:
        """One command and its reply, within ``timeout`` seconds in all (connecting included).

        A deadline that passes while the event loop itself was stalled (a long synchronous
        step elsewhere) is not a slow Redis: the reply may be waiting in the socket. When the
        deadline fires, the loop gets one more full turn, I/O included, before the command
        fails; only a reply still missing then is a timeout.
        """
        return await self.send(encode_command(*args))

    async def send(self, command: bytes) -> Any:
        """``execute`` for a command already encoded (a caller sending the same one often)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        connection = self._connection
        if connection is None or connection.closed:
            async with asyncio.timeout_at(deadline):
                connection = await self._connect()
        reply = connection.send(command)
        expiry = loop.call_at(deadline, _expire_after_a_turn, loop, reply)
        try:
            return await reply
        finally:
            expiry.cancel()

    async def eval_script(
        self, script: Script, keys: list[str], args: list[str], evalsha: bytes | None = None
    ) -> Any:
        """The script by its SHA (``evalsha``: that command, encoded), sent in full once
        when the server does not know it yet."""
        try:
            if evalsha is None:
                evalsha = encode_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return await self.send(evalsha)
        except RespError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self._tls
            )
            setup = []
            username, password = self._auth
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                setup.append(connection.send(encode_command(*auth)))
            if self.db:
                setup.append(connection.send(encode_command("SELECT", self.db)))
            try:
                for reply in setup:
                    await reply
            except BaseException:
                if connection.transport is not None:
                    connection.transport.abort()
                raise
            self._connection = connection
            return connection

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
