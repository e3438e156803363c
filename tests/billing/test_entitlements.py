"""Plans, subscriptions following tenant administration, and the one entitlements resolver."""

from __future__ import annotations

from sqlalchemy import select

from novaza_gateway.billing.models import PendingItem, Subscription
from novaza_gateway.core.audit import AuditEvent
from tests.billing.conftest import Clock
from tests.conftest import Gateway


async def subscription(gw: Gateway, tenant_id: str) -> Subscription:
    async with gw.app.state.db.sessionmaker() as session:
        row = await session.execute(select(Subscription).where(Subscription.tenant_id == tenant_id))
        return row.scalar_one()


async def set_subscription(gw: Gateway, tenant_id: str, **fields: object) -> None:
    async with gw.app.state.db.session_scope() as session:
        sub = (
            await session.execute(select(Subscription).where(Subscription.tenant_id == tenant_id))
        ).scalar_one()
        for name, value in fields.items():
            setattr(sub, name, value)
    gw.app.state.runtime.tenants.clear()


async def test_plans_lists_the_catalogue(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    await gw.create_tenant("plans-site")
    response = await gw.client.get("/api/v1/billing/plans", headers=gw.auth("plans-site"))
    assert response.status_code == 200, response.text
    body = response.json()
    plans = {p["id"]: p for p in body["data"]}
    assert list(plans) == ["starter", "professional", "enterprise"]
    starter = plans["starter"]
    assert starter["price"] == {"amount": 9900, "currency": "EUR"}
    assert starter["interval"] == "month"
    assert starter["limits"] == {
        "requestsPerSecond": 10.0,
        "burst": 20,
        "aiTokensPerPeriod": 1_000_000,
        "storageBytes": 50_000_000_000,
    }
    api = next(m for m in starter["meteredPrices"] if m["meter"] == "api_requests")
    assert api["model"] == "graduated" and api["included"] == 100_000
    assert api["tiers"][0] == {
        "upTo": 1_000_000,
        "unitAmount": 10,
        "unitSize": 1000,
        "flatAmount": 0,
    }
    assert plans["enterprise"]["features"] == [
        "emr",
        "hl7_fhir",
        "medical_imaging",
        "priority_support",
    ]
    no_scope = await gw.client.get(
        "/api/v1/billing/plans", headers=gw.auth("plans-site", scopes="imaging:read")
    )
    assert no_scope.status_code == 403


async def test_tenant_creation_starts_a_subscription(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    created = await gw.create_tenant("sub-site", plan="professional", addons=["medical_imaging"])
    response = await gw.client.get("/api/v1/billing/subscriptions", headers=gw.auth("sub-site"))
    assert response.status_code == 200, response.text
    [sub] = response.json()["data"]
    assert sub["plan"] == "professional"
    assert sub["addons"] == ["medical_imaging"]
    assert sub["status"] == "active"
    assert sub["recurringPrice"] == {"amount": 49900 + 49900, "currency": "EUR"}
    assert sub["currentPeriodStart"].startswith(clock.now.date().isoformat())
    stored = await subscription(gw, created["id"])
    assert stored.current_period_end.month != stored.current_period_start.month


async def test_unknown_plan_or_addon_is_422(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    bad_addon = await gw.client.post(
        "/admin/tenants/",
        json={"slug": "bad-addon", "name": "n", "addons": ["teleport"]},
        headers=gw.admin(),
    )
    assert bad_addon.status_code == 422
    assert bad_addon.json()["details"]["errors"][0]["path"] == "addons.0"
    bad_plan = await gw.client.post(
        "/admin/tenants/",
        json={"slug": "bad-plan", "name": "n", "plan": "gold"},
        headers=gw.admin(),
    )
    assert bad_plan.status_code == 422
    assert bad_plan.json()["details"]["errors"][0]["path"] == "plan"


async def test_plan_change_and_addon_removal_bite_on_the_next_request(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    await gw.create_tenant("grow", plan="starter", addons=["medical_imaging"])
    headers = gw.auth("grow")
    first = await gw.client.get("/probe/imaging", headers=headers)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "20"
    support = await gw.client.get("/probe/support", headers=headers)
    assert support.status_code == 403 and support.json()["details"] == {"addon": "priority_support"}

    changed = await gw.client.put(
        "/admin/tenants/grow", json={"plan": "enterprise", "addons": []}, headers=gw.admin()
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["effectiveRateLimit"] == {"ratePerSecond": 200.0, "burst": 400}
    # enterprise includes imaging and support: allowed at once, at the new limit
    after = await gw.client.get("/probe/imaging", headers=headers)
    assert after.status_code == 200
    assert after.headers["x-ratelimit-limit"] == "400"
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 200

    await gw.client.put("/admin/tenants/grow", json={"plan": "starter"}, headers=gw.admin())
    removed = await gw.client.get("/probe/imaging", headers=headers)
    assert removed.status_code == 403
    assert removed.json()["code"] == "ADDON_REQUIRED"


async def test_mid_period_change_is_prorated(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    created = await gw.create_tenant("prorate", plan="starter")
    sub = await subscription(gw, created["id"])
    period = sub.current_period_end - sub.current_period_start
    clock.now = sub.current_period_start + period / 2
    await gw.client.put("/admin/tenants/prorate", json={"plan": "professional"}, headers=gw.admin())
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(PendingItem).where(PendingItem.tenant_id == created["id"])
        )
        items = sorted(item.amount for item in rows.scalars())
    assert items == [-4950, 24950]  # half of 99.00 back, half of 499.00 due
    # the same choice again changes nothing
    await gw.client.put("/admin/tenants/prorate", json={"plan": "professional"}, headers=gw.admin())
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(PendingItem).where(PendingItem.tenant_id == created["id"])
        )
        assert len(rows.scalars().all()) == 2


async def test_entitlements_show_sources_and_what_is_enforced(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    await gw.create_tenant(
        "ent-site",
        plan="professional",
        addons=["medical_imaging"],
        rateLimit={"ratePerSecond": 5, "burst": 7},
    )
    response = await gw.client.get("/api/v1/billing/entitlements", headers=gw.auth("ent-site"))
    assert response.status_code == 200, response.text
    body = response.json()
    features = {f["addon"]: (f["source"], f["enabled"]) for f in body["features"]}
    assert features == {"emr": ("plan", True), "medical_imaging": ("addon", True)}
    assert body["rateLimit"] == {"requestsPerSecond": 5.0, "burst": 7, "source": "override"}
    assert body["aiTokens"] == {"value": 10_000_000, "source": "plan"}
    balances = {b["meter"]: b for b in body["balances"]}
    assert balances["api_requests"]["included"] == 2_000_000
    assert body["asOf"]
    enforced = await gw.client.get("/probe/imaging", headers=gw.auth("ent-site"))
    assert enforced.headers["x-ratelimit-limit"] == "7"


async def test_past_due_keeps_clinical_addons_for_the_grace_period(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed
    created = await gw.create_tenant(
        "late-payer", plan="starter", addons=["medical_imaging", "priority_support"]
    )
    headers = gw.auth("late-payer")
    await set_subscription(gw, created["id"], status="past_due", past_due_since=clock.now)
    assert (await gw.client.get("/probe/imaging", headers=headers)).status_code == 200
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 403
    body = (await gw.client.get("/api/v1/billing/entitlements", headers=headers)).json()
    assert body["subscriptionStatus"] == "past_due"
    assert body["graceUntil"] is not None
    kept = {f["addon"]: f["enabled"] for f in body["features"]}
    assert kept == {"medical_imaging": True, "priority_support": False}

    clock.advance(days=15)  # the catalogue's grace is 14 days
    gw.app.state.runtime.tenants.clear()
    lapsed = await gw.client.get("/probe/imaging", headers=headers)
    assert lapsed.status_code == 403
    await set_subscription(gw, created["id"], status="active", past_due_since=None)
    assert (await gw.client.get("/probe/imaging", headers=headers)).status_code == 200


async def test_overrides_grant_on_the_next_request_and_are_audited(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    created = await gw.create_tenant("override-me", plan="starter")
    url = "/admin/tenants/override-me/entitlements/overrides"
    headers = gw.auth("override-me")
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 403
    granted = await gw.client.put(
        url, json={"addons": ["priority_support"], "aiTokens": 5_000_000}, headers=gw.admin()
    )
    assert granted.status_code == 200, granted.text
    features = {f["addon"]: f["source"] for f in granted.json()["features"]}
    assert features == {"priority_support": "override"}
    assert granted.json()["aiTokens"] == {"value": 5_000_000, "source": "override"}
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 200
    cleared = await gw.client.put(url, json={}, headers=gw.admin())
    assert cleared.json()["features"] == []
    assert (await gw.client.get("/probe/support", headers=headers)).status_code == 403
    bad = await gw.client.put(url, json={"addons": ["teleport"]}, headers=gw.admin())
    assert bad.status_code == 422
    assert (await gw.client.put(url, json={}, headers=headers)).status_code == 403
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent).where(
                AuditEvent.tenant_id == created["id"], AuditEvent.action == "billing.overrides"
            )
        )
        events = list(rows.scalars())
    assert len(events) == 2 and events[0].actor == "admin-1"
