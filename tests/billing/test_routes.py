"""Every billing route is behind the guard (API) or a portal credential (HTML)."""

from __future__ import annotations

from fastapi.routing import APIRoute

from novaza_gateway.billing.router import routes
from tests.billing.conftest import Clock
from tests.conftest import Gateway


async def test_every_billing_route_needs_a_credential(billed_lite: tuple[Gateway, Clock]) -> None:
    gw, _ = billed_lite
    checked = 0
    for route in routes.routes:
        assert isinstance(route, APIRoute)
        path = (
            route.path.replace("{slug}", "acme")
            .replace("{invoice_id}", "upcoming")
            .replace("{token}", "x" * 43)
        )
        for method in route.methods:
            response = await gw.client.request(method, path, json={})
            if path.startswith("/billing/portal/"):  # the portal: its link or its cookie
                assert response.status_code in (401, 410), (method, path)
                assert response.headers["content-type"].startswith("text/html")
            else:
                assert response.status_code == 401, (method, path)
                assert response.json()["code"] == "UNAUTHENTICATED"
            checked += 1
    assert checked == 16
