"""HL7 message store queries; each takes the tenant id."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, false, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from novaza_gateway.clinical import unnest, writes
from novaza_gateway.hl7.models import DeliveryAttempt, InboundMessage, OutboundMessage

QUEUED, SENDING, DELIVERED, DEAD = "queued", "sending", "delivered", "dead"


INBOUND = cast(Table, InboundMessage.__table__)
# (tenant, MSH-3 sending application, MSH-4 sending facility, MSH-10 control id): unique
MessageKey = tuple[str, str, str, str]
_KEY = (
    INBOUND.c.tenant_id,
    INBOUND.c.sending_application,
    INBOUND.c.sending_facility,
    INBOUND.c.control_id,
)


_KEY_NAMES = ("tenants", "applications", "facilities", "controls")


@functools.cache
def _by_keys(pg: bool) -> Select[Any]:
    """Several keys on PostgreSQL: four arrays (``unnest.in_rows``); else an IN list."""
    if pg:
        keys = unnest.in_rows(_KEY, _KEY_NAMES)
    else:
        keys = tuple_(*_KEY).in_(bindparam("keys", expanding=True))
    return select(
        *_KEY,
        INBOUND.c.id,
        INBOUND.c.content_sha256,
        INBOUND.c.ack,
        INBOUND.c.ack_code,
        INBOUND.c.error_code,
        INBOUND.c.error_text,
    ).where(keys)


_TOUCH = update(INBOUND).where(false()).values(status=INBOUND.c.status)


@functools.cache
def _insert(dialect: str) -> ReturningInsert[str]:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(INBOUND)
        .on_conflict_do_nothing(index_elements=[c.name for c in _KEY])
        .returning(INBOUND.c.id)
    )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What answering a repeat needs: the content fingerprint and the exact ACK sent."""

    id: str
    content_sha256: str
    ack: bytes | None
    ack_code: str | None
    error_code: str | None
    error_text: str | None


async def inbound_by_keys(
    session: AsyncSession, keys: Sequence[MessageKey]
) -> dict[MessageKey, StoredMessage]:
    """The stored messages with these keys (each key names its tenant): one query."""
    if not keys:
        return {}
    ordered = sorted(set(keys))
    if len(ordered) > 1 and session.get_bind().dialect.name == "postgresql":
        params = {name: [key[n] for key in ordered] for n, name in enumerate(_KEY_NAMES)}
        rows = await session.execute(_by_keys(True), params)
    else:
        rows = await session.execute(_by_keys(False), {"keys": ordered})
    return {
        (r.tenant_id, r.sending_application, r.sending_facility, r.control_id): StoredMessage(
            r.id, r.content_sha256, r.ack, r.ack_code, r.error_code, r.error_text
        )
        for r in rows.all()
    }


async def begin_writing(session: AsyncSession) -> None:
    """On SQLite, take the database's write lock now, with a write that changes nothing: the
    reads that follow are then serialized with every other writer, as when a message row was
    inserted first. (pysqlite begins a transaction at the first write; reads before it would
    run outside any. PostgreSQL needs nothing.)"""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(_TOUCH)


async def insert_inbound(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    before: Sequence[tuple[Table, list[dict[str, Any]]]] = (),
) -> set[str]:
    """INSERT the rows, skipping any whose key is taken; answers the ids inserted. On
    PostgreSQL a key another transaction is inserting makes this wait for its outcome.
    ``before``: other tables' rows to insert first (a group's new clinical rows and audit
    records, ``clinical.writes``): on PostgreSQL all in one statement (``unnest``; a lone
    row goes in with a plain INSERT, cheaper for the server)."""
    connection = await session.connection()  # plain INSERTs, not the ORM's bulk path
    if connection.dialect.name == "postgresql" and (before or len(rows) > 1):
        tables = [*before, (INBOUND, list(rows))]
        statement, params = unnest.insert_all(tables, "id", [c.name for c in _KEY])
        return set((await connection.execute(statement, params)).scalars())
    await writes.insert(connection, list(before))
    if not rows:
        return set()
    result = await connection.execute(_insert(connection.dialect.name), list(rows))
    return set(result.scalars())


@dataclass(frozen=True, slots=True)
class Processed:
    """A stored message's outcome and the exact ACK answered."""

    tenant_id: str
    message_id: str
    status: str
    ack_code: str
    ack: bytes
    error_code: str | None
    error_text: str | None
    patient_id: str | None
    processed_at: datetime

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _OUTCOME_COLUMNS}

    def stored(self, fingerprint: str) -> StoredMessage:
        return StoredMessage(
            self.message_id, fingerprint, self.ack, self.ack_code, self.error_code, self.error_text
        )

    @staticmethod
    def received() -> dict[str, Any]:
        """The outcome columns of a row stored before it is processed."""
        return {name: None for name in _OUTCOME_COLUMNS} | {"status": "received"}


_OUTCOME_COLUMNS = (
    "status", "ack_code", "ack", "error_code", "error_text", "patient_id", "processed_at"
)  # fmt: skip
# bound names differ from the column names (SQLAlchemy reserves those for SET)
_OUTCOMES = (
    update(INBOUND)
    .where(INBOUND.c.tenant_id == bindparam("b_tenant"), INBOUND.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _OUTCOME_COLUMNS})
)


async def record_outcomes(session: AsyncSession, outcomes: Sequence[Processed]) -> None:
    """One UPDATE executed for many rows."""
    if not outcomes:
        return
    params = [
        {
            "b_tenant": o.tenant_id,
            "b_id": o.message_id,
            **{f"b_{n}": getattr(o, n) for n in _OUTCOME_COLUMNS},
        }
        for o in outcomes
    ]
    await session.execute(_OUTCOMES, params)


async def inbound(session: AsyncSession, tenant_id: str, message_id: str) -> InboundMessage | None:
    query = (
        select(InboundMessage)
        .where(InboundMessage.tenant_id == tenant_id, InboundMessage.id == message_id)
        .execution_options(populate_existing=True)  # as stored now (after ``claim_failed``)
    )
    return (await session.execute(query)).scalar_one_or_none()


FAILED, PROCESSING, PROCESSED = "failed", "processing", "processed"


async def claim_failed(
    session: AsyncSession, tenant_id: str, message_id: str, now: datetime
) -> bool:
    """Take a failed inbound message for reprocessing: ``failed`` -> ``processing``, counted.
    False when it is not (or no longer) failed. The UPDATE holds the row until the commit:
    a concurrent claim waits for it and then finds the outcome written (ADR 0017)."""
    result = await session.execute(
        update(InboundMessage)
        .where(
            InboundMessage.tenant_id == tenant_id,
            InboundMessage.id == message_id,
            InboundMessage.status == FAILED,
        )
        .values(
            status=PROCESSING,
            reprocess_count=InboundMessage.reprocess_count + 1,
            reprocessed_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def outbound(
    session: AsyncSession, tenant_id: str, message_id: str
) -> OutboundMessage | None:
    query = select(OutboundMessage).where(
        OutboundMessage.tenant_id == tenant_id, OutboundMessage.id == message_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def attempts(
    session: AsyncSession, tenant_id: str, message_id: str
) -> Sequence[DeliveryAttempt]:
    query = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.tenant_id == tenant_id, DeliveryAttempt.message_id == message_id)
        .order_by(DeliveryAttempt.at, DeliveryAttempt.id)
    )
    return (await session.execute(query)).scalars().all()


async def backlog(session: AsyncSession) -> dict[str, int]:
    """Outbox message counts by status over all tenants: an operator's gauge, no ids."""
    query = select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
    return {status: int(n) for status, n in (await session.execute(query)).all()}
