"""The route index answers exactly as the framework's router, only with a shorter search."""

from __future__ import annotations

import re

from starlette.routing import Match, Route

from novaza_gateway.core.routeindex import RouteIndex, may_match
from tests.conftest import Gateway


def _route(path: str) -> Route:
    async def endpoint() -> None:
        return None

    return Route(path, endpoint)


def test_only_routes_that_cannot_match_are_left_out() -> None:
    wado = _route("/med/wado/studies/{study}")
    assert may_match(wado, ("med", "wado"))
    assert not may_match(wado, ("med", "qido"))
    assert not may_match(wado, ("med", None))  # "/med" is too short for it
    assert may_match(_route("/{anything:path}"), ("x", "y"))
    assert may_match(_route("/med/{area}/x"), ("med", "whatever"))
    assert may_match(_route("/health"), ("health", None))
    assert not may_match(_route("/health"), ("health", "ready"))
    assert not may_match(_route("/health"), ("health", ""))  # "/health/": the router redirects
    assert may_match(_route("/admin/tenants/"), ("admin", "tenants"))
    assert may_match(_route("/"), ("", None))


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


async def test_every_route_is_found_as_the_router_finds_it(gw: Gateway) -> None:
    router = gw.app.router
    index = router.middleware_stack
    assert isinstance(index, RouteIndex)
    paths = {_concrete(r.path) for r in router.routes if isinstance(getattr(r, "path", None), str)}
    paths |= {p + "/" for p in paths} | {"/", "/med", "/med/nope", "/nope/x/y", "/api/v1"}
    for path in sorted(paths):
        for method in ("GET", "POST", "PUT", "DELETE"):
            scope = {"type": "http", "path": path, "root_path": "", "method": method}
            full = [r for r in router.routes if r.matches(scope)[0] is Match.FULL]
            indexed = [r for r in index.candidates(path) if r.matches(scope)[0] is Match.FULL]
            assert indexed[:1] == full[:1], (method, path)
            # find(), twice: the second time from the exact-path memo for routes without
            # parameters; the same route and path parameters either way
            for _ in range(2):
                found_scope = dict(scope)
                found = index.find(found_scope)
                assert [found] == full[:1] or (found is None and not full), (method, path)
                if found is not None:
                    child = full[0].matches(scope)[1]
                    assert {k: found_scope[k] for k in child} == child, (method, path)


async def test_answers_through_the_index_are_the_routers_answers(gw: Gateway) -> None:
    await gw.create_tenant("acme")
    auth = gw.auth("acme")
    assert (await gw.client.get("/api/v1/whoami", headers=auth)).status_code == 200
    missing = await gw.client.get("/med/nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    wrong_method = await gw.client.delete("/api/v1/whoami", headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "METHOD_NOT_ALLOWED"
    # a late route (patient studies) matched through the index, its template in the metrics
    late = await gw.client.get("/med/patient/p-1/studies", headers=auth)
    assert late.status_code == 403  # the tenant lacks the emr add-on: the guard answered
    metrics = (await gw.client.get("/metrics")).text
    assert 'route="/med/patient/{patient_id}/studies"' in metrics
