"""Replicas starting together: three ``novaza migrate`` processes at the same moment on a
fresh database all succeed and leave the schema at head once (PostgreSQL: an advisory lock;
SQLite: a file lock), and three ``novaza serve`` processes starting at once on one
PostgreSQL all come up, with the catalogue registered once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from novaza_gateway.migrate import alembic_config
from tests import procs
from tests.conftest import PG_ADMIN_DSN, need

HEADS = sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url, timeout=3)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """An empty PostgreSQL database of its own (the session's is migrated already)."""
    name = f"novaza_migrate_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError):
        need(False, f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_three_migrations_at_once_on_a_fresh_postgres(tmp_path: Path, fresh_pg: str) -> None:
    commands = [(procs.novaza_env(tmp_path / f"m{n}", fresh_pg), ("migrate",)) for n in range(3)]
    results = procs.run_cli_parallel(*commands, timeout=180)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "already exists" not in result.stderr
    versions = asyncio.run(_rows(fresh_pg, "SELECT version_num FROM alembic_version"))
    assert sorted(str(v) for (v,) in versions) == HEADS
    # the lock is released: nobody holds it once they are done
    held = asyncio.run(_rows(fresh_pg, "SELECT count(*) FROM pg_locks WHERE locktype='advisory'"))
    assert held == [(0,)]


def test_three_migrations_at_once_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    env = procs.novaza_env(tmp_path / "data")  # one data dir: one database file
    results = procs.run_cli_parallel(*[(env, ("migrate",)) for _ in range(3)], timeout=180)
    for result in results:
        assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(tmp_path / "data" / "novaza.db")
    try:
        versions = sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
    finally:
        conn.close()
    assert versions == HEADS


def test_three_gateways_starting_at_once_on_one_postgres(tmp_path: Path, fresh_pg: str) -> None:
    procs.run_cli(procs.novaza_env(tmp_path / "m", fresh_pg), "migrate")
    envs = [procs.novaza_env(tmp_path / f"r{n}", fresh_pg) for n in range(3)]
    servers = [procs.start(env, wait_ready=False) for env in envs]
    try:
        for server in servers:
            procs.wait_healthy(server, timeout=90)
        for server in servers:
            assert server.stop() == 0, server.stderr()
            errors = [ln for ln in server.log_lines() if ln.get("level") in ("error", "critical")]
            assert errors == [], errors
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.kill_group()
    catalogs = asyncio.run(_rows(fresh_pg, "SELECT count(*) FROM billing_catalog_versions"))
    assert catalogs == [(1,)]
