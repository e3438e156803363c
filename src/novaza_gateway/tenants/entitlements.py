"""The tenants area's answer to ``core.tenancy.TenantSource``: tenant + plan -> context."""

from __future__ import annotations

from novaza_gateway.core.db import Database
from novaza_gateway.core.tenancy import RateLimitPolicy, TenantContext
from novaza_gateway.tenants import repository
from novaza_gateway.tenants.models import Tenant
from novaza_gateway.tenants.plans import DEFAULT_PLAN, PLAN_LIMITS


def effective_rate_limit(tenant: Tenant) -> RateLimitPolicy:
    if tenant.rate_limit:
        return RateLimitPolicy(
            rate_per_second=float(tenant.rate_limit["ratePerSecond"]),
            burst=int(tenant.rate_limit["burst"]),
        )
    return PLAN_LIMITS.get(tenant.plan, PLAN_LIMITS[DEFAULT_PLAN])


def tenant_context(tenant: Tenant) -> TenantContext:
    return TenantContext(
        id=tenant.id,
        slug=tenant.slug,
        status=tenant.status,
        plan=tenant.plan,
        addons=frozenset(tenant.addons or ()),
        rate_limit=effective_rate_limit(tenant),
    )


class DatabaseTenantSource:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def load(self, key: str) -> TenantContext | None:
        async with self._database.sessionmaker() as session:
            tenant = await repository.get_by_key(session, key)
            return tenant_context(tenant) if tenant is not None else None
