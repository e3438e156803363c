"""Portal sessions over the API, and the portal itself in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import uvicorn

from novaza_gateway.billing.closing import close_due
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.core.metering import dimensions
from tests.billing.conftest import Clock, probe
from tests.conftest import Gateway, free_port, gateway_settings, need_tool, start_gateway

PORTAL = "/api/v1/billing/portal-session"


async def test_portal_session_needs_manage_scope_and_an_allowed_return_url(
    billed_lite: tuple[Gateway, Clock],
) -> None:
    gw, clock = billed_lite
    await gw.create_tenant(
        "portal-api",
        settings={"billing": {"portalReturnOrigins": ["https://emr.example.org"]}},
    )
    read_only = await gw.client.post(
        PORTAL, json={}, headers=gw.auth("portal-api", scopes="billing:read")
    )
    assert read_only.status_code == 403
    manage = gw.auth("portal-api", scopes="billing:manage")
    created = await gw.client.post(
        PORTAL, json={"returnUrl": "https://emr.example.org/billing?tab=1"}, headers=manage
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["url"].startswith(f"{gw.settings.base_url}/billing/portal/s/")
    assert body["expiresAt"].startswith((clock.now + timedelta(minutes=10)).isoformat()[:16])
    for bad in [
        "https://evil.example.com/",
        "https://emr.example.org.evil.com/",
        "javascript:alert(1)",
        "//evil.example.com",
        "http://emr.example.org/",  # scheme is part of the origin
    ]:
        refused = await gw.client.post(PORTAL, json={"returnUrl": bad}, headers=manage)
        assert refused.status_code == 422, bad
        assert refused.json()["code"] == "RETURN_URL_NOT_ALLOWED"
    bad_setting = await gw.client.put(
        "/admin/tenants/portal-api",
        json={"settings": {"billing": {"portalReturnOrigins": ["https://x.org/path"]}}},
        headers=gw.admin(),
    )
    assert bad_setting.status_code == 422


async def test_a_link_works_once_and_not_after_it_expires(billed: tuple[Gateway, Clock]) -> None:
    gw, clock = billed
    await gw.create_tenant("portal-once", plan="professional")
    manage = gw.auth("portal-once", scopes="billing:manage")
    url = (await gw.client.post(PORTAL, json={}, headers=manage)).json()["url"]
    path = url.removeprefix(gw.settings.base_url)
    opened = await gw.client.get(path)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/billing/portal/"
    cookie = opened.cookies["novaza_portal"]
    assert "httponly" in opened.headers["set-cookie"].lower()
    page = await gw.client.get("/billing/portal/", cookies={"novaza_portal": cookie})
    assert page.status_code == 200
    assert "Professional" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    again = await gw.client.get(path)
    assert again.status_code == 410
    assert "can no longer be used" in again.text
    gw.client.cookies.clear()
    no_cookie = await gw.client.get("/billing/portal/")
    assert no_cookie.status_code == 401

    late = (await gw.client.post(PORTAL, json={}, headers=manage)).json()["url"]
    clock.advance(minutes=11)
    expired = await gw.client.get(late.removeprefix(gw.settings.base_url))
    assert expired.status_code == 410


@contextlib.asynccontextmanager
async def serving(gw: Gateway, port: int) -> AsyncIterator[None]:
    """The gateway app (lifespan already running) on a real socket for the browser."""
    config = uvicorn.Config(gw.app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def test_portal_in_headless_chromium(tmp_path: Path, sqlite_url: str) -> None:
    chromium = need_tool("chromium")
    from playwright.async_api import async_playwright

    port = free_port()
    settings = gateway_settings(
        tmp_path / "data", sqlite_url, public_url=f"http://127.0.0.1:{port}"
    )
    clock = Clock()
    async for gw in start_gateway(settings, extra_routers=(probe,)):
        gw.app.state.billing.entitlements.clock = clock
        tenant = await gw.create_tenant("st-marys", plan="professional", addons=["medical_imaging"])
        for _ in range(3):
            await gw.client.get("/probe/metered", headers=gw.auth("st-marys"))
        await gw.app.state.billing.meter.flush(gw.app.state.db)
        async with gw.app.state.db.sessionmaker() as session:
            from novaza_gateway.billing.repository import get_subscription

            sub = await get_subscription(session, tenant["id"])
            assert sub is not None
            clock.now = sub.current_period_end
        [invoice] = await close_due(gw.app.state.db, gw.app.state.billing.catalog, clock.now)
        this_period = UsageMeter(clock=lambda: clock.now.timestamp())
        this_period.record(tenant["id"], "api_requests", 1234, dimensions=dimensions(area="hl7"))
        await this_period.flush(gw.app.state.db)
        manage = gw.auth("st-marys", scopes="billing:manage")
        url = (
            await gw.client.post(
                PORTAL, json={"returnUrl": settings.base_url + "/"}, headers=manage
            )
        ).json()["url"]
        async with serving(gw, port), async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                ],
            )
            try:
                page = await browser.new_page(viewport={"width": 1100, "height": 1400})
                await page.goto(url)
                assert page.url.endswith("/billing/portal/")
                plan = await page.inner_text("#plan")
                assert "Professional" in plan and "past_due" in plan
                assert "medical_imaging" in plan
                invoices = await page.inner_text("#invoices")
                assert "Upcoming" in invoices and str(invoice.number) in invoices
                assert await page.locator("svg.chart").count() >= 1
                assert await page.get_attribute("header a", "href") == settings.base_url + "/"
                await page.screenshot(path=str(tmp_path / "portal.png"), full_page=True)
                await page.click(f"a[href='/billing/portal/invoices/{invoice.id}']")
                text = await page.inner_text("#invoice")
                assert f"Invoice {invoice.number}" in text and "Medical imaging add-on" in text
                await page.screenshot(path=str(tmp_path / "invoice.png"), full_page=True)

                other = await browser.new_page()  # a fresh tab reusing the spent link
                response = await other.goto(url)
                assert response is not None and response.status == 410
                assert "can no longer be used" in await other.inner_text("body")
                await other.screenshot(path=str(tmp_path / "used.png"))
            finally:
                await browser.close()
        for shot in ("portal.png", "invoice.png", "used.png"):
            assert (tmp_path / shot).stat().st_size > 5_000
