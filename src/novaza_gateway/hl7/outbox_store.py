"""The ORU outbox's claims: which replica sends which message, and until when (ADR 0062).

A claim is ``queued`` -> ``sending`` with this pass's claim token and a lease. On PostgreSQL
the due rows are read ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once take disjoint
rows instead of queueing on each other's locks; the UPDATE re-checks ``status = 'queued'``
(PostgreSQL re-evaluates it against a competing claim's commit; SQLite has one writer), so
a row goes to one token. Every later write of the sender (a renewed lease, the outcome) is
guarded by its token: a sender whose lease lapsed and whose message another replica took
writes nothing over the new owner's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from novaza_gateway.hl7.models import OutboundMessage
from novaza_gateway.hl7.repository import QUEUED, SENDING

OUTBOUND = cast(Table, OutboundMessage.__table__)


async def due_tenants(session: AsyncSession, now: datetime) -> list[str]:
    """The outbox worker's one cross-tenant query: which tenants have work (ids only)."""
    due = (OutboundMessage.status == QUEUED) & (OutboundMessage.next_attempt_at <= now)
    stale = (OutboundMessage.status == SENDING) & (OutboundMessage.lease_until < now)
    query = select(OutboundMessage.tenant_id).where(due | stale).distinct()
    return list((await session.execute(query)).scalars())


async def release_stale(session: AsyncSession, tenant_id: str, now: datetime) -> None:
    """Messages whose sender died mid-delivery go back to the queue (at-least-once); their
    old claim goes, so that sender's late outcome is written nowhere."""
    await session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.tenant_id == tenant_id,
            OutboundMessage.status == SENDING,
            OutboundMessage.lease_until < now,
        )
        .values(status=QUEUED, lease_until=None, claim=None)
    )


def _due(tenant_id: str, now: datetime, limit: int, skip_locked: bool) -> Any:
    """Due messages that head their patient's queue: FIFO per patient, dead ones skipped."""
    earlier = aliased(OutboundMessage)
    ahead = (
        select(earlier.id)
        .where(
            earlier.tenant_id == OutboundMessage.tenant_id,
            earlier.patient_key == OutboundMessage.patient_key,
            earlier.status.in_((QUEUED, SENDING)),
            (earlier.created_at < OutboundMessage.created_at)
            | (
                (earlier.created_at == OutboundMessage.created_at)
                & (earlier.id < OutboundMessage.id)
            ),
        )
        .exists()
    )
    query = (
        select(OutboundMessage.id)
        .where(
            OutboundMessage.tenant_id == tenant_id,
            OutboundMessage.status == QUEUED,
            OutboundMessage.next_attempt_at <= now,
            ~ahead,
        )
        .order_by(OutboundMessage.created_at, OutboundMessage.id)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True, of=OutboundMessage)
    return query


async def claim_due(
    session: AsyncSession,
    tenant_id: str,
    now: datetime,
    limit: int,
    token: str,
    lease_until: datetime,
) -> Sequence[Row[Any]]:
    """Claim up to ``limit`` due messages for ``token``; answers them, oldest first."""
    pg = session.get_bind().dialect.name == "postgresql"
    ids = list((await session.execute(_due(tenant_id, now, limit, pg))).scalars())
    if not ids:
        return []
    claimed = await session.execute(
        update(OUTBOUND)
        .where(OUTBOUND.c.tenant_id == tenant_id, OUTBOUND.c.id.in_(ids),
               OUTBOUND.c.status == QUEUED)
        .values(status=SENDING, claim=token, lease_until=lease_until)
        .returning(OUTBOUND.c.id, OUTBOUND.c.control_id, OUTBOUND.c.destination,
                   OUTBOUND.c.patient_id, OUTBOUND.c.raw, OUTBOUND.c.attempts,
                   OUTBOUND.c.created_at)
    )  # fmt: skip
    return sorted(claimed.all(), key=lambda row: (row.created_at, row.id))


async def renew(
    session: AsyncSession, tenant_id: str, ids: list[str], token: str, lease_until: datetime
) -> set[str]:
    """Extend the sender's lease on these messages; answers those still its to send."""
    result = await session.execute(
        update(OUTBOUND)
        .where(OUTBOUND.c.tenant_id == tenant_id, OUTBOUND.c.id.in_(ids),
               OUTBOUND.c.claim == token, OUTBOUND.c.status == SENDING)
        .values(lease_until=lease_until)
        .returning(OUTBOUND.c.id)
    )  # fmt: skip
    return set(result.scalars())


async def settle(
    session: AsyncSession, tenant_id: str, message_id: str, token: str, values: dict[str, Any]
) -> bool:
    """Write a send's outcome if ``token`` still holds the message; answers whether it did."""
    result = await session.execute(
        update(OUTBOUND)
        .where(OUTBOUND.c.tenant_id == tenant_id, OUTBOUND.c.id == message_id,
               OUTBOUND.c.claim == token, OUTBOUND.c.status == SENDING)
        .values(values)
    )  # fmt: skip
    return bool(getattr(result, "rowcount", 0))
