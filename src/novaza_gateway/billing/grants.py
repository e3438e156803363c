"""The one set of rules for what a tenant is entitled to, with where each right comes from.

Pure: plan + bought add-ons + overrides + subscription status -> ``Grant``. The gateway's
add-on gate and rate limiter (through ``BillingEntitlements``) and the ``/entitlements``
endpoint both read this, so what the API shows is what the gateway enforces.

Subscription status: ``trialing`` and ``active`` grant everything. ``past_due`` keeps the
clinical add-ons for ``past_due_grace_days`` (billing never blocks clinical care by
surprise) and drops the others at once; after the grace period, and when ``canceled`` or
``unpaid``, only the plan's limits remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from novaza_gateway.billing.catalog import Catalog
from novaza_gateway.core.tenancy import RateLimitPolicy

Source = Literal["plan", "addon", "override"]
FULL_STATUSES = frozenset({"trialing", "active"})


@dataclass(frozen=True, slots=True)
class Feature:
    addon: str
    source: Source
    enabled: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    plan: str
    status: str
    features: tuple[Feature, ...]
    rate_limit: RateLimitPolicy
    rate_limit_source: Source
    ai_tokens: int
    ai_tokens_source: Source
    storage_bytes: int
    grace_until: datetime | None = None
    included: dict[str, int] = field(default_factory=dict)

    @property
    def addons(self) -> frozenset[str]:
        return frozenset(f.addon for f in self.features if f.enabled)


def rate_limit_for(
    catalog: Catalog, plan_id: str, override: RateLimitPolicy | None
) -> tuple[RateLimitPolicy, Source]:
    if override is not None:
        return override, "override"
    limits = catalog.plan(plan_id).limits
    return RateLimitPolicy(limits.requests_per_second, limits.burst), "plan"


def _sources(
    catalog: Catalog, plan_id: str, bought: frozenset[str], extra: list[str]
) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for addon in extra:
        sources[addon] = "override"
    for addon in bought:
        if addon in catalog.addons:
            sources[addon] = "addon"
    for addon in catalog.plan(plan_id).addons_included:
        sources[addon] = "plan"
    return sources


def _keeps(catalog: Catalog, addon: str, status: str, in_grace: bool) -> tuple[bool, str | None]:
    if status in FULL_STATUSES:
        return True, None
    clinical = addon in catalog.addons and catalog.addons[addon].clinical
    if status == "past_due" and in_grace and clinical:
        return True, "past_due: clinical add-on kept during the grace period"
    return False, f"subscription is {status}"


def grant(
    catalog: Catalog,
    *,
    plan: str,
    addons: frozenset[str],
    status: str,
    past_due_since: datetime | None,
    overrides: dict[str, Any],
    rate_override: RateLimitPolicy | None,
    now: datetime,
) -> Grant:
    plan_id = plan if plan in catalog.plans else catalog.default_plan
    grace_until = None
    if status == "past_due" and past_due_since is not None:
        grace_until = past_due_since + timedelta(days=catalog.past_due_grace_days)
    in_grace = grace_until is not None and now < grace_until
    extra = [str(a) for a in overrides.get("addons", [])]
    features = []
    for addon, source in sorted(_sources(catalog, plan_id, addons, extra).items()):
        enabled, reason = _keeps(catalog, addon, status, in_grace)
        features.append(Feature(addon, source, enabled, reason))
    limit, limit_source = rate_limit_for(catalog, plan_id, rate_override)
    limits = catalog.plan(plan_id).limits
    ai_tokens: int = limits.ai_tokens
    ai_source: Source = "plan"
    if "aiTokens" in overrides:
        ai_tokens, ai_source = int(overrides["aiTokens"]), "override"
    included = {meter: price.included for meter, price in catalog.plan(plan_id).metered.items()}
    return Grant(
        plan=plan_id,
        status=status,
        features=tuple(features),
        rate_limit=limit,
        rate_limit_source=limit_source,
        ai_tokens=ai_tokens,
        ai_tokens_source=ai_source,
        storage_bytes=limits.storage_bytes,
        grace_until=grace_until,
        included=included,
    )
