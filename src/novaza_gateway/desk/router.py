"""``/med/desk``: contact sync and re-queue (desk:write), reads (desk:read), tenant required."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from starlette.responses import Response

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.idempotency import KeyedRequest, KeyHeader
from novaza_gateway.core.pagination import CursorQuery, LimitQuery, Page
from novaza_gateway.core.params import Instant
from novaza_gateway.core.policy import policy
from novaza_gateway.desk import service
from novaza_gateway.desk.schemas import ContactOut, RequeueIn, RequeueOut, SyncIn, SyncOut

router = APIRouter(prefix="/med/desk", tags=["Desk"])
ContactId = Annotated[str, Path(alias="contactID", min_length=1, max_length=300)]

SYNC = policy(
    "desk:write",
    max_body_bytes=8 * 1024 * 1024,
    errors={
        409: "CONFLICT, IDEMPOTENCY_KEY_IN_USE",
        413: "PAYLOAD_TOO_LARGE",
        422: "VALIDATION_FAILED, IDEMPOTENCY_KEY_REUSED",
    },
)
REQUEUE = policy("desk:write", errors={409: "DESK_NOT_UPSTREAM", 422: "VALIDATION_FAILED"})
READ = policy("desk:read", errors={404: "CONTACT_NOT_FOUND", 422: "VALIDATION_FAILED"})


@router.post(
    "/contacts/sync",
    **SYNC,
    response_model=SyncOut,
    summary="Synchronize contacts into Desk (batch upsert by externalId, up to 1000); "
    "Idempotency-Key honoured",
)
async def sync_contacts(
    body: SyncIn,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    idempotency_key: KeyHeader = None,
) -> SyncOut | Response:
    keyed = KeyedRequest(idempotency_key, await request.body()) if idempotency_key else None
    return await service.sync(session, request.app.state.desk, tenant, actor, body, keyed)


@router.post(
    "/contacts/requeue",
    **REQUEUE,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Push the tenant's failed contacts to its Desk again (all, or those named)",
)
async def requeue_contacts(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    body: RequeueIn | None = None,
) -> RequeueOut:
    return await service.requeue(session, request.app.state.desk, tenant, actor, body)


@router.get("/contacts", **READ, summary="List Desk contacts, oldest change first")
async def list_contacts(
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
    updated_since: Annotated[Instant | None, Query(alias="updatedSince")] = None,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    external_id: Annotated[str | None, Query(alias="externalId", max_length=255)] = None,
) -> Page[ContactOut]:
    return await service.list_contacts(
        session,
        tenant,
        actor,
        limit=limit,
        cursor=cursor,
        updated_since=updated_since,
        include_deleted=include_deleted,
        external_id=external_id,
    )


@router.get(
    "/contacts/{contactID}",
    **READ,
    summary="Retrieve a Desk contact by its id, or by ext:{externalId}",
)
async def get_contact(
    contact_id: ContactId, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> ContactOut:
    return await service.get_contact(session, tenant, actor, contact_id)
