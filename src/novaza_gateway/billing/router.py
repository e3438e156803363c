"""``/api/v1/billing``: the tenant's plans, subscription, entitlements, usage, invoices, wallet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import portal_pages, service, transitions, usage
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.portal_router import portal_router
from novaza_gateway.billing.schemas import (
    CreditIn,
    CreditOut,
    EntitlementsOut,
    FloorIn,
    InvoiceOut,
    OverridesIn,
    PlanList,
    PortalSessionIn,
    PortalSessionOut,
    SubscriptionList,
    UsageOut,
    WalletOut,
)
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.errors import NotFound
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.pagination import CursorQuery, LimitQuery, Page
from novaza_gateway.core.params import Instant
from novaza_gateway.core.policy import ADMIN_SCOPE, policy
from novaza_gateway.core.tenancy import TenantCache, TenantContext, TenantInvalidator

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
admin_router = APIRouter(prefix="/admin/tenants", tags=["billing administration"])

READ = policy("billing:read")


async def get_billing(request: Request) -> BillingArea:
    billing: BillingArea = request.app.state.billing
    return billing


BillingDep = Annotated[BillingArea, Depends(get_billing)]


@router.get("/plans", **READ, summary="Plans on offer, with limits and metered prices")
async def list_plans(billing: BillingDep) -> PlanList:
    return service.list_plans(billing)


@router.get("/subscriptions", **READ, summary="The tenant's subscriptions")
async def list_subscriptions(
    session: SessionDep, billing: BillingDep, tenant: TenantDep
) -> SubscriptionList:
    return await service.list_subscriptions(session, billing, tenant)


@router.get("/entitlements", **READ, summary="What the gateway enforces for the tenant, and why")
async def get_entitlements(
    session: SessionDep, billing: BillingDep, tenant: TenantDep
) -> EntitlementsOut:
    return await service.entitlements(session, billing, tenant)


@router.get(
    "/usage",
    **policy("billing:read", errors={422: "VALIDATION_FAILED"}),
    summary="Usage per meter: totals, a time series, included quantity and remaining",
    response_model_by_alias=True,
)
async def get_usage(
    session: SessionDep,
    billing: BillingDep,
    tenant: TenantDep,
    start: Annotated[Instant | None, Query(alias="from")] = None,
    end: Annotated[Instant | None, Query(alias="to")] = None,
    granularity: Annotated[usage.Granularity, Query()] = "day",
    meter: Annotated[str | None, Query()] = None,
) -> UsageOut:
    return await usage.usage(
        session, billing, tenant, start=start, end=end, granularity=granularity, meter=meter
    )


@router.get("/invoices", **READ, summary="Invoices, newest first, after the upcoming draft")
async def list_invoices(
    session: SessionDep,
    billing: BillingDep,
    tenant: TenantDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 20,
) -> Page[InvoiceOut]:
    return await service.list_invoices(session, billing, tenant, cursor=cursor, limit=limit)


@router.get(
    "/invoices/{invoice_id}",
    **policy("billing:read", errors={404: "INVOICE_NOT_FOUND, SUBSCRIPTION_NOT_FOUND"}),
    summary="One invoice (`upcoming`: the current period's draft)",
)
async def get_invoice(
    session: SessionDep,
    billing: BillingDep,
    tenant: TenantDep,
    invoice_id: Annotated[str, Path(max_length=36)],
) -> InvoiceOut:
    return await service.get_invoice(session, billing, tenant, invoice_id)


@router.get("/wallet", **READ, summary="Wallet balance and recent transactions")
async def get_wallet(
    session: SessionDep,
    billing: BillingDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> WalletOut:
    return await service.get_wallet(session, billing, tenant, limit)


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$"),
]


async def tenant_for(request: Request, slug: str) -> TenantContext:
    cache: TenantCache = request.app.state.tenant_cache
    tenant = await cache.get(slug)
    if tenant is None or tenant.status == "deleted":
        raise NotFound("No tenant has this slug.")
    return tenant


async def tenant_id_for(request: Request, slug: str) -> str:
    return (await tenant_for(request, slug)).id


@admin_router.post(
    "/{slug}/wallet/credits",
    **policy(
        ADMIN_SCOPE,
        tenant=False,
        errors={
            404: "NOT_FOUND",
            422: "VALIDATION_FAILED, IDEMPOTENCY_KEY_REUSED, CURRENCY_MISMATCH",
        },
    ),
    status_code=status.HTTP_201_CREATED,
    summary="Credit a tenant's wallet (top-up or grant); Idempotency-Key honoured",
)
async def credit_wallet(
    request: Request,
    response: Response,
    slug: Annotated[str, Path(max_length=63)],
    body: CreditIn,
    session: SessionDep,
    billing: BillingDep,
    actor: ActorDep,
    idempotency_key: IdempotencyKey = None,
) -> CreditOut:
    tenant_id = await tenant_id_for(request, slug)
    invalidator: TenantInvalidator = request.app.state.invalidator
    key = idempotency_key or new_id()
    result, created = await service.credit(
        session, billing, tenant_id, key, body, actor, invalidator.announce
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return result


@router.post(
    "/portal-session",
    **policy("billing:manage", errors={422: "VALIDATION_FAILED, RETURN_URL_NOT_ALLOWED"}),
    status_code=status.HTTP_201_CREATED,
    summary="A single-use, short-lived link to the customer portal",
)
async def create_portal_session(
    request: Request,
    body: PortalSessionIn,
    session: SessionDep,
    billing: BillingDep,
    tenant: TenantDep,
) -> PortalSessionOut:
    base_url: str = request.app.state.settings.base_url
    return await portal_pages.create_link(session, billing, tenant, body, base_url)


@admin_router.put(
    "/{slug}/entitlements/overrides",
    **policy(ADMIN_SCOPE, tenant=False, errors={404: "NOT_FOUND", 422: "VALIDATION_FAILED"}),
    summary="Replace a tenant's entitlement overrides (extra add-ons, AI-token allowance)",
)
async def put_overrides(
    request: Request,
    slug: Annotated[str, Path(max_length=63)],
    body: OverridesIn,
    session: SessionDep,
    billing: BillingDep,
    actor: ActorDep,
) -> EntitlementsOut:
    tenant = await tenant_for(request, slug)
    invalidator: TenantInvalidator = request.app.state.invalidator
    return await service.set_overrides(session, billing, tenant, body, actor, invalidator.announce)


@admin_router.put(
    "/{slug}/wallet/floor",
    **policy(ADMIN_SCOPE, tenant=False, errors={404: "NOT_FOUND", 422: "VALIDATION_FAILED"}),
    summary="Set how far below zero a tenant's wallet may go (0: no credit); audited",
)
async def put_wallet_floor(
    request: Request,
    slug: Annotated[str, Path(max_length=63)],
    body: FloorIn,
    session: SessionDep,
    billing: BillingDep,
    actor: ActorDep,
) -> WalletOut:
    tenant = await tenant_for(request, slug)
    invalidator: TenantInvalidator = request.app.state.invalidator
    return await service.set_floor(session, billing, tenant, body, actor, invalidator.announce)


TRANSITION_ERRORS = {
    404: "NOT_FOUND, INVOICE_NOT_FOUND",
    409: "INVOICE_ALREADY_PAID, INVOICE_ALREADY_VOID, INVOICE_NOT_FINALIZED",
}
InvoicePath = Annotated[str, Path(max_length=36)]


@admin_router.post(
    "/{slug}/invoices/{invoice_id}/void",
    **policy(ADMIN_SCOPE, tenant=False, errors=TRANSITION_ERRORS),
    summary="Void an open or uncollectible invoice: it is no longer owed; audited",
)
async def void_invoice(
    request: Request,
    slug: Annotated[str, Path(max_length=63)],
    invoice_id: InvoicePath,
    session: SessionDep,
    billing: BillingDep,
    actor: ActorDep,
) -> InvoiceOut:
    return await _transition(request, slug, invoice_id, session, billing, actor, "void")


@admin_router.post(
    "/{slug}/invoices/{invoice_id}/mark-uncollectible",
    **policy(ADMIN_SCOPE, tenant=False, errors=TRANSITION_ERRORS),
    summary="Write off an open invoice for dunning (a later credit may still pay it); audited",
)
async def mark_invoice_uncollectible(
    request: Request,
    slug: Annotated[str, Path(max_length=63)],
    invoice_id: InvoicePath,
    session: SessionDep,
    billing: BillingDep,
    actor: ActorDep,
) -> InvoiceOut:
    return await _transition(request, slug, invoice_id, session, billing, actor, "uncollectible")


async def _transition(
    request: Request,
    slug: str,
    invoice_id: str,
    session: AsyncSession,
    billing: BillingArea,
    actor: Actor,
    kind: transitions.Target,
) -> InvoiceOut:
    tenant = await tenant_for(request, slug)
    invalidator: TenantInvalidator = request.app.state.invalidator
    return await service.transition_invoice(
        session, billing, tenant, invoice_id, kind, actor, invalidator.announce
    )


# What app.py registers: the tenant's billing API and the platform's billing administration. The
# route objects themselves (not include_router, whose lazy entries the guard would not see).
routes = APIRouter()
routes.routes.extend([*router.routes, *admin_router.routes, *portal_router.routes])
