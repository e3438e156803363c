"""HL7 message store queries; each takes the tenant id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.hl7.models import InboundMessage


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
