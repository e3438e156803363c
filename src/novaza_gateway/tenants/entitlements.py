"""The tenants area's answer to ``core.tenancy.TenantSource``: tenant row -> context.

What the tenant may use comes from the ``EntitlementResolver`` wired in ``app.py`` (billing's):
this module only turns the tenant's declared choice into the resolver's question.
"""

from __future__ import annotations

from novaza_gateway.core.db import Database
from novaza_gateway.core.entitlements import EntitlementResolver, Entitlements, PlanChoice
from novaza_gateway.core.tenancy import RateLimitPolicy, TenantContext
from novaza_gateway.tenants import repository
from novaza_gateway.tenants.models import Tenant


def rate_limit_override(tenant: Tenant) -> RateLimitPolicy | None:
    if not tenant.rate_limit:
        return None
    return RateLimitPolicy(
        rate_per_second=float(tenant.rate_limit["ratePerSecond"]),
        burst=int(tenant.rate_limit["burst"]),
    )


def plan_choice(tenant: Tenant) -> PlanChoice:
    return PlanChoice(
        tenant_id=tenant.id,
        plan=tenant.plan,
        addons=frozenset(tenant.addons or ()),
        rate_limit=rate_limit_override(tenant),
    )


def tenant_context(tenant: Tenant, entitled: Entitlements) -> TenantContext:
    return TenantContext(
        id=tenant.id,
        slug=tenant.slug,
        status=tenant.status,
        plan=entitled.plan,
        addons=entitled.addons,
        rate_limit=entitled.rate_limit,
        rate_limit_override=rate_limit_override(tenant),
    )


class DatabaseTenantSource:
    def __init__(self, database: Database, resolver: EntitlementResolver) -> None:
        self._database = database
        self._resolver = resolver

    async def load(self, key: str) -> TenantContext | None:
        async with self._database.sessionmaker() as session:
            tenant = await repository.get_by_key(session, key)
            if tenant is None:
                return None
            entitled = await self._resolver.resolve(session, plan_choice(tenant))
            return tenant_context(tenant, entitled)
