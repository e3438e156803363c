"""HL7 message store queries; each takes the tenant id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from novaza_gateway.hl7.models import DeliveryAttempt, InboundMessage, OutboundMessage

QUEUED, SENDING, DELIVERED, DEAD = "queued", "sending", "delivered", "dead"


async def inbound_by_key(
    session: AsyncSession, tenant_id: str, sending_app: str, sending_facility: str, control_id: str
) -> InboundMessage | None:
    query = select(InboundMessage).where(
        InboundMessage.tenant_id == tenant_id,
        InboundMessage.sending_application == sending_app,
        InboundMessage.sending_facility == sending_facility,
        InboundMessage.control_id == control_id,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def inbound(session: AsyncSession, tenant_id: str, message_id: str) -> InboundMessage | None:
    query = select(InboundMessage).where(
        InboundMessage.tenant_id == tenant_id, InboundMessage.id == message_id
    )
    return (await session.execute(query)).scalar_one_or_none()


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


async def due_tenants(session: AsyncSession, now: datetime) -> list[str]:
    """The outbox worker's one cross-tenant query: which tenants have work (ids only)."""
    due = (OutboundMessage.status == QUEUED) & (OutboundMessage.next_attempt_at <= now)
    stale = (OutboundMessage.status == SENDING) & (OutboundMessage.lease_until < now)
    query = select(OutboundMessage.tenant_id).where(due | stale).distinct()
    return list((await session.execute(query)).scalars())


async def release_stale(session: AsyncSession, tenant_id: str, now: datetime) -> None:
    """Messages whose sender died mid-delivery go back to the queue (at-least-once)."""
    await session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.tenant_id == tenant_id,
            OutboundMessage.status == SENDING,
            OutboundMessage.lease_until < now,
        )
        .values(status=QUEUED, lease_until=None)
    )


async def due_messages(
    session: AsyncSession, tenant_id: str, now: datetime, limit: int
) -> Sequence[OutboundMessage]:
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
        select(OutboundMessage)
        .where(
            OutboundMessage.tenant_id == tenant_id,
            OutboundMessage.status == QUEUED,
            OutboundMessage.next_attempt_at <= now,
            ~ahead,
        )
        .order_by(OutboundMessage.created_at, OutboundMessage.id)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def claim(
    session: AsyncSession, tenant_id: str, message_id: str, lease_until: datetime
) -> bool:
    """Take a queued message for delivery; False if another worker took it first."""
    result = await session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.tenant_id == tenant_id,
            OutboundMessage.id == message_id,
            OutboundMessage.status == QUEUED,
        )
        .values(status=SENDING, lease_until=lease_until)
    )
    return bool(getattr(result, "rowcount", 0))


async def backlog(session: AsyncSession) -> dict[str, int]:
    """Outbox message counts by status over all tenants: an operator's gauge, no ids."""
    query = select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
    return {status: int(n) for status, n in (await session.execute(query)).all()}
