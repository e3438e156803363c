"""Subscriptions follow tenant administration; a mid-period change is prorated.

A plan with ``trial_days`` starts ``trialing``: the first period ends with the trial, is
invoiced at zero, and billing periods are anchored on the trial's end from then on.

A plan or add-on change at time ``t`` credits the unused share of the old recurring amount
(base + bought add-ons) and charges the same share of the new one; both wait as pending
items for the next invoice. Nothing here commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import repository
from novaza_gateway.billing.catalog import Catalog
from novaza_gateway.billing.models import PendingItem, Subscription
from novaza_gateway.billing.periods import add_months
from novaza_gateway.billing.pricing import prorate
from novaza_gateway.core.entitlements import PlanChoice


def _describe(catalog: Catalog, plan: str, addons: frozenset[str]) -> str:
    names = [catalog.plan(plan).name, *(catalog.addons[a].name for a in sorted(addons))]
    return " + ".join(names)


def _pending(
    sub: Subscription, kind: str, description: str, amount: int, now: datetime
) -> PendingItem:
    return PendingItem(
        id=str(uuid.uuid4()),
        tenant_id=sub.tenant_id,
        kind=kind,
        description=description,
        amount=amount,
        currency=sub.currency,
        created_at=now,
    )


def start(catalog: Catalog, choice: PlanChoice, now: datetime) -> Subscription:
    """Periods start on the hour, so every hourly usage bucket falls inside one period."""
    begins = now.replace(minute=0, second=0, microsecond=0)
    trial_days = catalog.plan(choice.plan).trial_days
    trial_end = begins + timedelta(days=trial_days) if trial_days else None
    return Subscription(
        id=str(uuid.uuid4()),
        tenant_id=choice.tenant_id,
        plan=choice.plan,
        addons=sorted(choice.addons),
        status="trialing" if trial_end else "active",
        currency=catalog.currency,
        current_period_start=begins,
        current_period_end=trial_end or add_months(begins),
        trial_end=trial_end,
        overrides={},
        created_at=now,
        updated_at=now,
    )


def proration_items(
    catalog: Catalog, sub: Subscription, choice: PlanChoice, now: datetime
) -> list[PendingItem]:
    old_addons = frozenset(sub.addons or ())
    old = catalog.recurring_amount(sub.plan, old_addons)
    new = catalog.recurring_amount(choice.plan, choice.addons)
    if old == new:
        return []
    start_, end = sub.current_period_start, sub.current_period_end
    until = f"until {end.date().isoformat()}"
    return [
        _pending(
            sub,
            "proration",
            f"Unused time on {_describe(catalog, sub.plan, old_addons)} {until}",
            -prorate(old, start_, end, now),
            now,
        ),
        _pending(
            sub,
            "proration",
            f"Remaining time on {_describe(catalog, choice.plan, choice.addons)} {until}",
            prorate(new, start_, end, now),
            now,
        ),
    ]


async def follow(
    session: AsyncSession, catalog: Catalog, choice: PlanChoice, now: datetime
) -> Subscription:
    """Create the tenant's subscription, or bring it to the chosen plan and add-ons."""
    sub = await repository.get_subscription(session, choice.tenant_id, for_update=True)
    if sub is None:
        sub = start(catalog, choice, now)
        session.add(sub)
        return sub
    if sub.plan == choice.plan and frozenset(sub.addons or ()) == choice.addons:
        return sub
    if sub.status != "trialing":  # a trial is free whatever the plan: nothing to prorate
        for item in proration_items(catalog, sub, choice, now):
            session.add(item)
    sub.plan = choice.plan
    sub.addons = sorted(choice.addons)
    sub.updated_at = now
    return sub


async def cancel_at_period_end(session: AsyncSession, tenant_id: str, now: datetime) -> None:
    """No proration: the period in progress is invoiced as usual, then nothing more."""
    sub = await repository.get_subscription(session, tenant_id, for_update=True)
    if sub is None or sub.status == "canceled" or sub.cancel_at is not None:
        return
    sub.cancel_at = sub.current_period_end
    sub.updated_at = now
