"""Database engine, the declarative base, and the one-transaction-per-request session.

SQLite (WAL) under ``NOVAZA_DATA_DIR`` by default; PostgreSQL through asyncpg when
``NOVAZA_DATABASE_URL`` names it. Services never commit: ``session_scope`` commits once on
success, rolls back on error, then runs the callbacks registered with ``after_commit``
(cache invalidation must not run before the data it announces is visible).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import DateTime, TypeDecorator

from novaza_gateway.config import DbConfig

log = logging.getLogger("novaza.db")

SQLITE_BUSY_MS = 5000  # tools without a statement limit wait this long for SQLite's lock
CLIENT_GRACE_SECONDS = 0.5  # past the server's statement_timeout, before the client gives up

AfterCommit = Callable[[], Coroutine[Any, Any, None]]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored and returned as aware UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def create_engine(url: str, config: DbConfig = DbConfig()) -> AsyncEngine:
    """An engine whose every wait is bounded: connect, statement, pool checkout.

    Parameters stay out of SQLAlchemy's messages and logs (``hide_parameters``) unless
    ``log_sql`` asks for them: a failing statement's message would carry patient data."""
    common: dict[str, Any] = {
        "hide_parameters": not config.log_sql,
        "pool_size": config.pool_size,
        "max_overflow": config.pool_size,
        "pool_timeout": config.pool_timeout_seconds,
    }
    if url.startswith("sqlite"):
        statement = config.statement_timeout_seconds
        engine = create_async_engine(url, **common)
        sync_engine: Engine = engine.sync_engine
        busy_ms = int(statement * 1000) if statement else SQLITE_BUSY_MS
        event.listen(sync_engine, "connect", _sqlite_pragmas(busy_ms))
        return engine
    engine = create_async_engine(
        url,
        **common,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=_asyncpg_args(config),
    )
    event.listen(engine.sync_engine.pool, "invalidate", _hang_up)
    return engine


def _hang_up(dbapi_connection: Any, _record: Any, _exc: BaseException | None) -> None:
    """Close an invalidated connection at once. SQLAlchemy's close would first say goodbye
    to the server and wait up to 2 s for it: on a connection invalidated because the server
    stopped answering, that is 2 s more for the request, to learn nothing."""
    driver = getattr(dbapi_connection, "_connection", None)
    if driver is not None and not driver.is_closed():
        driver.terminate()


def _asyncpg_args(config: DbConfig) -> dict[str, Any]:
    # Statements are prepared once per connection (asyncpg). After five runs PostgreSQL
    # may keep one generic plan for good, costed on the table as it was then: a lookup
    # first planned on a young table kept scanning it whole once it held 30,000 orders
    # (45 ms a lookup, intake down to 200 messages/s). A plan per run costs ~0.1 ms
    # and follows the tables' growth, whether or not autovacuum has analyzed them.
    server_settings = {"plan_cache_mode": "force_custom_plan"}
    args: dict[str, Any] = {"timeout": config.connect_timeout_seconds}
    statement = config.statement_timeout_seconds
    if statement:
        # The server cancels a slow statement and the connection stays usable; the client's
        # own limit, a little later, is for a server that no longer answers at all (a
        # partition): asyncpg then raises TimeoutError and the pool drops the connection.
        server_settings["statement_timeout"] = str(int(statement * 1000))
        args["command_timeout"] = statement + CLIENT_GRACE_SECONDS
    args["server_settings"] = server_settings
    return args


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def session_scope(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
        for callback in session.info.pop("after_commit", []):
            try:
                await callback()
            except Exception:
                log.exception("after-commit callback failed")

    async def dispose(self) -> None:
        await self.engine.dispose()


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    session.info.setdefault("after_commit", []).append(callback)
