"""Tenant administration over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.tenants.directory import TenantSettingsDirectory
from tests.conftest import Gateway


async def audit_actions(gw: Gateway, slug: str) -> list[AuditEvent]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent).where(AuditEvent.resource_id == slug).order_by(AuditEvent.at)
        )
        return list(rows.scalars())


async def test_create_returns_201_with_location_and_audits(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/admin/tenants/",
        json={
            "slug": "st-marys",
            "name": "St Mary's",
            "plan": "professional",
            "addons": ["emr", "medical_imaging"],
            "contact": {"email": "it@stmarys.example"},
        },
        headers={**gateway.admin(), "X-Request-Id": "req-create-1"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/admin/tenants/st-marys"
    body = response.json()
    assert body["status"] == "pending"
    assert body["addons"] == ["emr", "medical_imaging"]
    assert body["effectiveRateLimit"] == {"ratePerSecond": 50.0, "burst": 100}
    events = await audit_actions(gateway, "st-marys")
    assert [e.action for e in events] == ["tenant.create"]
    assert events[0].actor == "admin-1"
    assert events[0].caller_request_id == "req-create-1"
    assert events[0].after is not None and events[0].after["plan"] == "professional"


async def test_duplicate_slug_is_409_and_slug_stays_reserved_after_delete(gateway: Gateway) -> None:
    await gateway.create_tenant("acme")
    again = await gateway.client.post(
        "/admin/tenants/", json={"slug": "acme", "name": "Other"}, headers=gateway.admin()
    )
    assert again.status_code == 409
    assert again.json()["code"] == "CONFLICT"
    deleted = await gateway.client.delete("/admin/tenants/acme", headers=gateway.admin())
    assert deleted.status_code == 204
    reused = await gateway.client.post(
        "/admin/tenants/", json={"slug": "acme", "name": "Other"}, headers=gateway.admin()
    )
    assert reused.status_code == 409
    kept = await gateway.client.get("/admin/tenants/acme", headers=gateway.admin())
    assert kept.json()["status"] == "deleted"
    assert kept.json()["deletedAt"] is not None
    actions = [e.action for e in await audit_actions(gateway, "acme")]
    assert actions == ["tenant.create", "tenant.delete"]


async def test_slug_rules(gateway: Gateway) -> None:
    for bad in ["A-upper", "-lead", "trail-", "x", "a" * 64, "sp ace", "under_score"]:
        response = await gateway.client.post(
            "/admin/tenants/", json={"slug": bad, "name": "n"}, headers=gateway.admin()
        )
        assert response.status_code == 422, bad
        body = response.json()
        assert body["code"] == "VALIDATION_FAILED"
        assert body["details"]["errors"][0]["path"] == "slug"
    ok = await gateway.client.post(
        "/admin/tenants/", json={"slug": "a1b", "name": "n"}, headers=gateway.admin()
    )
    assert ok.status_code == 201


async def test_update_keeps_omitted_fields_and_slug_is_immutable(gateway: Gateway) -> None:
    await gateway.create_tenant("clinic", plan="starter", addons=["emr"])
    response = await gateway.client.put(
        "/admin/tenants/clinic",
        json={"name": "Clinic Two", "rateLimit": {"ratePerSecond": 5, "burst": 7}},
        headers=gateway.admin(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Clinic Two"
    assert body["addons"] == ["emr"]
    assert body["effectiveRateLimit"] == {"ratePerSecond": 5.0, "burst": 7}
    cleared = await gateway.client.put(
        "/admin/tenants/clinic", json={"rateLimit": None}, headers=gateway.admin()
    )
    assert cleared.json()["effectiveRateLimit"] == {"ratePerSecond": 10.0, "burst": 20}
    renamed = await gateway.client.put(
        "/admin/tenants/clinic", json={"slug": "other"}, headers=gateway.admin()
    )
    assert renamed.status_code == 422
    unknown_plan = await gateway.client.put(
        "/admin/tenants/clinic", json={"plan": "gold"}, headers=gateway.admin()
    )
    assert unknown_plan.status_code == 422
    events = await audit_actions(gateway, "clinic")
    update = events[1]
    assert update.before is not None and update.before["name"] == "Clinic"
    assert update.after is not None and update.after["name"] == "Clinic Two"


async def test_settings_secrets_are_write_only(gateway: Gateway) -> None:
    await gateway.create_tenant(
        "proxy-site",
        settings={
            "imaging": {
                "mode": "proxy",
                "upstreamUrl": "http://pacs.example:8042/dicom-web",
                "upstreamUsername": "gw",
                "upstreamPassword": "s3cret-pw",
            }
        },
    )
    got = await gateway.client.get("/admin/tenants/proxy-site", headers=gateway.admin())
    imaging = got.json()["settings"]["imaging"]
    assert "upstreamPassword" not in imaging
    assert imaging["secretsSet"] == ["upstreamPassword"]
    assert "s3cret-pw" not in got.text
    # An update that leaves the secret out keeps it.
    await gateway.client.put(
        "/admin/tenants/proxy-site",
        json={
            "settings": {
                "imaging": {
                    "mode": "proxy",
                    "upstreamUsername": "gw2",
                    "upstreamUrl": "http://pacs.example:8042/dicom-web",
                }
            }
        },
        headers=gateway.admin(),
    )
    async with gateway.app.state.db.sessionmaker() as session:
        from novaza_gateway.tenants.repository import get_by_slug

        tenant = await get_by_slug(session, "proxy-site")
        assert tenant is not None
        assert tenant.settings["imaging"]["upstreamPassword"].startswith("enc:v1:")  # sealed
        assert tenant.settings["imaging"]["upstreamUsername"] == "gw2"
    opened = await TenantSettingsDirectory(
        gateway.app.state.db, gateway.app.state.runtime.secrets
    ).section(tenant.id, "imaging")
    assert opened is not None and opened["upstreamPassword"] == "s3cret-pw"
    # nor does the audit trail carry it
    for event in await audit_actions(gateway, "proxy-site"):
        assert "s3cret-pw" not in str(event.before) + str(event.after)


async def test_settings_are_validated_per_section(gateway: Gateway) -> None:
    bad_section = await gateway.client.post(
        "/admin/tenants/",
        json={"slug": "s1x", "name": "n", "settings": {"nosuch": {}}},
        headers=gateway.admin(),
    )
    assert bad_section.status_code == 422
    assert bad_section.json()["details"]["errors"][0]["path"] == "settings.nosuch"
    bad_value = await gateway.client.post(
        "/admin/tenants/",
        json={"slug": "s2x", "name": "n", "settings": {"imaging": {"mode": "teleport"}}},
        headers=gateway.admin(),
    )
    assert bad_value.status_code == 422
    assert bad_value.json()["details"]["errors"][0]["path"] == "settings.imaging.mode"


async def test_list_filters_by_status_and_paginates(gateway: Gateway) -> None:
    for i in range(5):
        await gateway.create_tenant(f"t{i}-site", status="active" if i % 2 else "pending")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await gateway.client.get("/admin/tenants/", params=params, headers=gateway.admin())
        ).json()
        seen += [t["slug"] for t in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"t{i}-site" for i in range(5)]
    active = await gateway.client.get(
        "/admin/tenants/", params={"status": "active"}, headers=gateway.admin()
    )
    assert [t["slug"] for t in active.json()["data"]] == ["t1-site", "t3-site"]
    bad = await gateway.client.get(
        "/admin/tenants/", params={"cursor": "garbage!"}, headers=gateway.admin()
    )
    assert bad.status_code == 422


async def test_activate_and_suspend_are_idempotent_and_audited_once(gateway: Gateway) -> None:
    await gateway.create_tenant("idem", status="pending")
    for _ in range(2):
        response = await gateway.client.post(
            "/admin/tenants/idem/activate", headers=gateway.admin()
        )
        assert response.status_code == 200
        assert response.json()["status"] == "active"
    for _ in range(2):
        response = await gateway.client.post("/admin/tenants/idem/suspend", headers=gateway.admin())
        assert response.json()["status"] == "suspended"
    actions = [e.action for e in await audit_actions(gateway, "idem")]
    assert actions == ["tenant.create", "tenant.activate", "tenant.suspend"]


async def test_unknown_tenant_is_404(gateway: Gateway) -> None:
    for method, path in [
        ("GET", "/admin/tenants/ghost"),
        ("PUT", "/admin/tenants/ghost"),
        ("POST", "/admin/tenants/ghost/activate"),
        ("DELETE", "/admin/tenants/ghost"),
    ]:
        response = await gateway.client.request(method, path, json={}, headers=gateway.admin())
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "NOT_FOUND"
