"""Billing queries. Every query is scoped by the ``tenant_id`` it is given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing.models import (
    CatalogVersion,
    Invoice,
    PendingItem,
    Subscription,
    UsageHourly,
    UsageRecord,
)


async def get_subscription(
    session: AsyncSession, tenant_id: str, *, for_update: bool = False
) -> Subscription | None:
    """With ``for_update``, the row is locked first by a no-op UPDATE: a row lock on
    PostgreSQL, the database write lock on SQLite (where ``FOR UPDATE`` does nothing), so
    what is read next is current and stays so until the transaction ends."""
    query = select(Subscription).where(Subscription.tenant_id == tenant_id)
    if for_update:
        await session.execute(
            update(Subscription)
            .where(Subscription.tenant_id == tenant_id)
            .values(updated_at=Subscription.updated_at)
            .execution_options(synchronize_session=False)
        )
        query = query.with_for_update().execution_options(populate_existing=True)
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
        .where(Subscription.current_period_end <= now, Subscription.status != "canceled")
        .order_by(Subscription.current_period_end)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def usage_totals(
    session: AsyncSession, tenant_id: str, start: datetime, end: datetime
) -> dict[str, int]:
    """Quantity per meter recorded for hours in ``[start, end)`` (from the hourly rollup)."""
    query = (
        select(UsageHourly.meter, func.sum(UsageHourly.quantity))
        .where(
            UsageHourly.tenant_id == tenant_id,
            UsageHourly.hour >= start,
            UsageHourly.hour < end,
        )
        .group_by(UsageHourly.meter)
    )
    return {meter: int(total) for meter, total in (await session.execute(query)).all()}


async def uninvoiced_usage(
    session: AsyncSession, tenant_id: str, before: datetime
) -> list[tuple[str, datetime, int]]:
    """Usage not yet on an invoice for hours before ``before``, per meter and hour."""
    query = (
        select(UsageRecord.meter, UsageRecord.hour, func.sum(UsageRecord.quantity))
        .where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.invoice_id.is_(None),
            UsageRecord.hour < before,
        )
        .group_by(UsageRecord.meter, UsageRecord.hour)
        .order_by(UsageRecord.hour)
    )
    return [(m, h, int(q)) for m, h, q in (await session.execute(query)).all()]


async def invoiced_quantity(
    session: AsyncSession, tenant_id: str, meter: str, start: datetime, end: datetime
) -> int:
    query = select(func.coalesce(func.sum(UsageRecord.quantity), 0)).where(
        UsageRecord.tenant_id == tenant_id,
        UsageRecord.meter == meter,
        UsageRecord.invoice_id.is_not(None),
        UsageRecord.hour >= start,
        UsageRecord.hour < end,
    )
    return int((await session.execute(query)).scalar_one())


async def invoice_covering(session: AsyncSession, tenant_id: str, at: datetime) -> Invoice | None:
    query = (
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.period_start <= at, Invoice.period_end > at)
        .order_by(Invoice.number)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def open_invoices(session: AsyncSession, tenant_id: str) -> Sequence[Invoice]:
    query = (
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.status == "open")
        .order_by(Invoice.number)
    )
    return (await session.execute(query)).scalars().all()


async def uncollectible_invoices(session: AsyncSession, tenant_id: str) -> Sequence[Invoice]:
    query = (
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.status == "uncollectible")
        .order_by(Invoice.number)
    )
    return (await session.execute(query)).scalars().all()


async def get_invoice(
    session: AsyncSession, tenant_id: str, invoice_id: str, *, for_update: bool = False
) -> Invoice | None:
    query = select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def invoice_page(
    session: AsyncSession, tenant_id: str, *, before_number: int | None, limit: int
) -> Sequence[Invoice]:
    query = (
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id)
        .order_by(Invoice.number.desc())
        .limit(limit)
    )
    if before_number is not None:
        query = query.where(Invoice.number < before_number)
    return (await session.execute(query)).scalars().all()


async def mark_catalog_used(session: AsyncSession, version: str, now: datetime) -> None:
    await session.execute(
        update(CatalogVersion)
        .where(CatalogVersion.version == version, CatalogVersion.used_at.is_(None))
        .values(used_at=now)
    )


async def get_catalog_version(session: AsyncSession, version: str) -> CatalogVersion | None:
    return await session.get(CatalogVersion, version)
