"""Catalogue, subscription and entitlement records as the API shows them."""

from __future__ import annotations

from datetime import datetime

from novaza_gateway.billing.catalog import Catalog, MeteredPrice
from novaza_gateway.billing.grants import Grant
from novaza_gateway.billing.models import Subscription
from novaza_gateway.billing.schemas import (
    AddonOut,
    AllowanceOut,
    EntitlementsOut,
    FeatureOut,
    LimitsOut,
    MeterBalance,
    MeteredPriceOut,
    Money,
    PlanList,
    PlanOut,
    RateLimitEntitlement,
    SubscriptionOut,
    TierOut,
)


def metered_price_out(catalog: Catalog, meter: str, price: MeteredPrice) -> MeteredPriceOut:
    described = catalog.meters[meter]
    out = MeteredPriceOut(
        meter=meter,
        meter_name=described.name,
        unit=described.unit,
        model=price.model,
        included=price.included,
    )
    match price.model:
        case "flat":
            out.flat_amount = price.flat_amount
        case "per_unit":
            out.unit_amount, out.unit_size = price.unit_amount, price.unit_size
        case "package":
            out.package_size, out.package_amount = price.package_size, price.package_amount
        case _:
            out.tiers = [
                TierOut(
                    up_to=t.up_to,
                    unit_amount=t.unit_amount,
                    unit_size=t.unit_size,
                    flat_amount=t.flat_amount,
                )
                for t in price.tiers
            ]
    return out


def plans_out(catalog: Catalog) -> PlanList:
    money = catalog.currency
    addons = [
        AddonOut(
            id=addon_id,
            name=a.name,
            description=a.description,
            price=Money(amount=a.price, currency=money),
            clinical=a.clinical,
        )
        for addon_id, a in sorted(catalog.addons.items())
    ]
    plans = []
    for plan_id, plan in catalog.plans.items():
        plans.append(
            PlanOut(
                id=plan_id,
                name=plan.name,
                description=plan.description,
                price=Money(amount=plan.price, currency=money),
                interval=catalog.interval,
                catalog_version=catalog.version,
                features=sorted(plan.addons_included),
                addons_available=[a for a in addons if a.id not in plan.addons_included],
                limits=LimitsOut(
                    requests_per_second=plan.limits.requests_per_second,
                    burst=plan.limits.burst,
                    ai_tokens_per_period=plan.limits.ai_tokens,
                    storage_bytes=plan.limits.storage_bytes,
                ),
                metered_prices=[
                    metered_price_out(catalog, meter, price)
                    for meter, price in sorted(plan.metered.items())
                ],
            )
        )
    return PlanList(data=plans, catalog_version=catalog.version)


def subscription_out(catalog: Catalog, sub: Subscription) -> SubscriptionOut:
    recurring = catalog.recurring_amount(sub.plan, frozenset(sub.addons or ()))
    return SubscriptionOut.model_validate(
        {
            "id": sub.id,
            "plan": sub.plan,
            "addons": list(sub.addons or []),
            "status": sub.status,
            "currency": sub.currency,
            "recurring_price": Money(amount=recurring, currency=sub.currency),
            "current_period_start": sub.current_period_start,
            "current_period_end": sub.current_period_end,
            "cancel_at": sub.cancel_at,
            "trial_end": sub.trial_end,
            "past_due_since": sub.past_due_since,
            "created_at": sub.created_at,
        }
    )


def entitlements_out(granted: Grant, used: dict[str, int], now: datetime) -> EntitlementsOut:
    balances = [
        MeterBalance(
            meter=meter,
            included=included,
            used=used.get(meter, 0),
            remaining=max(0, included - used.get(meter, 0)),
            source="plan",
        )
        for meter, included in sorted(granted.included.items())
    ]
    return EntitlementsOut(
        plan=granted.plan,
        subscription_status=granted.status,
        grace_until=granted.grace_until,
        features=[
            FeatureOut(addon=f.addon, enabled=f.enabled, source=f.source, reason=f.reason)
            for f in granted.features
        ],
        rate_limit=RateLimitEntitlement(
            requests_per_second=granted.rate_limit.rate_per_second,
            burst=granted.rate_limit.burst,
            source=granted.rate_limit_source,
        ),
        ai_tokens=AllowanceOut(value=granted.ai_tokens, source=granted.ai_tokens_source),
        storage_bytes=AllowanceOut(value=granted.storage_bytes, source="plan"),
        balances=balances,
        as_of=now,
    )
