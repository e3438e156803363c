"""``/api/v1/billing``: the tenant's plans, subscription, entitlements, usage, invoices, wallet."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from novaza_gateway.billing import service, usage
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.schemas import EntitlementsOut, PlanList, SubscriptionList, UsageOut
from novaza_gateway.core.deps import SessionDep, TenantDep
from novaza_gateway.core.policy import policy

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])

READ = policy("billing:read")


def get_billing(request: Request) -> BillingArea:
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
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    granularity: Annotated[usage.Granularity, Query()] = "day",
    meter: Annotated[str | None, Query()] = None,
) -> UsageOut:
    return await usage.usage(
        session, billing, tenant, start=start, end=end, granularity=granularity, meter=meter
    )
