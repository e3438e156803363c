"""``novaza migrate``: Alembic upgrade to head with the migrations shipped in the package.

Safe when several run at once (a Kubernetes Job beside replicas that migrate at start, two
deploys, ``make run`` twice; ADR 0063): on PostgreSQL the upgrade holds a session-level
advisory lock on the very connection Alembic migrates over, taken before Alembic reads
``alembic_version``; on SQLite an exclusive ``flock`` on a file beside the database. The
second migrator waits, then finds the schema at head and runs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from novaza_gateway.config import Settings
from novaza_gateway.core import datadir

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_lock's key: a fixed 64-bit number that names "novaza migrate" in any database
# (the lock is per database: migrators of other databases on the server never wait).
ADVISORY_LOCK_KEY = 0x6E6F76617A61  # "novaza"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "heads") -> None:
    datadir.prepare(settings.data_dir, settings.sqlalchemy_url)  # 0700, SQLite file 0600
    config = alembic_config(settings.sqlalchemy_url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with _sqlite_lock(settings.sqlalchemy_url):
            command.upgrade(config, revision)
        return
    raise RuntimeError("upgrade() runs its own event loop; call it from synchronous code")


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """SQLite: one migrator per database file (``flock`` on ``<file>.migrate-lock``)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        yield
        return
    path = Path(parsed.database).with_name(Path(parsed.database).name + ".migrate-lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # owner-only, as the database beside it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def migration_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """PostgreSQL: hold the migration advisory lock on ``conn`` (session level, so it spans
    the migration's transaction) until the block ends; it also ends with the connection."""
    if conn.dialect.name != "postgresql":
        yield
        return
    await conn.execute(
        text("SELECT pg_advisory_lock(CAST(:key AS bigint))"), {"key": ADVISORY_LOCK_KEY}
    )
    await conn.commit()
    try:
        yield
    finally:
        await conn.execute(
            text("SELECT pg_advisory_unlock(CAST(:key AS bigint))"), {"key": ADVISORY_LOCK_KEY}
        )
        await conn.commit()
