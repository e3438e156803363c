"""Database faults answer 503 UPSTREAM_UNAVAILABLE, within the configured timeouts.

PostgreSQL is reached through a TCP forwarder the test controls: it cuts connections in the
middle of a statement (the statement is held on a table lock taken from another session,
and the cut waits until PostgreSQL shows it waiting), or stops forwarding while keeping the
sockets open (a partition). ``pg_terminate_backend`` and a full pool are real too, and on
SQLite a writer holding the lock past the busy timeout. Each fault is tried on a read, a
write and a tenant-admin route; the request after the fault is answered normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from novaza_gateway.core import dberrors
from novaza_gateway.core.deps import SessionDep
from novaza_gateway.core.policy import policy
from tests.conftest import Gateway, gateway_settings, start_gateway

# ---------------------------------------------------------------------------- the forwarder


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; can cut, freeze and thaw its connections."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.flowing.wait()  # a partition: new connections hang too
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for each in (writer, up_writer):
            each.transport.abort()
            self.writers.discard(each)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        """Both ends see the connection reset; the forwarder keeps accepting new ones."""
        for writer in list(self.writers):
            writer.transport.abort()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def close(self) -> None:
        self.thaw()
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


# ---------------------------------------------------------------------------- the gateway


@dataclass
class Faulty:
    gw: Gateway
    proxy: TcpProxy | None
    direct_dsn: str  # PostgreSQL without the forwarder; "" on SQLite
    db_name: str

    async def call(self, route: str, timeout: float = 20.0) -> httpx.Response:
        """One request of the kind ``route`` names, the client giving up after ``timeout``."""
        gw = self.gw
        if route == "read":
            return await gw.client.get(
                "/med/desk/contacts", headers=gw.auth("clinic", "desk:read"), timeout=timeout
            )
        if route == "write":
            body = {
                "contacts": [{"externalId": f"c-{time.monotonic_ns()}", "name": {"given": "A"}}]
            }
            return await gw.client.post(
                "/med/desk/contacts/sync",
                json=body,
                headers=gw.auth("clinic", "desk:write"),
                timeout=timeout,
            )
        assert route == "admin"
        return await gw.client.put(
            "/admin/tenants/clinic",
            json={"name": f"Clinic {time.monotonic_ns()}"},
            headers=gw.admin(),
            timeout=timeout,
        )


ROUTES = ["read", "write", "admin"]
# The table each route's first statement reads, and the lock mode it waits for there
# (the tenant update reads its row FOR UPDATE).
LOCKED_TABLES = {
    "read": ("desk_contacts", "AccessShareLock"),
    "write": ("desk_contacts", "AccessShareLock"),
    "admin": ("tenants", "RowShareLock"),
}


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


@contextlib.asynccontextmanager
async def faulty_gateway(tmp_path: Path, db_url: str, **overrides: Any) -> AsyncIterator[Faulty]:
    proxy = None
    url = db_url
    if db_url.startswith("postgres"):
        parts = urlsplit(db_url)
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        url = _via(db_url, await proxy.start())
    settings = gateway_settings(tmp_path / "data", url, tenant_cache_ttl_seconds=3600, **overrides)
    try:
        async for gw in start_gateway(settings):
            limits = {"rateLimit": {"ratePerSecond": 1000, "burst": 1000}}
            await gw.create_tenant("clinic", **limits)
            faulty = Faulty(
                gw,
                proxy,
                db_url if proxy else "",
                urlsplit(db_url).path.lstrip("/"),
            )
            for route in ROUTES:  # warm: tenant cached, pool connected
                assert (await faulty.call(route)).status_code == 200
            yield faulty
    finally:
        if proxy is not None:
            await proxy.close()


def assert_unavailable(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "UPSTREAM_UNAVAILABLE"
    assert body["details"] == {"reason": reason}
    assert int(response.headers["retry-after"]) >= 1
    assert "Traceback" not in response.text


def assert_no_trace(caplog: pytest.LogCaptureFixture) -> None:
    traced = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert not traced, [(r.name, r.getMessage()) for r in traced]
    failed = [r for r in caplog.records if r.getMessage() == "dependency failed"]
    assert failed, "the fault left no log line"


# ---------------------------------------------------------------------------- PostgreSQL


@contextlib.asynccontextmanager
async def table_locked(faulty: Faulty, table: str) -> AsyncIterator[asyncpg.Connection]:
    """Holds ``table`` locked from a direct session; yields another direct session to watch
    and act from (within the locking transaction, pg_stat_activity would stay a snapshot)."""
    conn = await asyncpg.connect(faulty.direct_dsn, timeout=5)
    watch = await asyncpg.connect(faulty.direct_dsn, timeout=5)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield watch
        await transaction.rollback()
    finally:
        await watch.close()
        await conn.close()


async def blocked_backends(
    conn: asyncpg.Connection, db_name: str, table: str, mode: str
) -> list[int]:
    """The gateway's backends waiting for ``mode`` on ``table``, once PostgreSQL shows one.
    (A background transaction may wait on the lock too, at its commit: a foreign-key check
    waits for another mode.)"""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = await conn.fetch(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND l.relation = to_regclass($2) "
            "AND l.mode = $3 AND a.datname = $1",
            db_name,
            table,
            mode,
        )
        if pids:
            return [int(row["pid"]) for row in pids]
        await asyncio.sleep(0.02)  # polling PostgreSQL's view, not waiting for an outcome
    raise AssertionError("the request never reached the locked table")


async def fault_mid_statement(
    faulty: Faulty, route: str, fault: Callable[[asyncpg.Connection, list[int]], Awaitable[None]]
) -> httpx.Response:
    table, mode = LOCKED_TABLES[route]
    async with table_locked(faulty, table) as conn:
        request = asyncio.create_task(faulty.call(route))
        pids = await blocked_backends(conn, faulty.db_name, table, mode)
        await fault(conn, pids)
        return await request


@pytest.mark.parametrize("route", ROUTES)
async def test_connection_cut_mid_statement_is_503_and_the_next_request_works(
    tmp_path: Path, pg_url: str, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with faulty_gateway(tmp_path, pg_url, db_statement_timeout_seconds=30) as faulty:
        assert faulty.proxy is not None
        proxy = faulty.proxy

        async def cut(_: asyncpg.Connection, __: list[int]) -> None:
            proxy.cut()

        with caplog.at_level(logging.INFO):
            response = await fault_mid_statement(faulty, route, cut)
        assert_unavailable(response, "connection_lost")
        assert_no_trace(caplog)
        assert (await faulty.call(route)).status_code == 200


@pytest.mark.parametrize("route", ROUTES)
async def test_terminated_backend_is_503_and_the_next_request_works(
    tmp_path: Path, pg_url: str, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On the read route the driver reports the termination at once (connection_lost). On
    the write and admin routes, through the forwarder, the gateway was not told the
    connection ended and the request answered when its statement limit passed (timeout):
    still 503, still bounded, and the next request is served."""
    async with faulty_gateway(tmp_path, pg_url, db_statement_timeout_seconds=3) as faulty:

        async def terminate(conn: asyncpg.Connection, pids: list[int]) -> None:
            for pid in pids:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)

        with caplog.at_level(logging.INFO):
            response = await fault_mid_statement(faulty, route, terminate)
        assert_unavailable(
            response, "connection_lost" if route == "read" else response.json()["details"]["reason"]
        )
        assert response.json()["details"]["reason"] in ("connection_lost", "timeout")
        assert_no_trace(caplog)
        assert (await faulty.call(route)).status_code == 200


async def test_terminated_idle_connections_are_replaced_unseen(tmp_path: Path, pg_url: str) -> None:
    """Between requests the pool's pre-ping finds the dead connections: no request fails."""
    async with faulty_gateway(tmp_path, pg_url) as faulty:
        conn = await asyncpg.connect(faulty.direct_dsn, timeout=5)
        try:
            ended = await conn.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()) t",
                faulty.db_name,
            )
        finally:
            await conn.close()
        assert ended >= 1
        for route in ROUTES:
            assert (await faulty.call(route)).status_code == 200


async def test_statement_timeout_is_503(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement held past NOVAZA_DB_STATEMENT_TIMEOUT_SECONDS: PostgreSQL cancels it."""
    async with faulty_gateway(tmp_path, pg_url, db_statement_timeout_seconds=1) as faulty:
        with caplog.at_level(logging.INFO):
            async with table_locked(faulty, "desk_contacts"):
                response = await faulty.call("write")
        assert_unavailable(response, "timeout")
        assert_no_trace(caplog)
        assert any(getattr(r, "sqlstate", None) == "57014" for r in caplog.records)
        assert (await faulty.call("write")).status_code == 200


@pytest.mark.parametrize("route", ROUTES)
async def test_partition_is_503_before_it_ends_and_the_next_request_works(
    tmp_path: Path, pg_url: str, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stops answering, sockets open. Without the client-side limit the request
    would wait for the partition's end, which here never comes: the client gives up first
    and the test fails on its timeout."""
    async with faulty_gateway(
        tmp_path, pg_url, db_statement_timeout_seconds=1, db_connect_timeout_seconds=1
    ) as faulty:
        assert faulty.proxy is not None
        faulty.proxy.freeze()
        begin = time.monotonic()
        with caplog.at_level(logging.INFO):
            response = await faulty.call(route, timeout=20)
        print(
            f"partition: {route} answered {response.status_code} in "
            f"{time.monotonic() - begin:.2f} s"
        )
        assert_unavailable(response, "timeout")
        assert_no_trace(caplog)
        ready = await faulty.gw.client.get("/health/ready", timeout=20)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "fail"
        faulty.proxy.thaw()
        assert (await faulty.call(route)).status_code == 200
        assert (await faulty.gw.client.get("/health/ready")).json()["checks"]["database"][
            "status"
        ] == "ok"


# ---------------------------------------------------------------------------- both stores


@pytest.mark.parametrize("route", ROUTES)
async def test_pool_exhausted_is_503_after_the_pool_timeout(
    tmp_path: Path, db_url: str, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with faulty_gateway(
        tmp_path, db_url, db_pool_size=1, db_pool_timeout_seconds=0.5
    ) as faulty:
        engine = faulty.gw.app.state.db.engine
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2):  # pool_size plus as many overflow
                await held.enter_async_context(engine.connect())
            with caplog.at_level(logging.INFO):
                response = await faulty.call(route)
        assert_unavailable(response, "pool_exhausted")
        assert_no_trace(caplog)
        assert (await faulty.call(route)).status_code == 200


@pytest.mark.parametrize("route", ["write", "admin"])
async def test_sqlite_writer_lock_past_the_busy_timeout_is_503(
    tmp_path: Path, sqlite_url: str, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with faulty_gateway(tmp_path, sqlite_url, db_statement_timeout_seconds=0.3) as faulty:
        holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            with caplog.at_level(logging.INFO):
                response = await faulty.call(route)
            assert (await faulty.call("read")).status_code == 200  # WAL: readers go on
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert_unavailable(response, "timeout")
        assert_no_trace(caplog)
        assert (await faulty.call(route)).status_code == 200


# ---------------------------------------------------------------------------- refused values


@pytest.mark.parametrize(
    ("cast", "reason"),
    [("smallint", "invalid_value"), ("varchar(3)", "too_long"), ("timestamptz", "invalid_value")],
)
async def test_a_value_postgresql_refuses_is_422_without_the_value(
    tmp_path: Path, pg_url: str, cast: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Edge validation refuses most such values first (NUL is 400 INVALID_CHARACTERS); this
    is the backstop. PostgreSQL's own message embeds the value ('invalid input syntax for
    type smallint: "..."'): neither the answer nor the log may carry it."""
    settings = gateway_settings(tmp_path / "data", pg_url)
    async for gw in start_gateway(settings, extra_routers=(probe,)):
        await gw.create_tenant("clinic")
        marker = f"PHI{uuid.uuid4().hex}"
        with caplog.at_level(logging.DEBUG):
            response = await gw.client.post(
                "/test/store", json={"value": marker, "cast": cast}, headers=gw.auth("clinic")
            )
        assert response.status_code == 422, response.text
        assert response.json() == {
            "code": "INVALID_INPUT",
            "message": response.json()["message"],
            "details": {"reason": reason},
        }
        assert marker not in response.text
        [line] = [r for r in caplog.records if r.getMessage() == "database refused a value"]
        assert getattr(line, "sqlstate", "").startswith("22")
        assert not line.exc_info
        assert marker not in caplog.text


probe = APIRouter(prefix="/test")


class Stored(BaseModel):
    value: str
    cast: str


@probe.post("/store", **policy())
async def store(body: Stored, session: SessionDep) -> None:
    """A value into a typed column, as a service would: PostgreSQL checks it."""
    assert body.cast in ("smallint", "varchar(3)", "timestamptz")
    if body.cast == "varchar(3)":  # an explicit cast truncates; a column refuses
        await session.execute(text("CREATE TEMP TABLE IF NOT EXISTS short_col (v varchar(3))"))
        await session.execute(text("INSERT INTO short_col VALUES (:v)"), {"v": body.value})
        return
    await session.execute(text(f"SELECT CAST(CAST(:v AS text) AS {body.cast})"), {"v": body.value})


def test_statement_shape_keeps_placeholders_and_drops_literals() -> None:
    sql = "SELECT a FROM t\n  WHERE b = $1 AND c = 'Doe^Jane' AND d = 42 AND e IN (?, :p)"
    assert (
        dberrors.statement_shape(sql)
        == "SELECT a FROM t WHERE b = $1 AND c = ? AND d = ? AND e IN (?, :p)"
    )
    assert dberrors.statement_shape("x" * 1000) is not None
    assert len(dberrors.statement_shape("x" * 1000) or "") == dberrors.MAX_SHAPE
