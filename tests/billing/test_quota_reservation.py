"""Reservations against the AI token allowance (ADR 0041): what this process holds for
requests in progress counts as used, the wallet pays past the allowance, a release happens
once, a reservation never released lapses, and a cached snapshot answers without a query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from novaza_gateway.billing.catalog import MeteredPrice
from novaza_gateway.billing.prepaid import overage_charge
from novaza_gateway.billing.quota import QuotaBook, _Snapshot, consumable
from novaza_gateway.core.metering import AI_TOKENS
from tests.billing.conftest import Clock
from tests.billing.test_prepaid import ALLOWANCE, credit, flush, quota, use
from tests.conftest import Gateway

HOLD = 180.0


async def reserve(
    book: QuotaBook, tenant_id: str, quantity: int, minimum: int | None = None
) -> Any:
    return await book.reserve(
        tenant_id,
        AI_TOKENS,
        quantity,
        minimum=quantity if minimum is None else minimum,
        ttl_seconds=HOLD,
    )


async def test_reservations_count_against_later_ones(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = (await gw.create_tenant("clinic", plan="starter"))["id"]
    book = quota(gw)
    use(gw, tenant, ALLOWANCE - 100)
    await flush(gw)

    first = await reserve(book, tenant, 80)
    assert (first.granted, first.available, first.verdict.remaining) == (80, 80, 100)
    second = await reserve(book, tenant, 80)  # the first holds 80 of the last 100
    assert (second.granted, second.available) == (0, 20)
    third = await reserve(book, tenant, 80, minimum=10)  # may be lowered: gets the 20 left
    assert (third.granted, third.available) == (20, 20)
    assert book.outstanding(tenant) == 100
    assert (await reserve(book, tenant, 1)).granted == 0

    use(gw, tenant, 50)  # the first request ends having used 50 of its 80 ...
    book.release(first)  # ... and gives its reservation back
    book.release(first)  # once: a second release gives nothing more back
    assert book.outstanding(tenant) == 20
    fourth = await reserve(book, tenant, 40)
    assert fourth.granted == 0 and fourth.available == 30  # 100 - 50 used - 20 held
    book.release(second)  # never granted: nothing held, nothing given back
    book.release(third)
    assert book.outstanding(tenant) == 0


async def test_concurrent_reservations_share_the_last_tokens(billed: tuple[Gateway, Clock]) -> None:
    """Each reservation loads the period afresh (an await) before it holds: the holding itself
    must see the others."""
    gw, _ = billed
    tenant = (await gw.create_tenant("clinic", plan="starter"))["id"]
    book = quota(gw)
    use(gw, tenant, ALLOWANCE - 100)
    await flush(gw)
    granted = await asyncio.gather(*(reserve(book, tenant, 30) for _ in range(8)))
    assert sorted(r.granted for r in granted) == [0] * 5 + [30] * 3
    assert book.outstanding(tenant) == 90


async def test_the_wallet_pays_past_the_allowance_until_it_cannot(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    tenant = (await gw.create_tenant("clinic", plan="starter"))["id"]
    book = quota(gw)
    use(gw, tenant, ALLOWANCE)
    await flush(gw)
    assert (await reserve(book, tenant, 100)).available == 0  # no funds: nothing past it

    await credit(gw, "clinic", 1)  # 20 per 100,000 tokens, rounded: 1 cent pays 7,499
    too_many = await reserve(book, tenant, 10_000)
    assert (too_many.granted, too_many.available) == (0, 7_499)
    held = await reserve(book, tenant, 5_000)
    assert held.granted == 5_000 and held.verdict.prepaid_available == 1
    rest = await reserve(book, tenant, 5_000, minimum=100)
    assert rest.granted == 2_499
    assert (await reserve(book, tenant, 1)).granted == 0
    assert overage_charge(book._snapshots[tenant].price, ALLOWANCE, ALLOWANCE + 7_499) == 1
    book.release(held)
    book.release(rest)

    use(gw, tenant, 7_500)  # used past what the cent pays: the wallet is spent
    await flush(gw)
    refused = await reserve(book, tenant, 1)
    assert (refused.granted, refused.verdict.allowed) == (0, False)


async def test_a_cached_snapshot_reserves_without_a_query(
    billed_lite: tuple[Gateway, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, _ = billed_lite
    tenant = (await gw.create_tenant("clinic", plan="starter"))["id"]
    book: QuotaBook = gw.app.state.billing.quota
    book.max_age = 3600.0
    loads = 0
    load = book._load

    async def counted(tenant_id: str) -> Any:
        nonlocal loads
        loads += 1
        return await load(tenant_id)

    monkeypatch.setattr(book, "_load", counted)
    for _ in range(50):
        book.release(await reserve(book, tenant, 300))
    assert loads == 1
    use(gw, tenant, 10)
    await flush(gw)  # a flush moves usage into the table: the next one reloads, once
    for _ in range(5):
        book.release(await reserve(book, tenant, 300))
    assert loads == 2


async def test_a_reservation_never_released_lapses(
    billed_lite: tuple[Gateway, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    gw, _ = billed_lite
    tenant = (await gw.create_tenant("clinic", plan="starter"))["id"]
    book = quota(gw)
    now = [1000.0]
    book.monotonic = lambda: now[0]
    await reserve(book, tenant, 500)
    assert book.outstanding(tenant) == 500
    now[0] += HOLD + 1
    assert book.outstanding(tenant) == 0
    assert "expired unreleased" in caplog.text


def snapshot(price: MeteredPrice | None, available: int, prepaid: int = 0) -> _Snapshot:
    return _Snapshot(
        allowance=1_000,
        used=0,
        available=available,
        prepaid=prepaid,
        price=price,
        resets_at=datetime(2030, 1, 1, tzinfo=UTC),
        generation=0,
        loaded=0.0,
    )


@pytest.mark.parametrize(
    "price",
    [
        {"model": "per_unit", "included": 1_000, "unit_amount": 7, "unit_size": 10},
        {
            "model": "graduated",
            "included": 0,
            "tiers": [
                {"up_to": 1_100, "unit_amount": 1, "unit_size": 1},
                {"up_to": None, "unit_amount": 5, "unit_size": 1, "flat_amount": 30},
            ],
        },
    ],
)
def test_consumable_is_the_most_the_wallet_pays_for(price: dict[str, Any]) -> None:
    metered = MeteredPrice.model_validate(price)
    for available, prepaid, used in [(40, 0, 900), (40, 0, 1_050), (300, 20, 1_020), (0, 0, 990)]:
        snap = snapshot(metered, available, prepaid)
        expected = max(1_000 - used, 0)
        if available > 0:
            while overage_charge(metered, 1_000, used + expected + 1) - prepaid <= available:
                expected += 1
                if expected == 5_000:
                    break
        assert consumable(snap, used, 5_000) == expected, (available, prepaid, used)
        assert consumable(snap, used, 3) == min(expected, 3)
    assert consumable(snapshot(None, 10**6), 990, 100) == 10  # no price: the allowance only
