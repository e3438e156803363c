"""Invoice transitions after issue (void, uncollectible, recovery), on both stores."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select

from novaza_gateway.billing.closing import close_due
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.models import Invoice, Subscription, WalletEntry
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.metering import dimensions
from tests.billing.conftest import Clock
from tests.conftest import Gateway

STARTER = 9900  # the built-in catalogue's starter plan, per month


def void_url(slug: str, invoice_id: str) -> str:
    return f"/admin/tenants/{slug}/invoices/{invoice_id}/void"


def uncollectible_url(slug: str, invoice_id: str) -> str:
    return f"/admin/tenants/{slug}/invoices/{invoice_id}/mark-uncollectible"


async def subscription(gw: Gateway, tenant_id: str) -> Subscription:
    async with gw.app.state.db.sessionmaker() as session:
        query = select(Subscription).where(Subscription.tenant_id == tenant_id)
        sub: Subscription = (await session.execute(query)).scalar_one()
        return sub


async def close_next_period(gw: Gateway, clock: Clock, tenant_id: str) -> list[Invoice]:
    """Move the clock to the end of the tenant's period and close it (announcing, as the
    scheduler does)."""
    clock.now = (await subscription(gw, tenant_id)).current_period_end
    billing = gw.app.state.billing
    closed = await close_due(
        gw.app.state.db, billing.catalog, clock.now, gw.app.state.invalidator.announce
    )
    return [invoice for invoice in closed if invoice.tenant_id == tenant_id]


async def close_both(gw: Gateway, clock: Clock, tenant_id: str) -> dict[str, Invoice]:
    """Close at the end of the tenant's period; every tenant's invoice, by tenant id."""
    clock.now = (await subscription(gw, tenant_id)).current_period_end
    billing = gw.app.state.billing
    closed = await close_due(gw.app.state.db, billing.catalog, clock.now)
    return {invoice.tenant_id: invoice for invoice in closed}


async def audit_events(gw: Gateway, tenant_id: str, prefix: str) -> list[AuditEvent]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.action.startswith(prefix))
            .order_by(AuditEvent.at)
        )
        return list(rows.scalars())


async def payments(gw: Gateway, tenant_id: str) -> list[WalletEntry]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(WalletEntry)
            .where(WalletEntry.tenant_id == tenant_id, WalletEntry.kind == "invoice_payment")
            .order_by(WalletEntry.seq)
        )
        return list(rows.scalars())


async def top_up(gw: Gateway, slug: str, amount: int, key: str) -> dict[str, Any]:
    response = await gw.client.post(
        f"/admin/tenants/{slug}/wallet/credits",
        json={"amount": amount, "currency": "EUR"},
        headers={**gw.admin(), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(gw: Gateway, slug: str, invoice_id: str) -> dict[str, Any]:
    response = await gw.client.get("/api/v1/billing/invoices", headers=gw.auth(slug))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = next(i for i in response.json()["data"] if i["id"] == invoice_id)
    return found


async def test_voiding_an_open_invoice_ends_past_due_and_is_audited_once(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("void-site", plan="starter", addons=["priority_support"])
    headers = gw.auth("void-site")
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 200
    [invoice] = await close_next_period(gw, clock, tenant["id"])
    assert invoice.status == "open" and invoice.total == STARTER + 9900  # + priority support
    assert (await subscription(gw, tenant["id"])).status == "past_due"
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 403

    clock.advance(days=2)
    voided = await gw.client.post(void_url("void-site", invoice.id), headers=gw.admin())
    assert voided.status_code == 200, voided.text
    body = voided.json()
    assert body["id"] == invoice.id and body["status"] == "void"
    assert body["amountDue"] == 0 and body["amountPaidWallet"] == 0
    assert body["voidedAt"] == clock.now.isoformat().replace("+00:00", "Z")
    assert body["markedUncollectibleAt"] is None and body["paidAt"] is None
    sub = await subscription(gw, tenant["id"])
    assert (sub.status, sub.past_due_since) == ("active", None)
    # the entitlements were invalidated: the non-clinical add-on is back on the next request
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 200

    again = await gw.client.post(void_url("void-site", invoice.id), headers=gw.admin())
    assert again.status_code == 200 and again.json() == body
    assert await listed(gw, "void-site", invoice.id) == body
    one = await gw.client.get(f"/api/v1/billing/invoices/{invoice.id}", headers=headers)
    assert one.json() == body

    conflict = await gw.client.post(uncollectible_url("void-site", invoice.id), headers=gw.admin())
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "INVOICE_ALREADY_VOID"
    assert conflict.json()["details"] == {"status": "void", "transition": "uncollectible"}

    [event] = await audit_events(gw, tenant["id"], "billing.invoice")
    assert (event.action, event.actor, event.resource_type) == (
        "billing.invoice.void",
        "admin-1",
        "invoice",
    )
    assert event.resource_id == invoice.id
    assert event.before == {
        "status": "open",
        "number": 1,
        "total": invoice.total,
        "subscriptionStatus": "past_due",
    }
    assert event.after == {**event.before, "status": "void", "subscriptionStatus": "active"}

    # a void invoice is not owed: a top-up stays in the wallet
    credited = await top_up(gw, "void-site", 1_000_000, "after-void")
    assert credited["balance"]["amount"] == 1_000_000
    assert await payments(gw, tenant["id"]) == []
    assert (await listed(gw, "void-site", invoice.id))["status"] == "void"


async def test_an_uncollectible_invoice_ends_dunning_and_a_later_top_up_pays_it(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("write-off", plan="starter")
    [invoice] = await close_next_period(gw, clock, tenant["id"])
    assert (await subscription(gw, tenant["id"])).status == "past_due"
    marked = await gw.client.post(uncollectible_url("write-off", invoice.id), headers=gw.admin())
    assert marked.status_code == 200, marked.text
    body = marked.json()
    assert body["status"] == "uncollectible" and body["amountDue"] == STARTER
    assert body["markedUncollectibleAt"] is not None and body["voidedAt"] is None
    assert (await subscription(gw, tenant["id"])).status == "active"
    again = await gw.client.post(uncollectible_url("write-off", invoice.id), headers=gw.admin())
    assert again.status_code == 200 and again.json() == body
    assert len(await audit_events(gw, tenant["id"], "billing.invoice")) == 1

    # a top-up that does not cover it leaves it written off, and the tenant active
    await top_up(gw, "write-off", 5000, "part")
    assert (await listed(gw, "write-off", invoice.id))["status"] == "uncollectible"
    assert (await subscription(gw, tenant["id"])).status == "active"
    # one that covers it pays it, like Stripe: uncollectible -> paid
    clock.advance(days=3)
    await top_up(gw, "write-off", 5000, "rest")
    paid = await listed(gw, "write-off", invoice.id)
    assert paid["status"] == "paid" and paid["amountDue"] == 0
    assert paid["amountPaidWallet"] == STARTER
    assert paid["paidAt"] == clock.now.isoformat().replace("+00:00", "Z")
    assert paid["markedUncollectibleAt"] == body["markedUncollectibleAt"]  # history kept
    [payment] = await payments(gw, tenant["id"])
    assert payment.amount == -STARTER and payment.reference == invoice.id
    wallet = (await gw.client.get("/api/v1/billing/wallet", headers=gw.auth("write-off"))).json()
    assert wallet["balance"]["amount"] == 10_000 - STARTER
    marked_event, recovered = await audit_events(gw, tenant["id"], "billing.invoice")
    assert marked_event.action == "billing.invoice.uncollectible"
    assert marked_event.after is not None and marked_event.after["status"] == "uncollectible"
    assert (recovered.action, recovered.actor) == ("billing.invoice.paid", "admin-1")
    assert recovered.before == {"status": "uncollectible", "number": 1}
    assert recovered.after == {"status": "paid", "number": 1, "amountPaid": STARTER}

    for url in (void_url("write-off", invoice.id), uncollectible_url("write-off", invoice.id)):
        refused = await gw.client.post(url, headers=gw.admin())
        assert refused.status_code == 409
        assert refused.json()["code"] == "INVOICE_ALREADY_PAID"
    assert len(await audit_events(gw, tenant["id"], "billing.invoice")) == 2


async def test_refusals_change_nothing(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    prepaid = await gw.create_tenant("prepaid-site", plan="starter")
    other = await gw.create_tenant("other-site", plan="starter")
    await top_up(gw, "prepaid-site", 100_000, "prepay")
    [paid] = await close_next_period(gw, clock, prepaid["id"])
    assert paid.status == "paid"
    [foreign] = await close_next_period(gw, clock, other["id"])
    assert foreign.status == "open"

    for url in (void_url, uncollectible_url):
        draft = await gw.client.post(url("prepaid-site", "upcoming"), headers=gw.admin())
        assert draft.status_code == 409, draft.text
        assert draft.json()["code"] == "INVOICE_NOT_FINALIZED"
        on_paid = await gw.client.post(url("prepaid-site", paid.id), headers=gw.admin())
        assert on_paid.status_code == 409
        assert on_paid.json()["code"] == "INVOICE_ALREADY_PAID"
        # another tenant's invoice id under this tenant's slug does not exist here
        cross = await gw.client.post(url("prepaid-site", foreign.id), headers=gw.admin())
        assert cross.status_code == 404
        assert cross.json()["code"] == "INVOICE_NOT_FOUND"
        unknown = await gw.client.post(
            url("prepaid-site", "00000000-0000-0000-0000-000000000000"), headers=gw.admin()
        )
        assert unknown.json()["code"] == "INVOICE_NOT_FOUND"
        no_tenant = await gw.client.post(url("no-such-site", foreign.id), headers=gw.admin())
        assert no_tenant.status_code == 404 and no_tenant.json()["code"] == "NOT_FOUND"
        as_tenant = await gw.client.post(
            url("other-site", foreign.id), headers=gw.auth("other-site")
        )
        assert as_tenant.status_code == 403
    assert (await listed(gw, "other-site", foreign.id))["status"] == "open"
    assert (await subscription(gw, other["id"])).status == "past_due"
    assert await audit_events(gw, other["id"], "billing") == []
    assert await audit_events(gw, prepaid["id"], "billing") == []


async def test_past_due_follows_the_oldest_invoice_still_open(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    tenant = await gw.create_tenant("two-debts", plan="starter")
    [first] = await close_next_period(gw, clock, tenant["id"])
    [second] = await close_next_period(gw, clock, tenant["id"])
    assert (first.status, second.status) == ("open", "open")
    sub = await subscription(gw, tenant["id"])
    assert (sub.status, sub.past_due_since) == ("past_due", first.issued_at)

    voided = await gw.client.post(void_url("two-debts", first.id), headers=gw.admin())
    assert voided.status_code == 200
    sub = await subscription(gw, tenant["id"])  # still owes the second: grace counts from it
    assert (sub.status, sub.past_due_since) == ("past_due", second.issued_at)
    marked = await gw.client.post(uncollectible_url("two-debts", second.id), headers=gw.admin())
    assert marked.status_code == 200
    sub = await subscription(gw, tenant["id"])
    assert (sub.status, sub.past_due_since) == ("active", None)
    # an uncollectible invoice may still be voided (as in Stripe), and is then final
    voided_too = await gw.client.post(void_url("two-debts", second.id), headers=gw.admin())
    assert voided_too.status_code == 200 and voided_too.json()["status"] == "void"
    assert voided_too.json()["markedUncollectibleAt"] is not None
    events = await audit_events(gw, tenant["id"], "billing.invoice")
    assert [(e.action, e.before and e.before["status"]) for e in events] == [
        ("billing.invoice.void", "open"),
        ("billing.invoice.uncollectible", "open"),
        ("billing.invoice.void", "uncollectible"),
    ]
    await top_up(gw, "two-debts", 100_000, "later")
    assert await payments(gw, tenant["id"]) == []


async def test_a_void_racing_a_covering_credit_either_voids_or_is_paid(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    outcomes = set()
    for n in range(4):
        slug = f"race-{n}"
        tenant = await gw.create_tenant(slug, plan="starter")
        [invoice] = await close_next_period(gw, clock, tenant["id"])
        voided, credited = await asyncio.gather(
            gw.client.post(void_url(slug, invoice.id), headers=gw.admin()),
            gw.client.post(
                f"/admin/tenants/{slug}/wallet/credits",
                json={"amount": 20_000, "currency": "EUR"},
                headers=gw.admin(),
            ),
        )
        assert credited.status_code == 201, credited.text
        status = (await listed(gw, slug, invoice.id))["status"]
        paid = await payments(gw, tenant["id"])
        if voided.status_code == 200:
            assert status == "void" and paid == []
        else:
            assert voided.status_code == 409, voided.text
            assert voided.json()["code"] == "INVOICE_ALREADY_PAID"
            assert status == "paid" and [p.amount for p in paid] == [-STARTER]
        assert (await subscription(gw, tenant["id"])).status == "active"
        outcomes.add(status)
    assert outcomes <= {"void", "paid"}


async def record_at(gw: Gateway, at: datetime, tenant_id: str, quantity: int) -> None:
    usage = UsageMeter(clock=lambda: at.timestamp())
    usage.record(tenant_id, "api_requests", quantity, dimensions=dimensions(area="imaging"))
    await usage.flush(gw.app.state.db)


async def test_late_usage_of_a_void_period_is_not_charged_of_a_written_off_one_is(
    billed_lite: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed_lite
    voided = await gw.create_tenant("late-void", plan="starter")
    written_off = await gw.create_tenant("late-off", plan="starter")
    tenants = (voided["id"], written_off["id"])
    start = (await subscription(gw, voided["id"])).current_period_start
    for tenant_id in tenants:
        await record_at(gw, start, tenant_id, 600_000)
    first = await close_both(gw, clock, voided["id"])  # both periods end on the same hour
    for tenant_id in tenants:
        await record_at(gw, start, tenant_id, 100_000)  # late, for the invoiced period
    await gw.client.post(void_url("late-void", first[voided["id"]].id), headers=gw.admin())
    await gw.client.post(
        uncollectible_url("late-off", first[written_off["id"]].id), headers=gw.admin()
    )
    second = await close_both(gw, clock, voided["id"])
    after_void, after_off = second[voided["id"]], second[written_off["id"]]
    assert not [line for line in after_void.lines if line["kind"] == "late_usage"]
    assert after_void.total == STARTER
    [late] = [line for line in after_off.lines if line["kind"] == "late_usage"]
    assert late["amount"] == 1000 and late["invoice"] == first[written_off["id"]].id


async def test_the_portal_shows_void_and_written_off_invoices(
    billed_lite: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed_lite
    tenant = await gw.create_tenant("portal-void", plan="starter")
    [first] = await close_next_period(gw, clock, tenant["id"])
    [second] = await close_next_period(gw, clock, tenant["id"])
    await gw.client.post(void_url("portal-void", first.id), headers=gw.admin())
    await gw.client.post(uncollectible_url("portal-void", second.id), headers=gw.admin())
    manage = gw.auth("portal-void", scopes="billing:manage")
    url = (await gw.client.post("/api/v1/billing/portal-session", json={}, headers=manage)).json()[
        "url"
    ]
    opened = await gw.client.get(url.removeprefix(gw.settings.base_url))
    cookies = {"novaza_portal": opened.cookies["novaza_portal"]}
    overview = await gw.client.get("/billing/portal/", cookies=cookies)
    assert '<span class="tag off">void</span>' in overview.text
    assert '<span class="tag warn">uncollectible</span>' in overview.text
    page = await gw.client.get(f"/billing/portal/invoices/{first.id}", cookies=cookies)
    assert page.status_code == 200
    assert f"voided {clock.now.date().isoformat()} (not owed)" in page.text
    assert "Amount due</th><td class=num>0.00 EUR" in page.text
    page = await gw.client.get(f"/billing/portal/invoices/{second.id}", cookies=cookies)
    assert "marked uncollectible" in page.text
    assert "Amount due</th><td class=num>99.00 EUR" in page.text


async def test_a_top_up_paying_the_oldest_debt_moves_the_grace_to_the_next(
    billed_lite: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed_lite
    tenant = await gw.create_tenant("two-bills", plan="starter")
    [first] = await close_next_period(gw, clock, tenant["id"])
    [second] = await close_next_period(gw, clock, tenant["id"])
    await top_up(gw, "two-bills", STARTER, "one-of-two")
    assert (await listed(gw, "two-bills", first.id))["status"] == "paid"
    sub = await subscription(gw, tenant["id"])
    assert (sub.status, sub.past_due_since) == ("past_due", second.issued_at)
