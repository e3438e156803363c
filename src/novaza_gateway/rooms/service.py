"""Rooms use cases: Personeo access tokens, and the room of a clinical encounter.

A room links a patient (through its encounter): creating, reading, archiving it and granting
it in a token each leave an audit record in the request's transaction. In upstream mode each
call to the tenant's Personeo is announced first in the rooms journal (``journal.py``, ADR
0051) and retired in the request's transaction, so a room that does not commit is undone at
Personeo (at once, or later by the reconciler) and an archive that does not commit is
finished. A Personeo failure (502) leaves nothing behind: the session rolls back a
transaction that holds no room yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import repository as clinical
from novaza_gateway.clinical.encounters import CANCELED
from novaza_gateway.core import audit
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.tenancy import TenantContext
from novaza_gateway.rooms import repository, tokens
from novaza_gateway.rooms.area import RoomsArea
from novaza_gateway.rooms.errors import (
    EncounterCanceled,
    EncounterNotFound,
    RoomArchived,
    RoomNotFound,
)
from novaza_gateway.rooms.models import ACTIVE, ARCHIVED, RESOURCE, Room, snapshot
from novaza_gateway.rooms.personeo import Upstream
from novaza_gateway.rooms.schemas import RoomIn, RoomOut, TokenIn, TokenOut


@dataclass(frozen=True, slots=True)
class Created:
    room: RoomOut
    new: bool  # 201 with a Location; an existing or reopened room is 200


# ----------------------------------------------------------------------------- tokens


async def issue_token(
    session: AsyncSession, area: RoomsArea, tenant: TenantContext, actor: Actor, body: TokenIn
) -> TokenOut:
    secret = area.token_secret()
    wanted = list(dict.fromkeys(body.rooms))
    rooms = await repository.by_visit_numbers(session, tenant.id, wanted) if wanted else {}
    grants = []
    for visit_number in wanted:
        room = rooms.get(visit_number)
        if room is None:
            raise RoomNotFound(visit_number)
        if room.status != ACTIVE:
            raise RoomArchived(visit_number)
        grants.append(tokens.RoomGrant(room.id, visit_number, room.remote_id))
    cap = area.config.token_ttl_seconds
    ttl = min(body.ttl_seconds or cap, cap)
    minted = tokens.mint(
        secret,
        issuer=area.config.token_issuer,
        subject=actor.subject,
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        grants=grants,
        now=utcnow(),
        ttl_seconds=ttl,
    )
    for visit_number in wanted:  # a grant reads the room, which links a patient
        room = rooms[visit_number]
        audit.record(
            session,
            actor,
            "room.token_granted",
            RESOURCE,
            room.id,
            tenant_id=tenant.id,
            patient_id=room.patient_id,
            after={"jti": minted.jti, "expiresAt": minted.expires_at.isoformat()},
        )
    section = await area.tenant_section(tenant.id)
    return TokenOut(
        access_token=minted.token,
        expires_in=ttl,
        expires_at=minted.expires_at,
        identity=actor.subject,
        personeo_url=area.personeo_url(section),
    )


# ----------------------------------------------------------------------------- rooms


async def create_room(
    session: AsyncSession, area: RoomsArea, tenant: TenantContext, actor: Actor, body: RoomIn
) -> Created:
    encounter = await clinical.encounter(session, tenant.id, body.encounter)
    if encounter is None:
        raise EncounterNotFound(details={"encounter": body.encounter})
    if encounter.status == CANCELED:
        raise EncounterCanceled(details={"encounter": body.encounter})
    existing = await repository.by_encounter(session, tenant.id, encounter.id)
    if existing is not None and existing.status == ACTIVE:
        return Created(to_out(existing), new=False)
    upstream = area.upstream(await area.tenant_section(tenant.id))
    members = list(dict.fromkeys([actor.subject, *body.members]))
    if existing is not None:
        return Created(
            await _reopen(session, area, upstream, tenant, actor, existing, body, members), False
        )
    room = Room(
        id=new_id(),
        tenant_id=tenant.id,
        encounter_id=encounter.id,
        visit_number=encounter.visit_number,
        patient_id=encounter.patient_id,
        display_name=body.display_name or f"Encounter {encounter.visit_number}",
        members=members,
        status=ACTIVE,
        remote_id=None,
        created_by=actor.subject,
        created_at=utcnow(),
        archived_at=None,
        archived_by=None,
    )
    room.updated_at = room.created_at
    intent = None
    if upstream is not None:
        remote = _remote(tenant, room)
        intent = await area.journal.create_remote(session, tenant.id, room.id, upstream, remote)
        room.remote_id = intent.remote_id
    if not await repository.insert_room(session, room):  # a concurrent create won
        winner = await repository.by_encounter(session, tenant.id, encounter.id)
        if winner is None:
            raise RuntimeError("the encounter's room conflicts but cannot be read")
        if intent is not None:  # this request's Personeo room is not kept
            await area.journal.hand_over(session, intent)
        return Created(to_out(winner), new=False)
    if intent is not None:
        await area.journal.settle(session, intent)
    _audit(session, actor, "room.created", room, after=snapshot(room))
    return Created(to_out(room), new=True)


async def _reopen(
    session: AsyncSession,
    area: RoomsArea,
    upstream: Upstream | None,
    tenant: TenantContext,
    actor: Actor,
    room: Room,
    body: RoomIn,
    members: list[str],
) -> RoomOut:
    """An archived room comes back active, same id; at Personeo a new room is created (the
    archived one stays archived there)."""
    before = snapshot(room)
    if body.display_name:
        room.display_name = body.display_name
    if body.members:
        room.members = members
    intent = None
    if upstream is not None:
        remote = _remote(tenant, room)
        intent = await area.journal.create_remote(session, tenant.id, room.id, upstream, remote)
        room.remote_id = intent.remote_id
    room.status = ACTIVE
    room.archived_at = None
    room.archived_by = None
    room.updated_at = utcnow()
    await session.flush()
    if intent is not None:
        await area.journal.settle(session, intent)
    _audit(session, actor, "room.reopened", room, before=before, after=snapshot(room))
    return to_out(room)


async def get_room(
    session: AsyncSession, tenant: TenantContext, actor: Actor, visit_number: str
) -> RoomOut:
    room = await repository.by_visit_number(session, tenant.id, visit_number)
    if room is None:
        raise RoomNotFound(visit_number)
    _audit(session, actor, "room.read", room)
    return to_out(room)


async def archive_room(
    session: AsyncSession, area: RoomsArea, tenant: TenantContext, actor: Actor, visit_number: str
) -> RoomOut:
    room = await repository.by_visit_number(session, tenant.id, visit_number)
    if room is None:
        raise RoomNotFound(visit_number)
    if room.status == ARCHIVED:
        return to_out(room)
    upstream = area.upstream(await area.tenant_section(tenant.id))
    intent = None
    if upstream is not None and room.remote_id is not None:
        intent = await area.journal.archive_remote(
            session, tenant.id, room.id, upstream, room.remote_id, actor.subject
        )
    before = snapshot(room)
    room.status = ARCHIVED
    room.archived_at = room.updated_at = utcnow()
    room.archived_by = actor.subject
    await session.flush()
    if intent is not None:
        await area.journal.settle(session, intent)
    _audit(session, actor, "room.archived", room, before=before, after=snapshot(room))
    return to_out(room)


# ----------------------------------------------------------------------------- helpers


def to_out(room: Room) -> RoomOut:
    return RoomOut(
        id=room.id,
        encounter=room.visit_number,
        display_name=room.display_name,
        members=list(room.members),
        status="archived" if room.status == ARCHIVED else "active",
        mode="upstream" if room.remote_id is not None else "embedded",
        remote_id=room.remote_id,
        created_by=room.created_by,
        created_at=room.created_at,
        updated_at=room.updated_at,
        archived_at=room.archived_at,
        archived_by=room.archived_by,
    )


def _remote(tenant: TenantContext, room: Room) -> dict[str, Any]:
    """The room as the tenant's Personeo receives it (``externalId``: the gateway's id)."""
    return {
        "externalId": room.id,
        "tenant": tenant.slug,
        "encounter": room.visit_number,
        "name": room.display_name,
        "members": list(room.members),
    }


def _audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    room: Room,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    audit.record(
        session,
        actor,
        action,
        RESOURCE,
        room.id,
        tenant_id=room.tenant_id,
        patient_id=room.patient_id,
        before=before,
        after=after,
    )
