"""``Idempotency-Key`` (Stripe semantics) for any operation that writes: ADR 0061.

A key is scoped by (tenant, operation, key). The first request with a key claims it by
inserting its row, in the operation's own transaction, before the operation runs; the
operation's answer (status, body bytes, content type) is written to that row in the same
transaction. So a crash never leaves the operation's writes without their key, nor a key
without the writes, and the unique constraint on (tenant, operation, key) is the arbiter:

- the same key and body again: the stored answer, byte for byte, with
  ``Idempotent-Replayed: true``; nothing runs again;
- the same key, another body: 422 ``IDEMPOTENCY_KEY_REUSED``;
- the same key while the first request is still in its transaction: the second waits on the
  unique index until the first commits (then it replays) or rolls back (then it runs), at
  most ``wait_seconds`` on PostgreSQL, after which it is 409 ``IDEMPOTENCY_KEY_IN_USE``;
- answers of 5xx, 409 and 429 ("try again") are not stored: a retry runs again.

Keys expire after a TTL: an expired row is deleted when its key comes back, and a periodic
pass deletes expired rows in batches (by the ``expires_at`` index), on one replica at a
time. The key itself is kept only as its SHA-256 (a caller may put anything in it) and is
never logged, nor is a body. Requests without the header never reach this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Header
from pydantic import BaseModel
from sqlalchemy import (
    Index,
    Integer,
    LargeBinary,
    Row,
    String,
    Table,
    UniqueConstraint,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from starlette.responses import Response

from novaza_gateway.core.db import Base, Database, UtcDateTime, utcnow
from novaza_gateway.core.errors import ApiError, Conflict, render
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.leases import Leases, lease_seconds, leased
from novaza_gateway.core.outboxloop import run_passes

log = logging.getLogger("novaza.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# 1-255 printable ASCII characters; anything else is 422 VALIDATION_FAILED (FastAPI's).
KeyHeader = Annotated[
    str | None,
    Header(alias=HEADER, min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$"),
]
NOT_STORED = frozenset({409, 429})  # "try again" answers, like every 5xx
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout elapsed
PURGE_BATCH = 1000
PURGE_LEASE = "idempotency-purge"


class IdempotencyKey(Base):
    """One claimed key. ``status_code`` is null only inside the claiming transaction."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "operation", "key_hash", name="uq_idempotency_keys_scope"),
        Index("ix_idempotency_keys_expires", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    operation: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the key, hex
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request body, hex
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


KEYS = cast(Table, IdempotencyKey.__table__)


class IdempotencyKeyReused(ApiError):
    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was used with a different request body."


class IdempotencyKeyInUse(Conflict):
    code = "IDEMPOTENCY_KEY_IN_USE"
    default_message = "A request with this Idempotency-Key is still in progress; retry shortly."


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """What a router hands on when the caller sent the header: the key and the raw body."""

    key: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """An operation's answer, as stored and replayed."""

    status_code: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, model: BaseModel, status_code: int = 200) -> Outcome:
        """A response model as FastAPI would send it (by alias)."""
        return cls(status_code, model.__pydantic_serializer__.to_json(model, by_alias=True))

    @classmethod
    def error(cls, error: ApiError) -> Outcome:
        rendered = render(error)
        return cls(error.status, bytes(rendered.body), "application/json")

    def response(self, *, replayed: bool = False) -> Response:
        headers = {REPLAYED_HEADER: "true"} if replayed else None
        return Response(
            self.body, status_code=self.status_code, media_type=self.content_type, headers=headers
        )

    @property
    def stored(self) -> bool:
        return self.status_code < 500 and self.status_code not in NOT_STORED


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


Operation = Callable[[], Awaitable[Outcome]]


class IdempotencyKeys:
    """The facility: built once (TTL from settings) and shared by the operations using it."""

    def __init__(
        self, ttl_seconds: float, *, wait_seconds: float = 5.0, purge_seconds: float = 300.0
    ) -> None:
        self.ttl = timedelta(seconds=ttl_seconds)
        self.wait_seconds = wait_seconds
        self.purge_seconds = purge_seconds

    async def run(
        self,
        session: AsyncSession,
        tenant_id: str,
        operation: str,
        request: KeyedRequest,
        execute: Operation,
    ) -> Response:
        """``execute`` once per (tenant, operation, key); its answer, or the stored one."""
        scope = (tenant_id, operation, sha256(request.key.encode()))
        fingerprint = sha256(request.body)
        claim, stored = await self._claim(session, scope, fingerprint)
        if stored is not None:
            return stored.response(replayed=True)
        outcome = await self._execute(session, execute)
        if outcome.stored:
            values = {"status_code": outcome.status_code, "body": outcome.body,
                      "content_type": outcome.content_type}  # fmt: skip
            await session.execute(update(KEYS).where(KEYS.c.id == claim).values(values))
        else:  # the operation answered "failed, try again" without raising
            await session.execute(delete(KEYS).where(KEYS.c.id == claim))
        return outcome.response()

    @staticmethod
    async def _execute(session: AsyncSession, execute: Operation) -> Outcome:
        """Run the operation in a savepoint: an error answer worth storing is stored without
        the operation's partial writes; any other error rolls everything back (no key)."""
        savepoint = await session.begin_nested()
        try:
            outcome = await execute()
        except ApiError as error:
            answer = Outcome.error(error)
            if not answer.stored:
                raise
            await savepoint.rollback()
            return answer
        await savepoint.commit()
        return outcome

    async def _claim(
        self, session: AsyncSession, scope: tuple[str, str, str], fingerprint: str
    ) -> tuple[str, Outcome | None]:
        """Claim the key (answers its row id), or answer what it stored. Raises
        ``IdempotencyKeyReused`` for another body, ``IdempotencyKeyInUse`` past the wait."""
        tenant_id, operation, key_hash = scope
        for _ in range(3):  # an expired row is deleted, then the key is claimed afresh
            now = utcnow()
            claim = new_id()
            row = {"id": claim, "tenant_id": tenant_id, "operation": operation,
                   "key_hash": key_hash, "fingerprint": fingerprint, "status_code": None,
                   "content_type": None, "body": None, "created_at": now,
                   "expires_at": now + self.ttl}  # fmt: skip
            if await self._insert(session, row):
                return claim, None
            found = await _stored(session, scope)
            if found is None:  # purged meanwhile
                continue
            if found.expires_at <= now:
                await session.execute(
                    delete(KEYS).where(KEYS.c.id == found.id, KEYS.c.expires_at <= now)
                )
                continue
            if found.fingerprint != fingerprint:
                raise IdempotencyKeyReused()
            if found.status_code is None:  # claimed earlier in this same transaction
                raise IdempotencyKeyInUse()
            return found.id, Outcome(found.status_code, found.body, found.content_type)
        raise IdempotencyKeyInUse()

    async def _insert(self, session: AsyncSession, row: dict[str, Any]) -> bool:
        """INSERT ... ON CONFLICT DO NOTHING: True when this transaction now holds the key.
        A key held by an uncommitted transaction makes the insert wait for its outcome."""
        connection = await session.connection()
        if connection.dialect.name != "postgresql":  # SQLite: one writer at a time anyway
            lite = sqlite.insert(KEYS).values(row).on_conflict_do_nothing()
            return (await session.execute(lite.returning(KEYS.c.id))).first() is not None
        statement = (
            postgresql.insert(KEYS)
            .values(row)
            .on_conflict_do_nothing(constraint="uq_idempotency_keys_scope")
            .returning(KEYS.c.id)
        )
        wait = f"{max(1, int(self.wait_seconds * 1000))}ms"
        previous = await session.scalar(
            text("SELECT current_setting('lock_timeout'), set_config('lock_timeout', :t, true)"),
            {"t": wait},
        )
        try:
            inserted = (await session.execute(statement)).first() is not None
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise IdempotencyKeyInUse() from None
            raise
        await session.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": previous})
        return inserted

    async def purge_expired(self, db: Database, batch: int = PURGE_BATCH) -> int:
        """Delete up to ``batch`` expired keys (by the ``expires_at`` index); answers how many."""
        now = utcnow()
        expired = select(KEYS.c.id).where(KEYS.c.expires_at <= now).limit(batch)
        async with db.session_scope() as session:
            result = await session.execute(delete(KEYS).where(KEYS.c.id.in_(expired)))
            return int(cast(Any, result).rowcount)

    async def run_purge(self, db: Database, leases: Leases) -> None:
        """The periodic pass: drain expired keys in batches, then sleep ``purge_seconds``; on
        one replica at a time (the ``idempotency-purge`` lease: replicas purging the same
        rows at once only wait on each other's row locks, or deadlock)."""
        seconds = lease_seconds(self.purge_seconds)
        job = leased(leases, PURGE_LEASE, seconds, lambda: self.purge_expired(db))
        try:
            await run_passes(job, asyncio.Event(), self.purge_seconds, log)
        finally:
            await leases.release_quietly(PURGE_LEASE)


async def _stored(session: AsyncSession, scope: tuple[str, str, str]) -> Row[Any] | None:
    tenant_id, operation, key_hash = scope
    query = select(KEYS).where(
        KEYS.c.tenant_id == tenant_id, KEYS.c.operation == operation, KEYS.c.key_hash == key_hash
    )
    return (await session.execute(query)).first()
