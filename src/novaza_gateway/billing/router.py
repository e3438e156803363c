"""``/api/v1/billing``: the tenant's plans, subscription, entitlements, usage, invoices, wallet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from novaza_gateway.billing import service
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.schemas import EntitlementsOut, PlanList, SubscriptionList
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
