"""``/admin/tenants``: platform administrators onboard, change, suspend and delete tenants."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from novaza_gateway.core.audittrail import export
from novaza_gateway.core.deps import ActorDep, SessionDep
from novaza_gateway.core.pagination import CursorQuery, LimitQuery, Page
from novaza_gateway.core.params import Instant
from novaza_gateway.core.policy import ADMIN_SCOPE, policy
from novaza_gateway.tenants import service
from novaza_gateway.tenants.schemas import Slug, TenantCreate, TenantOut, TenantUpdate
from novaza_gateway.tenants.service import TenantAdmin

router = APIRouter(prefix="/admin/tenants", tags=["tenant administration"])
NDJSON = "application/x-ndjson"

ADMIN = policy(
    ADMIN_SCOPE, tenant=False, errors={404: "NOT_FOUND", 409: "CONFLICT", 422: "VALIDATION_FAILED"}
)


async def get_admin(request: Request, actor: ActorDep) -> TenantAdmin:
    state = request.app.state
    return TenantAdmin(
        actor=actor,
        sections=state.settings_sections,
        invalidator=state.invalidator,
        subscriptions=state.subscriptions,
        entitlements=state.entitlements,
    )


AdminDep = Annotated[TenantAdmin, Depends(get_admin)]
StatusFilter = Annotated[
    Literal["pending", "active", "suspended", "deleted"] | None, Query(alias="status")
]


@router.get("/", **ADMIN, summary="List tenants")
async def list_tenants(
    session: SessionDep,
    admin: AdminDep,
    status_filter: StatusFilter = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[TenantOut]:
    return await service.list_tenants(
        session, admin, status=status_filter, cursor=cursor, limit=limit
    )


@router.post("/", **ADMIN, status_code=status.HTTP_201_CREATED, summary="Create a tenant")
async def create_tenant(
    body: TenantCreate, session: SessionDep, admin: AdminDep, response: Response
) -> TenantOut:
    created = await service.create_tenant(session, admin, body)
    response.headers["Location"] = f"/admin/tenants/{created.slug}"
    return created


@router.get("/{slug}", **ADMIN, summary="Retrieve a tenant")
async def get_tenant(slug: Slug, session: SessionDep, admin: AdminDep) -> TenantOut:
    return await service.get_tenant(session, admin, slug)


@router.put("/{slug}", **ADMIN, summary="Update a tenant (omitted fields keep their value)")
async def update_tenant(
    slug: Slug, body: TenantUpdate, session: SessionDep, admin: AdminDep
) -> TenantOut:
    return await service.update_tenant(session, admin, slug, body)


@router.post("/{slug}/activate", **ADMIN, summary="Activate a tenant (idempotent)")
async def activate_tenant(slug: Slug, session: SessionDep, admin: AdminDep) -> TenantOut:
    return await service.set_status(session, admin, slug, "active")


@router.post("/{slug}/suspend", **ADMIN, summary="Suspend a tenant (idempotent)")
async def suspend_tenant(slug: Slug, session: SessionDep, admin: AdminDep) -> TenantOut:
    return await service.set_status(session, admin, slug, "suspended")


AuditSince = Annotated[
    Instant | None, Query(alias="from", description="From this instant (inclusive)")
]
AuditUntil = Annotated[Instant | None, Query(alias="to", description="Up to this instant")]
AuditAction = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^[a-z0-9_.]+$",
        description='An action ("tenant.update"), or every action under a prefix ("imaging.")',
    ),
]


@router.get(
    "/{slug}/audit",
    **ADMIN,
    summary="A tenant's audit trail (Accept: application/x-ndjson streams the whole range)",
    response_model=None,
)
async def tenant_audit(
    slug: Slug,
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    since: AuditSince = None,
    until: AuditUntil = None,
    action: AuditAction = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[dict[str, Any]] | StreamingResponse:
    if NDJSON in request.headers.get("accept", ""):
        query = await service.audit_query(session, admin, slug, since, until, action)
        return StreamingResponse(export(request.app.state.db, query), media_type=NDJSON)
    return await service.audit_page(session, admin, slug, since, until, action, cursor, limit)


@router.delete(
    "/{slug}", **ADMIN, status_code=status.HTTP_204_NO_CONTENT, summary="Delete a tenant (soft)"
)
async def delete_tenant(slug: Slug, session: SessionDep, admin: AdminDep) -> None:
    await service.delete_tenant(session, admin, slug)
