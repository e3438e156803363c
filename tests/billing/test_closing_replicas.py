"""Period closing with three replicas on one store (each its own connection pool): one
replica's scheduler closes each ended period once; when it dies holding the lease another
takes over after the lease; and even schedulers that overlap (a holder stalled past its
lease) issue one invoice per period."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from novaza_gateway.billing.closing import CLOSE_LEASE, PeriodScheduler, close_due
from novaza_gateway.billing.models import Invoice
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.core.leases import Leases
from tests.billing.conftest import Clock
from tests.billing.test_invoices import period
from tests.conftest import Gateway


@pytest.fixture
async def three(billed: tuple[Gateway, Clock]) -> AsyncIterator[list[PeriodScheduler]]:
    gw, clock = billed
    catalog = gw.app.state.billing.catalog
    schedulers = []
    for n in range(3):
        db = Database(create_engine(gw.settings.sqlalchemy_url))
        leases = Leases(db, holder=f"replica-{n}")
        schedulers.append(PeriodScheduler(db, catalog, clock, 60, None, leases))
    yield schedulers
    for scheduler in schedulers:
        await scheduler.db.dispose()


async def ended_periods(gw: Gateway, clock: Clock, tenants: int) -> list[str]:
    ids = [(await gw.create_tenant(f"site-{n}", plan="starter"))["id"] for n in range(tenants)]
    ends = [(await period(gw, tenant_id))[1] for tenant_id in ids]
    clock.now = max(ends)
    return ids


async def invoices_per_tenant(gw: Gateway) -> dict[str, int]:
    async with gw.app.state.db.sessionmaker() as session:
        query = select(Invoice.tenant_id, func.count()).group_by(Invoice.tenant_id)
        return {tenant: int(n) for tenant, n in (await session.execute(query)).all()}


async def test_one_of_three_replicas_closes_each_period_once(
    billed: tuple[Gateway, Clock], three: list[PeriodScheduler]
) -> None:
    gw, clock = billed
    ids = await ended_periods(gw, clock, 4)
    closed = await asyncio.gather(*(s.run_once() for s in three))
    assert sorted(len(c) for c in closed) == [0, 0, 4]
    assert await invoices_per_tenant(gw) == {tenant_id: 1 for tenant_id in ids}
    assert [len(c) for c in await asyncio.gather(*(s.run_once() for s in three))] == [0, 0, 0]


async def test_when_the_holder_dies_another_replica_closes_after_the_lease(
    billed: tuple[Gateway, Clock], three: list[PeriodScheduler]
) -> None:
    gw, clock = billed
    ids = await ended_periods(gw, clock, 2)
    dead = three[0]
    assert await dead.leases.acquire(CLOSE_LEASE, 0.5)  # its last renewal, then it died
    survivors = three[1:]
    assert [len(c) for c in await asyncio.gather(*(s.run_once() for s in survivors))] == [0, 0]
    await asyncio.sleep(0.6)
    closed = await asyncio.gather(*(s.run_once() for s in survivors))
    assert sorted(len(c) for c in closed) == [0, 2]
    assert await invoices_per_tenant(gw) == {tenant_id: 1 for tenant_id in ids}


async def test_overlapping_closers_still_issue_one_invoice_per_period(
    billed: tuple[Gateway, Clock], three: list[PeriodScheduler]
) -> None:
    gw, clock = billed
    ids = await ended_periods(gw, clock, 3)
    catalog = gw.app.state.billing.catalog
    closed = await asyncio.gather(*(close_due(s.db, catalog, clock.now) for s in three))
    assert sum(len(c) for c in closed) == 3
    assert await invoices_per_tenant(gw) == {tenant_id: 1 for tenant_id in ids}
