"""Every billing route is behind the guard: no token, no answer."""

from __future__ import annotations

from fastapi.routing import APIRoute

from novaza_gateway.billing.router import routes
from tests.billing.conftest import Clock
from tests.conftest import Gateway


async def test_every_billing_route_needs_a_token(billed_lite: tuple[Gateway, Clock]) -> None:
    gw, _ = billed_lite
    checked = 0
    for route in routes.routes:
        assert isinstance(route, APIRoute)
        path = route.path.replace("{slug}", "acme").replace("{invoice_id}", "upcoming")
        for method in route.methods:
            response = await gw.client.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            checked += 1
    assert checked == 8
