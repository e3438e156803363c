"""``GET /usage``: totals and a time series per meter, from the flushed hourly rows."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import repository
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.models import UsageHourly
from novaza_gateway.billing.schemas import (
    DimensionTotal,
    MeterUsage,
    UsageOut,
    UsagePoint,
)
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.tenancy import TenantContext

Granularity = Literal["hour", "day", "month"]
MAX_POINTS = 5000


def bucket(at: datetime, granularity: Granularity) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return at
    at = at.replace(hour=0)
    return at if granularity == "day" else at.replace(day=1)


def _parse_dimensions(key: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in key.split(",") if "=" in part)


def _check_range(start: datetime, end: datetime, granularity: Granularity) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationFailed.field("from", "needs a timezone (RFC 3339, e.g. ...Z)")
    if end <= start:
        raise ValidationFailed.field("to", "must be after from")
    if granularity == "hour" and end - start > timedelta(hours=MAX_POINTS):
        raise ValidationFailed.field("granularity", f"hour covers at most {MAX_POINTS} hours")


async def hourly_rows(
    session: AsyncSession, tenant_id: str, start: datetime, end: datetime, meter: str | None
) -> list[tuple[str, str, datetime, int]]:
    query = select(
        UsageHourly.meter, UsageHourly.dimensions, UsageHourly.hour, UsageHourly.quantity
    ).where(
        UsageHourly.tenant_id == tenant_id,
        UsageHourly.hour >= bucket(start, "hour"),
        UsageHourly.hour < end,
    )
    if meter is not None:
        query = query.where(UsageHourly.meter == meter)
    result = await session.execute(query)
    return [(m, d, h, int(q)) for m, d, h, q in result.all()]


async def usage(
    session: AsyncSession,
    billing: BillingArea,
    tenant: TenantContext,
    *,
    start: datetime | None,
    end: datetime | None,
    granularity: Granularity,
    meter: str | None,
) -> UsageOut:
    catalog = billing.catalog
    if meter is not None and meter not in catalog.meters:
        raise ValidationFailed.field("meter", f"unknown meter; one of {', '.join(catalog.meters)}")
    now = billing.entitlements.clock()
    sub = await repository.get_subscription(session, tenant.id)
    period_start = sub.current_period_start if sub else bucket(now, "month")
    period_end = sub.current_period_end if sub else now
    start = start or period_start
    end = end or max(now, start + timedelta(hours=1))
    _check_range(start, end, granularity)
    rows = await hourly_rows(session, tenant.id, start, end, meter)
    this_period = await repository.usage_totals(session, tenant.id, period_start, period_end)
    series: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    by_dims: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row_meter, dims, hour, quantity in rows:
        series[row_meter][bucket(hour, granularity)] += quantity
        by_dims[row_meter][dims] += quantity
    plan = catalog.plan(sub.plan if sub else tenant.plan)
    meters = []
    for meter_id in [meter] if meter else list(catalog.meters):
        described = catalog.meters[meter_id]
        price = plan.metered.get(meter_id)
        included = price.included if price else 0
        used = this_period.get(meter_id, 0)
        points = series.get(meter_id, {})
        meters.append(
            MeterUsage(
                meter=meter_id,
                name=described.name,
                unit=described.unit,
                total=sum(points.values()),
                by_dimensions=[
                    DimensionTotal(dimensions=_parse_dimensions(k), total=v)
                    for k, v in sorted(by_dims.get(meter_id, {}).items())
                ],
                series=[UsagePoint(start=at, quantity=q) for at, q in sorted(points.items())],
                included=included,
                used_this_period=used,
                remaining=max(0, included - used),
            )
        )
    return UsageOut(
        start=start,
        end=end,
        granularity=granularity,
        period_start=period_start,
        period_end=period_end,
        meters=meters,
        as_of=now,
    )
