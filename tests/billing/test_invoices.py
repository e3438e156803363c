"""Period close, invoice lines and totals, wallet payment, late usage, numbering, the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from novaza_gateway.billing.catalog import load_catalog, parse_catalog
from novaza_gateway.billing.closing import close_due, register_catalog
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.models import Subscription
from novaza_gateway.config import ConfigurationError
from novaza_gateway.core.metering import dimensions
from tests.billing.conftest import BUILTIN, Clock, trial_catalog
from tests.conftest import Gateway, gateway_settings, start_gateway


async def period(gw: Gateway, tenant_id: str) -> tuple[datetime, datetime]:
    async with gw.app.state.db.sessionmaker() as session:
        sub = (
            await session.execute(select(Subscription).where(Subscription.tenant_id == tenant_id))
        ).scalar_one()
        return sub.current_period_start, sub.current_period_end


async def record_at(gw: Gateway, at: datetime, tenant_id: str, meter: str, quantity: int) -> None:
    usage = UsageMeter(clock=lambda: at.timestamp())
    usage.record(tenant_id, meter, quantity, dimensions=dimensions(area="imaging"))
    await usage.flush(gw.app.state.db)


async def close(gw: Gateway, clock: Clock) -> list[Any]:
    billing = gw.app.state.billing
    return await close_due(gw.app.state.db, billing.catalog, clock.now)


async def invoices(gw: Gateway, slug: str, **params: Any) -> dict[str, Any]:
    response = await gw.client.get("/api/v1/billing/invoices", params=params, headers=gw.auth(slug))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_period_close_issues_an_invoice_and_the_tenant_goes_past_due(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("hospital", plan="professional", addons=["medical_imaging"])
    start, end = await period(gw, tenant["id"])
    await record_at(gw, start, tenant["id"], "api_requests", 2_500_000)
    await record_at(gw, start, tenant["id"], "hl7_messages", 215_000)
    assert await close(gw, clock) == []  # nothing has ended yet
    clock.now = end
    [invoice] = await close(gw, clock)
    assert invoice.number == 1 and invoice.status == "open"
    lines = {line["kind"] + ":" + line.get("meter", ""): line for line in invoice.lines}
    assert lines["base:"]["amount"] == 49900
    assert lines["addon:"]["amount"] == 49900
    api = lines["metered:api_requests"]
    assert (api["quantity"], api["amount"], api["unitAmount"]) == (500_000, 4000, "0.008")
    assert lines["metered:hl7_messages"]["amount"] == 1000  # 15,000 over: two 10k packages
    assert lines["metered:stored_instances"]["amount"] == 0
    assert invoice.subtotal == invoice.total == 49900 + 49900 + 4000 + 1000

    body = (
        await gw.client.get("/api/v1/billing/subscriptions", headers=gw.auth("hospital"))
    ).json()
    [sub] = body["data"]
    assert sub["status"] == "past_due"
    assert (await period(gw, tenant["id"]))[0] == end
    # clinical add-ons stay on during the grace period
    ent = (await gw.client.get("/api/v1/billing/entitlements", headers=gw.auth("hospital"))).json()
    assert {f["addon"]: f["enabled"] for f in ent["features"]}["medical_imaging"] is True

    # a top-up that covers the invoice pays it and reactivates the subscription
    topped = await gw.client.post(
        "/admin/tenants/hospital/wallet/credits",
        json={"amount": 200_000, "currency": "EUR"},
        headers={**gw.admin(), "Idempotency-Key": "wire-77"},
    )
    assert topped.status_code == 201, topped.text
    replayed = await gw.client.post(
        "/admin/tenants/hospital/wallet/credits",
        json={"amount": 200_000, "currency": "EUR"},
        headers={**gw.admin(), "Idempotency-Key": "wire-77"},
    )
    assert replayed.json() == topped.json()  # the same answer after the credit paid an invoice
    assert topped.json()["balance"]["amount"] == 200_000
    listed = await invoices(gw, "hospital")
    issued = [i for i in listed["data"] if i["id"] != "upcoming"]
    assert issued[0]["status"] == "paid"
    assert issued[0]["amountPaidWallet"] == invoice.total and issued[0]["amountDue"] == 0
    wallet = (await gw.client.get("/api/v1/billing/wallet", headers=gw.auth("hospital"))).json()
    assert wallet["balance"]["amount"] == 200_000 - invoice.total
    assert wallet["transactions"][0]["kind"] == "invoice_payment"
    body = (
        await gw.client.get("/api/v1/billing/subscriptions", headers=gw.auth("hospital"))
    ).json()
    assert body["data"][0]["status"] == "active"


async def test_wallet_pays_at_close_and_numbers_are_sequential(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("prepaid", plan="starter")
    other = await gw.create_tenant("neighbour", plan="starter")
    await gw.client.post(
        "/admin/tenants/prepaid/wallet/credits",
        json={"amount": 100_000, "currency": "EUR"},
        headers=gw.admin(),
    )
    numbers = []
    for _ in range(3):
        _, end = await period(gw, tenant["id"])
        clock.now = end
        closed = await close(gw, clock)
        numbers += [i.number for i in closed if i.tenant_id == tenant["id"]]
        assert all(i.status == "paid" for i in closed if i.tenant_id == tenant["id"])
    assert numbers == [1, 2, 3]
    wallet = (await gw.client.get("/api/v1/billing/wallet", headers=gw.auth("prepaid"))).json()
    assert wallet["balance"]["amount"] == 100_000 - 3 * 9900

    first = await invoices(gw, "prepaid", limit=2)
    assert first["data"][0]["id"] == "upcoming" and first["data"][0]["status"] == "draft"
    assert [i["number"] for i in first["data"][1:]] == [3, 2]
    second = await invoices(gw, "prepaid", limit=2, cursor=first["nextCursor"])
    assert [i["number"] for i in second["data"]] == [1]
    assert second["nextCursor"] is None
    one = second["data"][0]
    got = await gw.client.get(f"/api/v1/billing/invoices/{one['id']}", headers=gw.auth("prepaid"))
    assert got.status_code == 200 and got.json() == one
    foreign = await gw.client.get(
        f"/api/v1/billing/invoices/{one['id']}", headers=gw.auth("neighbour")
    )
    assert foreign.status_code == 404 and foreign.json()["code"] == "INVOICE_NOT_FOUND"
    neighbour = await invoices(gw, "neighbour")
    assert [i["number"] for i in neighbour["data"][1:]] == [3, 2, 1]  # its own sequence
    assert other["id"] != tenant["id"]


async def test_late_usage_becomes_an_adjustment_on_the_next_invoice(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("late-usage", plan="starter")
    start, end = await period(gw, tenant["id"])
    await record_at(gw, start, tenant["id"], "api_requests", 600_000)  # 500k over included
    clock.now = end
    [first] = await close(gw, clock)
    api = next(line for line in first.lines if line.get("meter") == "api_requests")
    assert api["amount"] == 5000  # 500,000 at 10 per 1000
    # usage for the closed period arrives after the invoice was issued
    await record_at(gw, start, tenant["id"], "api_requests", 100_000)
    upcoming = await gw.client.get(
        "/api/v1/billing/invoices/upcoming", headers=gw.auth("late-usage")
    )
    assert upcoming.status_code == 200
    late_draft = [ln for ln in upcoming.json()["lines"] if ln["kind"] == "late_usage"]
    assert [ln["amount"] for ln in late_draft] == [1000]
    _, second_end = await period(gw, tenant["id"])
    clock.now = second_end
    [second] = await close(gw, clock)
    late = [line for line in second.lines if line["kind"] == "late_usage"]
    assert len(late) == 1
    assert late[0]["quantity"] == 100_000 and late[0]["amount"] == 1000
    assert f"invoice {first.number}" in late[0]["description"]
    # and not a third time
    _, third_end = await period(gw, tenant["id"])
    clock.now = third_end
    [third] = await close(gw, clock)
    assert not [line for line in third.lines if line["kind"] == "late_usage"]


async def test_proration_items_land_on_the_next_invoice(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("upgrader", plan="starter")
    start, end = await period(gw, tenant["id"])
    clock.now = start + (end - start) / 2
    await gw.client.put(
        "/admin/tenants/upgrader", json={"plan": "professional"}, headers=gw.admin()
    )
    clock.now = end
    [invoice] = await close(gw, clock)
    prorations = sorted(line["amount"] for line in invoice.lines if line["kind"] == "proration")
    assert prorations == [-4950, 24950]
    base = next(line for line in invoice.lines if line["kind"] == "base")
    assert base["amount"] == 49900  # the new plan for the period that was billed
    assert invoice.total == 49900 - 4950 + 24950


async def test_a_used_catalogue_version_cannot_change_its_prices(
    billed_lite: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed_lite
    db = gw.app.state.db
    catalog = load_catalog()
    tenant = await gw.create_tenant("frozen")
    changed = parse_catalog(
        BUILTIN.read_text().replace(
            "price = 9900\naddons_included = []", "price = 12900\naddons_included = []"
        ),
        "test",
    )
    assert changed.plans["starter"].price == 12900
    await register_catalog(db, changed, clock.now)  # unused yet: may still change
    await register_catalog(db, catalog, clock.now)
    _, end = await period(gw, tenant["id"])
    clock.now = end
    await close(gw, clock)
    with pytest.raises(ConfigurationError, match="new version"):
        await register_catalog(db, changed, clock.now)
    await register_catalog(db, catalog, clock.now)  # the same content is fine


async def test_deleting_a_tenant_ends_billing_after_a_final_invoice(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("leaving", plan="starter")
    start, end = await period(gw, tenant["id"])
    clock.now = start + (end - start) / 3
    deleted = await gw.client.delete("/admin/tenants/leaving", headers=gw.admin())
    assert deleted.status_code == 204
    async with gw.app.state.db.sessionmaker() as session:
        sub = (
            await session.execute(
                select(Subscription).where(Subscription.tenant_id == tenant["id"])
            )
        ).scalar_one()
        assert sub.cancel_at == end
    clock.now = end
    [final] = await close(gw, clock)
    assert final.number == 1 and final.total == 9900  # no proration at cancellation
    clock.now = end + (end - start) * 3
    assert await close(gw, clock) == []
    async with gw.app.state.db.sessionmaker() as session:
        sub = (
            await session.execute(
                select(Subscription).where(Subscription.tenant_id == tenant["id"])
            )
        ).scalar_one()
        assert sub.status == "canceled"


async def test_a_trial_is_free_then_billing_follows_the_trial_end(
    tmp_path: Path, sqlite_url: str
) -> None:
    catalog = trial_catalog(tmp_path)
    settings = gateway_settings(tmp_path / "data", sqlite_url, billing_catalog=catalog)
    async for gw in start_gateway(settings):
        clock = Clock()
        gw.app.state.billing.entitlements.clock = clock
        tenant = await gw.create_tenant("trial-site", plan="starter", addons=["medical_imaging"])
        [sub] = (
            await gw.client.get("/api/v1/billing/subscriptions", headers=gw.auth("trial-site"))
        ).json()["data"]
        assert sub["status"] == "trialing"
        start, end = await period(gw, tenant["id"])
        assert end - start == timedelta(days=14)
        assert sub["trialEnd"] is not None
        await record_at(gw, start, tenant["id"], "api_requests", 900_000)  # over the allowance
        clock.now = start + timedelta(days=7)
        await gw.client.put(
            "/admin/tenants/trial-site", json={"plan": "professional"}, headers=gw.admin()
        )
        clock.now = end
        [trial] = await close(gw, clock)
        assert trial.total == 0 and trial.status == "paid"
        assert all(line["amount"] == 0 for line in trial.lines)  # no proration, no usage charge
        await record_at(gw, start, tenant["id"], "api_requests", 5_000_000)  # late, still free
        new_start, new_end = await period(gw, tenant["id"])
        assert new_start == end and new_end.day == end.day
        clock.now = new_end
        [first_paid] = await close(gw, clock)
        assert first_paid.total == 49900 + 49900  # professional + imaging, nothing late
        assert not [ln for ln in first_paid.lines if ln["kind"] == "late_usage"]
