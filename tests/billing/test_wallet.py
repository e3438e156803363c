"""The wallet: idempotent credits, concurrent debits never below the floor, on both stores."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from novaza_gateway.billing import wallet as ledger
from novaza_gateway.billing.errors import InsufficientFunds
from novaza_gateway.billing.models import Wallet, WalletEntry
from tests.billing.conftest import Clock
from tests.conftest import Gateway

CREDIT = {"amount": 5000, "currency": "EUR", "description": "Top-up by bank transfer"}


def credits_url(slug: str) -> str:
    return f"/admin/tenants/{slug}/wallet/credits"


async def ledger_state(gw: Gateway, tenant_id: str) -> tuple[int, int, list[WalletEntry]]:
    async with gw.app.state.db.sessionmaker() as session:
        wallet = await session.get(Wallet, tenant_id)
        rows = await session.execute(
            select(WalletEntry).where(WalletEntry.tenant_id == tenant_id).order_by(WalletEntry.seq)
        )
        entries = list(rows.scalars())
        total = await session.scalar(
            select(func.coalesce(func.sum(WalletEntry.amount), 0)).where(
                WalletEntry.tenant_id == tenant_id
            )
        )
    return (wallet.balance if wallet else 0), int(total or 0), entries


async def test_credit_with_a_key_answers_the_same_twice(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("topup")
    headers = {**gw.admin(), "Idempotency-Key": "bank-ref-001"}
    first = await gw.client.post(credits_url("topup"), json=CREDIT, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["balance"] == {"amount": 5000, "currency": "EUR"}
    again = await gw.client.post(credits_url("topup"), json=CREDIT, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await gw.client.post(
        credits_url("topup"), json={**CREDIT, "amount": 6000}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    balance, total, entries = await ledger_state(gw, tenant["id"])
    assert balance == total == 5000 and len(entries) == 1

    wallet = await gw.client.get("/api/v1/billing/wallet", headers=gw.auth("topup"))
    assert wallet.status_code == 200
    body = wallet.json()
    assert body["balance"] == {"amount": 5000, "currency": "EUR"}
    assert body["floor"] == {"amount": 0, "currency": "EUR"}
    [txn] = body["transactions"]
    assert txn["kind"] == "top_up" and txn["amount"] == 5000 and txn["balanceAfter"] == 5000


async def test_credit_refusals(billed_lite: tuple[Gateway, Clock]) -> None:
    gw, _ = billed_lite
    await gw.create_tenant("refuse")
    wrong_currency = await gw.client.post(
        credits_url("refuse"), json={**CREDIT, "currency": "USD"}, headers=gw.admin()
    )
    assert wrong_currency.status_code == 422
    assert wrong_currency.json()["code"] == "CURRENCY_MISMATCH"
    for bad in [{**CREDIT, "amount": 0}, {**CREDIT, "amount": 1.5}, {"amount": 10}]:
        response = await gw.client.post(credits_url("refuse"), json=bad, headers=gw.admin())
        assert response.status_code == 422, bad
    ghost = await gw.client.post(credits_url("ghost"), json=CREDIT, headers=gw.admin())
    assert ghost.status_code == 404
    tenant_token = await gw.client.post(
        credits_url("refuse"), json=CREDIT, headers=gw.auth("refuse")
    )
    assert tenant_token.status_code == 403


async def test_200_concurrent_same_key_credits_make_one_entry(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("stampede")
    headers = {**gw.admin(), "Idempotency-Key": "retry-storm"}
    responses = await asyncio.gather(
        *(gw.client.post(credits_url("stampede"), json=CREDIT, headers=headers) for _ in range(200))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["entry"]["id"] for r in responses}) == 1
    balance, total, entries = await ledger_state(gw, tenant["id"])
    assert len(entries) == 1
    assert balance == total == 5000


async def test_concurrent_debits_never_cross_the_floor(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("spender")
    db = gw.app.state.db
    async with db.session_scope() as session:
        await ledger.post(
            session,
            ledger.Posting(tenant["id"], "seed", "top_up", 1000, "EUR", "seed"),
            clock.now,
            wallet_currency="EUR",
        )

    async def debit(n: int) -> bool:
        try:
            async with db.session_scope() as session:
                await ledger.post(
                    session,
                    ledger.Posting(tenant["id"], f"ai-{n}", "ai_usage", -30, "EUR", "AI tokens"),
                    clock.now,
                    wallet_currency="EUR",
                )
            return True
        except InsufficientFunds:
            return False

    outcomes = await asyncio.gather(*(debit(n) for n in range(60)))
    assert sum(outcomes) == 33  # 33 x 30 = 990 <= 1000; the 34th would cross 0
    balance, total, entries = await ledger_state(gw, tenant["id"])
    assert balance == total == 10
    assert min(e.balance_after for e in entries) >= 0
    assert [e.seq for e in entries] == list(range(1, 35))
    with pytest.raises(InsufficientFunds):
        async with db.session_scope() as session:
            await ledger.post(
                session,
                ledger.Posting(tenant["id"], "too-much", "ai_usage", -11, "EUR", "x"),
                clock.now,
                wallet_currency="EUR",
            )
