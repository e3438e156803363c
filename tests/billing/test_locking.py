"""Period closes, credits and floor changes for the same tenants at once: one lock order
(the wallet row, then the subscription row), so no deadlock on PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from novaza_gateway.billing.closing import close_due
from novaza_gateway.billing.models import Invoice, WalletEntry
from tests.billing.conftest import Clock
from tests.billing.test_transitions import subscription
from tests.billing.test_wallet import ledger_state
from tests.conftest import Gateway

TENANTS = 12


async def test_closes_racing_credits_do_not_deadlock(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    ids = []
    for n in range(TENANTS):
        ids.append((await gw.create_tenant(f"lock-{n}", plan="starter"))["id"])
    for n in range(TENANTS):
        funded = await gw.client.post(
            f"/admin/tenants/lock-{n}/wallet/credits",
            json={"amount": 10_000, "currency": "EUR"},  # covers one period: close pays
            headers=gw.admin(),
        )
        assert funded.status_code == 201
    clock.now = (await subscription(gw, ids[0])).current_period_end

    async def credit(n: int) -> int:
        response = await gw.client.post(
            f"/admin/tenants/lock-{n}/wallet/credits",
            json={"amount": 20_000, "currency": "EUR"},
            headers=gw.admin(),
        )
        return response.status_code

    async def lower_floor(n: int) -> int:
        response = await gw.client.put(
            f"/admin/tenants/lock-{n}/wallet/floor", json={"floor": -5000}, headers=gw.admin()
        )
        return response.status_code

    billing = gw.app.state.billing
    results = await asyncio.gather(
        close_due(gw.app.state.db, billing.catalog, clock.now),
        *(credit(n) for n in range(TENANTS)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert results[1:] == [201] * TENANTS
    floors = await asyncio.gather(*(lower_floor(n) for n in range(TENANTS)))
    assert floors == [200] * TENANTS
    async with gw.app.state.db.sessionmaker() as session:
        invoices = (await session.execute(select(Invoice))).scalars().all()
        payments = await session.execute(
            select(WalletEntry.reference, func.count())
            .where(WalletEntry.kind == "invoice_payment")
            .group_by(WalletEntry.reference)
        )
        paid_by_invoice = dict(payments.tuples().all())
    assert len(invoices) == TENANTS and {i.status for i in invoices} == {"paid"}
    assert paid_by_invoice == {i.id: 1 for i in invoices}
    for tenant_id in ids:
        balance, total, _ = await ledger_state(gw, tenant_id)
        assert balance == total == 10_000 + 20_000 - 9900
