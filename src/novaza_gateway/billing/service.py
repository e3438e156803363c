"""Billing reads for the tenant's own API: plans, subscriptions, entitlements."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import repository, views
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.schemas import EntitlementsOut, PlanList, SubscriptionList
from novaza_gateway.core.entitlements import PlanChoice
from novaza_gateway.core.tenancy import TenantContext


def list_plans(billing: BillingArea) -> PlanList:
    return views.plans_out(billing.catalog)


async def list_subscriptions(
    session: AsyncSession, billing: BillingArea, tenant: TenantContext
) -> SubscriptionList:
    sub = await repository.get_subscription(session, tenant.id)
    data = [views.subscription_out(billing.catalog, sub)] if sub is not None else []
    return SubscriptionList(data=data)


def choice_of(tenant: TenantContext) -> PlanChoice:
    return PlanChoice(tenant.id, tenant.plan, tenant.addons, tenant.rate_limit_override)


async def entitlements(
    session: AsyncSession, billing: BillingArea, tenant: TenantContext
) -> EntitlementsOut:
    now = billing.entitlements.clock()
    sub = await repository.get_subscription(session, tenant.id)
    granted = billing.entitlements.grant_for(choice_of(tenant), sub)
    used: dict[str, int] = {}
    if sub is not None:
        used = await repository.usage_totals(
            session, tenant.id, sub.current_period_start, sub.current_period_end
        )
    return views.entitlements_out(granted, used, now)
