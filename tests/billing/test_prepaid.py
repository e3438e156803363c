"""The AI token allowance: the quota verdict, prepaid overage from the wallet, the invoice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from novaza_gateway.billing.models import WalletEntry
from novaza_gateway.billing.prepaid import PREPAID_KIND, overage_charge, settle_ai
from novaza_gateway.billing.quota import QuotaBook
from novaza_gateway.core.metering import AI_TOKENS, dimensions
from tests.billing.conftest import Clock, trial_catalog
from tests.billing.test_invoices import close, period
from tests.conftest import Gateway, gateway_settings, start_gateway

ALLOWANCE = 1_000_000  # the starter plan's AI tokens per period (catalog.toml)


def use(gw: Gateway, tenant_id: str, tokens: int, kind: str = "completion") -> None:
    gw.app.state.billing.meter.record(
        tenant_id, AI_TOKENS, tokens, dimensions=dimensions(kind=kind, model="smollm2")
    )


async def flush(gw: Gateway) -> None:
    billing = gw.app.state.billing
    await billing.meter.flush(gw.app.state.db)
    await billing.settler()


async def credit(gw: Gateway, slug: str, amount: int) -> None:
    response = await gw.client.post(
        f"/admin/tenants/{slug}/wallet/credits",
        json={"amount": amount, "currency": "EUR"},
        headers={**gw.admin(), "Idempotency-Key": f"credit-{slug}-{amount}"},
    )
    assert response.status_code == 201, response.text


async def prepaid_entries(gw: Gateway, tenant_id: str) -> list[int]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(WalletEntry.amount)
            .where(WalletEntry.tenant_id == tenant_id, WalletEntry.kind == PREPAID_KIND)
            .order_by(WalletEntry.seq)
        )
        return list(rows.scalars())


def quota(gw: Gateway) -> QuotaBook:
    book: QuotaBook = gw.app.state.billing.quota
    book.max_age = 0.0  # every check reads the database: the tests move usage by hand
    return book


def test_overage_is_priced_past_the_allowance_only() -> None:
    from novaza_gateway.billing.catalog import MeteredPrice

    price = MeteredPrice.model_validate(
        {"model": "per_unit", "included": 1000, "unit_amount": 20, "unit_size": 100}
    )
    assert overage_charge(price, 1000, 900) == 0
    assert overage_charge(price, 1000, 1300) == 60  # 300 tokens past it: 3 x 20
    assert overage_charge(price, 2000, 2300) == 60  # allowance raised above `included`
    assert overage_charge(None, 1000, 5000) == 0


async def test_allowance_counts_unflushed_tokens_and_refuses_without_funds(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("clinic", plan="starter")
    book = quota(gw)
    first = await book.check(tenant["id"], AI_TOKENS)
    assert (first.allowed, first.allowance, first.used) == (True, ALLOWANCE, 0)
    assert first.resets_at == (await period(gw, tenant["id"]))[1]

    use(gw, tenant["id"], ALLOWANCE - 10, kind="prompt")
    await flush(gw)
    use(gw, tenant["id"], 9)  # recorded, not flushed: still counted
    verdict = await book.check(tenant["id"], AI_TOKENS)
    assert (verdict.allowed, verdict.used, verdict.remaining) == (True, ALLOWANCE - 1, 1)
    use(gw, tenant["id"], 1)
    refused = await book.check(tenant["id"], AI_TOKENS)
    assert (refused.allowed, refused.remaining, refused.prepaid_available) == (False, 0, 0)
    await flush(gw)
    assert (await book.check(tenant["id"], AI_TOKENS)).allowed is False
    assert await prepaid_entries(gw, tenant["id"]) == []  # nothing owed past the allowance yet


async def test_wallet_funds_prepay_overage_and_the_invoice_credits_it(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("clinic", plan="starter")
    await credit(gw, "clinic", 1_000)
    book = quota(gw)
    use(gw, tenant["id"], ALLOWANCE + 300_000)  # 3 x 100k past it at 20 cents: 60
    before = await book.check(tenant["id"], AI_TOKENS)
    assert before.allowed and before.prepaid_available == 1_000 - 60  # owed, not yet debited
    await flush(gw)
    assert await prepaid_entries(gw, tenant["id"]) == [-60]
    after = await book.check(tenant["id"], AI_TOKENS)
    assert after.allowed and after.prepaid_available == 940
    await gw.app.state.billing.settler()  # nothing new: no second debit
    use(gw, tenant["id"], 100_000)
    await flush(gw)
    assert await prepaid_entries(gw, tenant["id"]) == [-60, -20]

    clock.now = (await period(gw, tenant["id"]))[1]
    [invoice] = await close(gw, clock)
    lines = {line["kind"] + ":" + line.get("meter", ""): line for line in invoice.lines}
    assert lines["metered:ai_tokens"]["amount"] == 80
    assert lines["prepaid:"]["amount"] == -80
    assert invoice.total == 9900  # the base price; the AI overage was paid as it happened
    assert invoice.status == "open"  # 920 left in the wallet does not cover 9,900


async def test_funds_run_out_midway_then_the_rest_is_owed_on_the_invoice(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("clinic", plan="starter")
    await credit(gw, "clinic", 50)
    book = quota(gw)
    use(gw, tenant["id"], ALLOWANCE + 300_000)  # 60 owed, 50 in the wallet
    await flush(gw)
    assert await prepaid_entries(gw, tenant["id"]) == [-50]  # never below the floor
    verdict = await book.check(tenant["id"], AI_TOKENS)
    assert (verdict.allowed, verdict.prepaid_available) == (False, 0)

    clock.now = (await period(gw, tenant["id"]))[1]
    [invoice] = await close(gw, clock)
    lines = {line["kind"] + ":" + line.get("meter", ""): line for line in invoice.lines}
    assert (lines["metered:ai_tokens"]["amount"], lines["prepaid:"]["amount"]) == (60, -50)
    assert invoice.total == 9900 + 10


async def test_free_trial_caps_at_the_allowance_and_debits_nothing(
    tmp_path: Path, sqlite_url: str
) -> None:
    catalog = trial_catalog(tmp_path)
    settings = gateway_settings(tmp_path / "data", sqlite_url, billing_catalog=catalog)
    async for gw in start_gateway(settings):
        tenant = await gw.create_tenant("clinic", plan="starter")
        await credit(gw, "clinic", 10_000)
        use(gw, tenant["id"], ALLOWANCE + 500_000)
        await flush(gw)
        assert await prepaid_entries(gw, tenant["id"]) == []
        verdict = await quota(gw).check(tenant["id"], AI_TOKENS)
        assert (verdict.allowed, verdict.prepaid_available) == (False, 0)


async def test_concurrent_settlements_debit_once(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("clinic", plan="starter")
    await credit(gw, "clinic", 1_000)
    use(gw, tenant["id"], ALLOWANCE + 500_000)  # 100 owed
    await gw.app.state.billing.meter.flush(gw.app.state.db)
    entitlements = gw.app.state.billing.entitlements

    async def settle() -> Any:
        async with gw.app.state.db.session_scope() as session:
            return await settle_ai(session, entitlements, tenant["id"], clock.now)

    results = await asyncio.gather(*(settle() for _ in range(8)))
    assert sorted(results) == [0] * 7 + [100]
    assert await prepaid_entries(gw, tenant["id"]) == [-100]


async def test_other_meters_have_no_allowance(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("clinic", plan="starter")
    with pytest.raises(ValueError, match="no allowance"):
        await quota(gw).check(tenant["id"], "hl7_messages")


async def test_an_override_raises_the_allowance(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("clinic", plan="starter")
    use(gw, tenant["id"], ALLOWANCE + 1)
    await flush(gw)
    assert (await quota(gw).check(tenant["id"], AI_TOKENS)).allowed is False
    response = await gw.client.put(
        "/admin/tenants/clinic/entitlements/overrides",
        json={"aiTokens": 2 * ALLOWANCE},
        headers=gw.admin(),
    )
    assert response.status_code == 200, response.text
    verdict = await quota(gw).check(tenant["id"], AI_TOKENS)
    assert (verdict.allowed, verdict.allowance, verdict.used) == (
        True,
        2 * ALLOWANCE,
        ALLOWANCE + 1,
    )
