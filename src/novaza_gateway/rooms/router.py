"""``/med/personeo``: Personeo access tokens and encounter rooms (scope rooms:write)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.policy import policy
from novaza_gateway.rooms import service
from novaza_gateway.rooms.area import RoomsArea
from novaza_gateway.rooms.schemas import RoomIn, RoomOut, TokenIn, TokenOut

router = APIRouter(prefix="/med/personeo", tags=["clinical messaging rooms"])
EncounterId = Annotated[str, Path(alias="encounterID", min_length=1, max_length=128)]

TOKEN = policy(
    "rooms:write",
    max_body_bytes=64 * 1024,
    errors={
        404: "ROOM_NOT_FOUND",
        409: "ROOM_ARCHIVED",
        422: "VALIDATION_FAILED",
        503: "ROOMS_NOT_CONFIGURED",
    },
)
CREATE = policy(
    "rooms:write",
    max_body_bytes=64 * 1024,
    errors={
        404: "ENCOUNTER_NOT_FOUND",
        409: "ENCOUNTER_CANCELED",
        422: "VALIDATION_FAILED",
        502: "UPSTREAM_UNAVAILABLE (upstream mode)",
        503: "UPSTREAM_UNAVAILABLE (the store failed; a Personeo room is undone)",
    },
    responses={200: {"description": "The encounter's room, which existed (or was reopened)"}},
)
READ = policy("rooms:write", errors={404: "ROOM_NOT_FOUND"})
ARCHIVE = policy(
    "rooms:write",
    errors={
        404: "ROOM_NOT_FOUND",
        502: "UPSTREAM_UNAVAILABLE (upstream mode)",
        503: "UPSTREAM_UNAVAILABLE (the store failed; a Personeo archive is finished)",
    },
)


def _area(request: Request) -> RoomsArea:
    area: RoomsArea = request.app.state.rooms
    return area


async def _journaled_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction, as ``SessionDep``; if it rolls back after a call to the
    tenant's Personeo, that call is undone (or handed to the reconciler) before the answer."""
    async with _area(request).journal.transaction() as session:
        yield session


# scope="function": commit (or undo) before the response leaves, as SessionDep does.
JournaledSessionDep = Annotated[AsyncSession, Depends(_journaled_session, scope="function")]


@router.post("/token", **TOKEN, summary="Exchange a JWT for a Personeo access token")
async def issue_token(
    body: TokenIn, request: Request, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> TokenOut:
    return await service.issue_token(session, _area(request), tenant, actor, body)


@router.post(
    "/room",
    **CREATE,
    status_code=status.HTTP_201_CREATED,
    summary="Create a Personeo room for a clinical encounter (idempotent per encounter)",
)
async def create_room(
    body: RoomIn,
    request: Request,
    response: Response,
    session: JournaledSessionDep,
    tenant: TenantDep,
    actor: ActorDep,
) -> RoomOut:
    created = await service.create_room(session, _area(request), tenant, actor, body)
    if created.new:
        response.headers["Location"] = (
            f"/med/personeo/room/{quote(created.room.encounter, safe='')}"
        )
    else:
        response.status_code = status.HTTP_200_OK
    return created.room


@router.get("/room/{encounterID}", **READ, summary="The room of an encounter")
async def get_room(
    encounter: EncounterId, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> RoomOut:
    return await service.get_room(session, tenant, actor, encounter)


@router.delete("/room/{encounterID}", **ARCHIVE, summary="Archive an encounter room")
async def archive_room(
    encounter: EncounterId,
    request: Request,
    session: JournaledSessionDep,
    tenant: TenantDep,
    actor: ActorDep,
) -> RoomOut:
    return await service.archive_room(session, _area(request), tenant, actor, encounter)
