"""Billing's answer to ``core.entitlements``: the resolver the gateway enforces, and the hook
tenant administration calls so the subscription follows the tenant's plan and add-ons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import repository, subscriptions
from novaza_gateway.billing.catalog import Catalog
from novaza_gateway.billing.grants import Grant, grant, rate_limit_for
from novaza_gateway.billing.models import Subscription
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.entitlements import Entitlements, PlanChoice
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.tenancy import RateLimitPolicy

Clock = Callable[[], datetime]


class BillingEntitlements:
    """Implements ``EntitlementResolver`` and ``SubscriptionHook`` over one catalogue."""

    def __init__(self, catalog: Catalog, clock: Clock = utcnow) -> None:
        self.catalog = catalog
        self.clock = clock

    # -- SubscriptionHook
    def validate(self, plan: str, addons: Sequence[str]) -> None:
        if plan not in self.catalog.plans:
            known = ", ".join(sorted(self.catalog.plans))
            raise ValidationFailed.field("plan", f"unknown plan; one of {known}")
        for index, addon in enumerate(addons):
            if addon not in self.catalog.addons:
                known = ", ".join(sorted(self.catalog.addons))
                raise ValidationFailed.field(f"addons.{index}", f"unknown add-on; one of {known}")

    async def follow(self, session: AsyncSession, choice: PlanChoice) -> None:
        await subscriptions.follow(session, self.catalog, choice, self.clock())

    async def cancel(self, session: AsyncSession, tenant_id: str) -> None:
        await subscriptions.cancel_at_period_end(session, tenant_id, self.clock())

    # -- EntitlementResolver
    def rate_limit(self, choice: PlanChoice) -> RateLimitPolicy:
        return rate_limit_for(self.catalog, choice.plan, choice.rate_limit)[0]

    async def resolve(self, session: AsyncSession, choice: PlanChoice) -> Entitlements:
        sub = await repository.get_subscription(session, choice.tenant_id)
        resolved = self.grant_for(choice, sub)
        return Entitlements(
            plan=resolved.plan,
            addons=resolved.addons,
            rate_limit=resolved.rate_limit,
            subscription_status=resolved.status,
        )

    def grant_for(self, choice: PlanChoice, sub: Subscription | None) -> Grant:
        """The subscription is the record; before one exists, the tenant's choice stands."""
        if sub is None:
            return grant(
                self.catalog,
                plan=choice.plan,
                addons=choice.addons,
                status="active",
                past_due_since=None,
                overrides={},
                rate_override=choice.rate_limit,
                now=self.clock(),
            )
        return grant(
            self.catalog,
            plan=sub.plan,
            addons=frozenset(sub.addons or ()),
            status=sub.status,
            past_due_since=sub.past_due_since,
            overrides=sub.overrides or {},
            rate_override=choice.rate_limit,
            now=self.clock(),
        )
