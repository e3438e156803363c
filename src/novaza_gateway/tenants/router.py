"""``/admin/tenants``: platform administrators onboard, change, suspend and delete tenants."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from novaza_gateway.core.deps import ActorDep, SessionDep
from novaza_gateway.core.pagination import CursorQuery, LimitQuery, Page
from novaza_gateway.core.policy import ADMIN_SCOPE, policy
from novaza_gateway.tenants import service
from novaza_gateway.tenants.schemas import Slug, TenantCreate, TenantOut, TenantUpdate
from novaza_gateway.tenants.service import TenantAdmin

router = APIRouter(prefix="/admin/tenants", tags=["tenant administration"])

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


@router.delete(
    "/{slug}", **ADMIN, status_code=status.HTTP_204_NO_CONTENT, summary="Delete a tenant (soft)"
)
async def delete_tenant(slug: Slug, session: SessionDep, admin: AdminDep) -> None:
    await service.delete_tenant(session, admin, slug)
