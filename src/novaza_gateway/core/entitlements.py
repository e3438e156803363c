"""What a tenant may use, as the request path needs it, and how plan choices reach billing.

``core`` declares the questions; the billing area answers them and ``app.py`` wires the
answer in. Tenant administration records the tenant's choice (plan, add-ons, a rate-limit
override) and tells the ``SubscriptionHook``; the tenant source asks the
``EntitlementResolver`` what that choice, the subscription's state and any overrides grant.
Neither area imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.tenancy import RateLimitPolicy


@dataclass(frozen=True, slots=True)
class PlanChoice:
    """What tenant administration declared for a tenant."""

    tenant_id: str
    plan: str
    addons: frozenset[str]
    rate_limit: RateLimitPolicy | None = None  # the operator's override, if any


@dataclass(frozen=True, slots=True)
class Entitlements:
    """The resolved answer the gateway enforces."""

    plan: str
    addons: frozenset[str]
    rate_limit: RateLimitPolicy
    subscription_status: str


class EntitlementResolver(Protocol):
    def rate_limit(self, choice: PlanChoice) -> RateLimitPolicy:
        """The rate limit the choice grants (catalogue and override only; no I/O)."""

    async def resolve(self, session: AsyncSession, choice: PlanChoice) -> Entitlements:
        """The entitlements in force now: choice + subscription status + overrides."""


class SubscriptionHook(Protocol):
    def validate(self, plan: str, addons: Sequence[str]) -> None:
        """Raise ``ValidationFailed`` when the catalogue offers no such plan or add-on."""

    async def follow(self, session: AsyncSession, choice: PlanChoice) -> None:
        """Make the tenant's subscription match the choice, in the caller's transaction."""

    async def cancel(self, session: AsyncSession, tenant_id: str) -> None:
        """The tenant is leaving (deleted): end its subscription at the current period's end."""
