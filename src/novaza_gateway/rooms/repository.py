"""Room queries. Every one takes the tenant id: a room is never looked up across tenants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
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


async def insert_room(session: AsyncSession, room: Room) -> bool:
    """Insert the room unless its encounter has one (a concurrent create won): inserted?

    ``ON CONFLICT DO NOTHING`` rather than a SAVEPOINT: on SQLite the driver opens no
    transaction before a SAVEPOINT, so its RELEASE committed the room on its own, ahead of
    the request's other writes (its audit record, its journal intent)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {column.key: getattr(room, column.key) for column in Room.__table__.columns}
    statement = (
        insert(Room)
        .values(values)
        .on_conflict_do_nothing(index_elements=["tenant_id", "encounter_id"])
    )
    return int(getattr(await session.execute(statement), "rowcount", 0)) == 1
