"""Room queries. Every one takes the tenant id: a room is never looked up across tenants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.rooms.models import Room


async def by_encounter(session: AsyncSession, tenant_id: str, encounter_id: str) -> Room | None:
    query = select(Room).where(Room.tenant_id == tenant_id, Room.encounter_id == encounter_id)
    return (await session.execute(query)).scalar_one_or_none()


async def by_visit_number(session: AsyncSession, tenant_id: str, visit_number: str) -> Room | None:
    query = select(Room).where(Room.tenant_id == tenant_id, Room.visit_number == visit_number)
    return (await session.execute(query)).scalars().first()


async def by_visit_numbers(
    session: AsyncSession, tenant_id: str, visit_numbers: list[str]
) -> dict[str, Room]:
    query = select(Room).where(Room.tenant_id == tenant_id, Room.visit_number.in_(visit_numbers))
    return {room.visit_number: room for room in (await session.execute(query)).scalars()}
