"""Billing queries. Every query is scoped by the ``tenant_id`` it is given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing.models import PendingItem, Subscription, UsageRecord


async def get_subscription(
    session: AsyncSession, tenant_id: str, *, for_update: bool = False
) -> Subscription | None:
    query = select(Subscription).where(Subscription.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def open_pending_items(session: AsyncSession, tenant_id: str) -> Sequence[PendingItem]:
    query = (
        select(PendingItem)
        .where(PendingItem.tenant_id == tenant_id, PendingItem.invoice_id.is_(None))
        .order_by(PendingItem.created_at, PendingItem.id)
    )
    return (await session.execute(query)).scalars().all()


async def subscriptions_due(session: AsyncSession, now: datetime, limit: int) -> Sequence[str]:
    """Tenant ids whose current period has ended (the scheduler's work list)."""
    query = (
        select(Subscription.tenant_id)
        .where(Subscription.current_period_end <= now)
        .order_by(Subscription.current_period_end)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def usage_totals(
    session: AsyncSession, tenant_id: str, start: datetime, end: datetime
) -> dict[str, int]:
    """Quantity per meter recorded for hours in ``[start, end)``."""
    query = (
        select(UsageRecord.meter, func.sum(UsageRecord.quantity))
        .where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.hour >= _hour(start),
            UsageRecord.hour < end,
        )
        .group_by(UsageRecord.meter)
    )
    return {meter: int(total) for meter, total in (await session.execute(query)).all()}


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)
