"""The wallet floor: set by the platform, audited, and never crossed by concurrent debits
(also while it changes), on both stores."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from novaza_gateway.billing import wallet as ledger
from novaza_gateway.billing.errors import InsufficientFunds
from novaza_gateway.core.audit import AuditEvent
from tests.billing.conftest import Clock
from tests.billing.test_transitions import (
    STARTER,
    close_next_period,
    listed,
    subscription,
    uncollectible_url,
)
from tests.billing.test_wallet import ledger_state
from tests.conftest import Gateway


def floor_url(slug: str) -> str:
    return f"/admin/tenants/{slug}/wallet/floor"


async def floor_events(gw: Gateway, tenant_id: str) -> list[AuditEvent]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.action == "billing.wallet.floor")
            .order_by(AuditEvent.at)
        )
        return list(rows.scalars())


async def post(gw: Gateway, clock: Clock, tenant_id: str, key: str, amount: int) -> bool:
    kind = "top_up" if amount > 0 else "ai_usage"
    try:
        async with gw.app.state.db.session_scope() as session:
            await ledger.post(
                session,
                ledger.Posting(tenant_id, key, kind, amount, "EUR", kind),
                clock.now,
                wallet_currency="EUR",
            )
        return True
    except InsufficientFunds:
        return False


async def test_the_floor_is_set_shown_and_audited(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("trusted")
    put = await gw.client.put(floor_url("trusted"), json={"floor": -5000}, headers=gw.admin())
    assert put.status_code == 200, put.text  # the wallet did not exist yet: it does now
    assert put.json()["floor"] == {"amount": -5000, "currency": "EUR"}
    assert put.json()["balance"] == {"amount": 0, "currency": "EUR"}
    shown = await gw.client.get("/api/v1/billing/wallet", headers=gw.auth("trusted"))
    assert shown.json()["floor"] == {"amount": -5000, "currency": "EUR"}
    again = await gw.client.put(floor_url("trusted"), json={"floor": -5000}, headers=gw.admin())
    assert again.status_code == 200 and again.json() == put.json()
    [event] = await floor_events(gw, tenant["id"])  # the repeat changed nothing
    assert (event.actor, event.resource_type, event.resource_id) == (
        "admin-1",
        "wallet",
        tenant["id"],
    )
    assert event.before == {"floor": 0, "balance": 0, "entries": 0}
    assert event.after == {"floor": -5000, "balance": 0, "entries": 0}

    for bad in ({"floor": 1}, {"floor": 1.5}, {"floor": "lots"}, {}, {"floor": -(10**13)}):
        refused = await gw.client.put(floor_url("trusted"), json=bad, headers=gw.admin())
        assert refused.status_code == 422, bad
        assert refused.json()["code"] == "VALIDATION_FAILED"
    ghost = await gw.client.put(floor_url("ghost"), json={"floor": 0}, headers=gw.admin())
    assert ghost.status_code == 404
    as_tenant = await gw.client.put(
        floor_url("trusted"), json={"floor": -(10**9)}, headers=gw.auth("trusted")
    )
    assert as_tenant.status_code == 403
    back = await gw.client.put(floor_url("trusted"), json={"floor": 0}, headers=gw.admin())
    assert back.json()["floor"]["amount"] == 0
    assert len(await floor_events(gw, tenant["id"])) == 2


async def test_concurrent_debits_stop_exactly_at_a_negative_floor(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("in-credit")
    await gw.client.put(floor_url("in-credit"), json={"floor": -500}, headers=gw.admin())
    assert await post(gw, clock, tenant["id"], "seed", 1000)
    outcomes = await asyncio.gather(
        *(post(gw, clock, tenant["id"], f"ai-{n}", -30) for n in range(60))
    )
    assert sum(outcomes) == 50  # 50 x 30 = 1500 = 1000 + 500 of credit
    balance, total, entries = await ledger_state(gw, tenant["id"])
    assert balance == total == -500
    assert min(e.balance_after for e in entries) == -500
    wallet = (await gw.client.get("/api/v1/billing/wallet", headers=gw.auth("in-credit"))).json()
    assert wallet["balance"]["amount"] == -500


async def test_debits_racing_floor_changes_never_cross_the_floor_in_force(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("moving-floor")
    assert await post(gw, clock, tenant["id"], "seed", 1000)
    floors = [-400, -50, -700, -150, -10]  # each once, so the audit trail chains

    async def set_floor(value: int) -> None:
        response = await gw.client.put(
            floor_url("moving-floor"), json={"floor": value}, headers=gw.admin()
        )
        assert response.status_code == 200, response.text

    for wave, value in enumerate(floors):  # each change races a wave of debits and a credit
        await asyncio.gather(
            *(post(gw, clock, tenant["id"], f"ai-{wave}-{n}", -30) for n in range(12)),
            set_floor(value),
            *(post(gw, clock, tenant["id"], f"ai-{wave}-{n}", -30) for n in range(12, 24)),
            post(gw, clock, tenant["id"], f"top-up-{wave}", 300),
        )

    balance, total, entries = await ledger_state(gw, tenant["id"])
    assert balance == total
    events = {
        e.before["floor"]: e.after
        for e in await floor_events(gw, tenant["id"])
        if e.before and e.after
    }
    chain, current = [], 0
    while current in events:  # the changes in the order they took the wallet's lock
        chain.append(events[current])
        current = events[current]["floor"]
    assert sorted(c["floor"] for c in chain) == sorted(floors)
    assert [c["entries"] for c in chain] == sorted(c["entries"] for c in chain)
    debits = [entry for entry in entries if entry.amount < 0]
    assert 0 < len(debits) < len(floors) * 24  # some refused
    assert min(entry.balance_after for entry in debits) < 0  # the credit was used
    for entry in debits:  # (a credit may land below a floor raised above the balance)
        in_force = 0
        for change in chain:
            if change["entries"] < entry.seq:  # the change came before this posting
                in_force = change["floor"]
        assert entry.balance_after >= in_force, (entry.seq, entry.balance_after, in_force)


async def test_a_lower_floor_pays_open_invoices_not_written_off_ones(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("credit-line", plan="starter")
    [written_off] = await close_next_period(gw, clock, tenant["id"])
    marked = await gw.client.post(
        uncollectible_url("credit-line", written_off.id), headers=gw.admin()
    )
    assert marked.status_code == 200
    [owed] = await close_next_period(gw, clock, tenant["id"])
    assert (await subscription(gw, tenant["id"])).status == "past_due"
    too_little = await gw.client.put(
        floor_url("credit-line"), json={"floor": -5000}, headers=gw.admin()
    )
    assert too_little.json()["balance"]["amount"] == 0
    assert (await listed(gw, "credit-line", owed.id))["status"] == "open"
    enough = await gw.client.put(
        floor_url("credit-line"), json={"floor": -100_000}, headers=gw.admin()
    )
    assert enough.status_code == 200, enough.text
    assert enough.json()["balance"]["amount"] == -STARTER
    assert enough.json()["transactions"][0]["kind"] == "invoice_payment"
    assert (await listed(gw, "credit-line", owed.id))["status"] == "paid"
    assert (await listed(gw, "credit-line", written_off.id))["status"] == "uncollectible"
    assert (await subscription(gw, tenant["id"])).status == "active"
