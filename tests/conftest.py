"""Shared fixtures: real PostgreSQL and Redis, a gateway app per test, tokens, tenants.

Storage-touching tests take the ``db_url`` fixture, parametrized over SQLite and PostgreSQL.
With ``NOVAZA_TEST_REQUIRE_SERVICES=1`` (CI) a missing service or tool fails the test
instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from novaza_gateway.app import create_app
from novaza_gateway.config import Settings
from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import TENANT_SCOPES
from novaza_gateway.migrate import upgrade

REQUIRE_SERVICES = os.environ.get("NOVAZA_TEST_REQUIRE_SERVICES") == "1"
PG_ADMIN_DSN = os.environ.get("NOVAZA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NOVAZA_TEST_REDIS", "redis://127.0.0.1:6379/0")
ALL_TENANT_SCOPES = " ".join(TENANT_SCOPES)


def need(condition: bool, reason: str) -> None:
    """Skip when a service or tool is missing; fail instead when CI requires services."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"required by NOVAZA_TEST_REQUIRE_SERVICES=1: {reason}")
    pytest.skip(reason)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed (make test installs it when run as root)")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- services


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for the session, migrated once; None if unreachable."""
    name = f"novaza_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError):
        yield None
        return
    url = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    upgrade(Settings(database_url=url, data_dir=Path("/tmp")))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it instead of migrating again."""
    data_dir = tmp_path_factory.mktemp("sqlite-template")
    upgrade(Settings(data_dir=data_dir))
    return data_dir / "novaza.db"


async def _truncate_pg(url: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables "
            "WHERE schemaname='public' AND tablename<>'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path, pg_database: str | None
) -> str:
    if request.param == "sqlite":
        target = tmp_path / "data" / "novaza.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"
    need(pg_database is not None, f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    assert pg_database is not None
    asyncio.run(_truncate_pg(pg_database))
    return pg_database


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    """For tests of PostgreSQL's own behaviour (row locks, races): no SQLite variant."""
    need(pg_database is not None, f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    assert pg_database is not None
    asyncio.run(_truncate_pg(pg_database))
    return pg_database


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """For tests where the storage backend is beside the point."""
    target = tmp_path / "data" / "novaza.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        need(False, f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL


# ----------------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    """One app under test with its ASGI client, dev signing key and helpers."""

    settings: Settings
    app: Any
    client: httpx.AsyncClient
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def token(
        self,
        tenant: str | None = None,
        scopes: str = ALL_TENANT_SCOPES,
        sub: str = "user-1",
        ttl: int = 3600,
    ) -> str:
        return devkeys.mint_token(
            self.data_dir,
            subject=sub,
            scopes=scopes.split(),
            tenant=tenant,
            ttl_seconds=ttl,
            tenant_claim=self.settings.tenant_claim,
            audience=self.settings.jwt_audience,
        )

    def auth(self, tenant: str | None = None, scopes: str = ALL_TENANT_SCOPES) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, scopes)}"}

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(None, 'platform:admin', sub='admin-1')}"}

    async def create_tenant(self, slug: str, **fields: Any) -> dict[str, Any]:
        body = {"slug": slug, "name": slug.title(), "status": "active", **fields}
        response = await self.client.post("/admin/tenants/", json=body, headers=self.admin())
        assert response.status_code == 201, response.text
        self.tenants[slug] = response.json()
        return response.json()


def gateway_settings(data_dir: Path, db: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "database_url": db,
        "log_json": False,
        "public_url": "http://gateway",  # links as the in-process client reaches the app
        # token corpora refuse hundreds of tokens from one client address on purpose;
        # tests/core/test_http_edge.py sets the budget it tests
        "auth_failures_per_minute": 100_000,
        **overrides,
    }
    return Settings(**values)


async def start_gateway(settings: Settings, **kwargs: Any) -> AsyncIterator[Gateway]:
    app = create_app(settings, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(settings, app, client)


@pytest.fixture
async def gateway(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    """A gateway on each storage backend."""
    async for gw in start_gateway(gateway_settings(tmp_path / "data", db_url)):
        yield gw


@pytest.fixture
async def gw(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Gateway]:
    """A gateway on SQLite only, for behaviour that does not depend on the store."""
    async for g in start_gateway(gateway_settings(tmp_path / "data", sqlite_url)):
        yield g
