"""Liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest

from novaza_gateway.core.health import HealthRegistry, Probe
from novaza_gateway.core.whoami import WhoAmI
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway


async def test_health_needs_no_token_and_checks_nothing(gw: Gateway) -> None:
    response = await gw.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_each_check_with_latency(gateway: Gateway) -> None:
    response = await gateway.client.get("/health/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert set(checks) == {
        *("database", "jwks", "ratelimit", "imaging-upstreams", "rooms-reconcile"),
        "imaging-archive-filesystem",
    }
    for check in checks.values():
        assert check["status"] == "ok"
        assert check["latencyMs"] >= 0


async def test_ready_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    async for gw in start_gateway(gateway_settings(tmp_path / "data", url)):
        response = await gw.client.get("/health/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "fail"
        assert body["checks"]["database"]["status"] == "fail"
        assert body["checks"]["jwks"]["status"] == "ok"


async def test_ready_with_redis_shows_it(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    settings = gateway_settings(tmp_path / "data", sqlite_url, redis_url=redis_url)
    async for gw in start_gateway(settings):
        checks = (await gw.client.get("/health/ready")).json()["checks"]
        assert checks["redis"]["status"] == "ok"
        assert checks["ratelimit"]["detail"] == "redis backend"


async def test_redis_down_degrades_but_stays_ready(tmp_path: Path, sqlite_url: str) -> None:
    settings = gateway_settings(
        tmp_path / "data", sqlite_url, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    async for gw in start_gateway(settings):
        await gw.create_tenant("acme")
        response = await gw.client.get("/api/v1/whoami", headers=gw.auth("acme"))
        assert response.status_code == 200
        ready = await gw.client.get("/health/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "degraded"
        assert body["checks"]["redis"]["status"] == "degraded"
        assert body["checks"]["ratelimit"]["status"] == "degraded"


async def test_probe_timeouts_fail_only_that_check() -> None:
    import asyncio

    async def slow() -> str | None:
        await asyncio.sleep(5)
        return None

    async def fine() -> str | None:
        return None

    registry = HealthRegistry()
    registry.register(Probe("slow", slow, timeout_seconds=0.05))
    registry.register(Probe("fine", fine))
    ready, checks = await registry.run()
    assert not ready
    assert checks["slow"]["status"] == "fail"
    assert "timed out" in checks["slow"]["detail"]
    assert checks["fine"]["status"] == "ok"


async def test_metrics_use_route_templates_and_count_auth_failures(gw: Gateway) -> None:
    await gw.create_tenant("acme")
    await gw.client.get("/admin/tenants/acme", headers=gw.admin())
    await gw.client.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
    await gw.client.get("/no/such/patient-123")
    await gw.client.request("FROBNICATE", "/health")
    text = (await gw.client.get("/metrics")).text
    assert 'route="/admin/tenants/{slug}"' in text
    assert "/admin/tenants/acme" not in text
    assert "patient-123" not in text
    assert 'route="<unmatched>"' in text
    assert 'method="OTHER"' in text and "FROBNICATE" not in text
    assert 'novaza_auth_failures_total{reason="malformed"}' in text
    assert "novaza_http_request_duration_seconds_bucket" in text
    assert "novaza_ratelimit_decisions_total" in text
    assert "novaza_build_info" in text
    assert "novaza_db_pool_connections_in_use" in text


async def test_openapi_documents_scopes_and_error_codes(gw: Gateway) -> None:
    doc = (await gw.client.get("/openapi.json")).json()
    operation = doc["paths"]["/admin/tenants/{slug}"]["put"]
    assert operation["security"] == [{"bearer": ["platform:admin"]}]
    assert operation["x-novaza-policy"]["scopes"] == ["platform:admin"]
    assert "UNAUTHENTICATED" in operation["responses"]["401"]["description"]
    assert "CONFLICT" in operation["responses"]["409"]["description"]
    whoami = doc["paths"]["/api/v1/whoami"]["get"]
    assert "RATE_LIMITED" in whoami["responses"]["429"]["description"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in doc["paths"]["/health"]["get"]
    docs_page = await gw.client.get("/docs")
    assert docs_page.status_code == 200


async def test_state_routes_answer_and_document_like_fastapi_routes(gw: Gateway) -> None:
    """whoami and /health skip FastAPI's per-request machinery; nothing a client sees changes."""
    await gw.create_tenant("acme", addons=["emr"])
    answer = await gw.client.get("/api/v1/whoami", headers=gw.auth("acme"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)
    body = answer.json()
    assert body["tenant"] == "acme" and body["addons"] == ["emr"]
    assert set(body["rateLimit"]) == {"ratePerSecond", "burst"}  # by alias, as FastAPI sends
    # whoami builds its wire form by hand: exactly the documented model's fields, valid
    wire_names = {f.alias or n for n, f in WhoAmI.model_fields.items()}
    assert set(body) == wire_names
    assert WhoAmI.model_validate(body).rate_limit.burst == body["rateLimit"]["burst"]
    assert answer.headers["x-request-id"] and answer.headers["ratelimit-policy"]
    assert (await gw.client.get("/health")).json() == {"status": "ok"}

    doc = (await gw.client.get("/openapi.json")).json()
    ok = doc["paths"]["/api/v1/whoami"]["get"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/WhoAmI"}
    assert "parameters" not in doc["paths"]["/api/v1/whoami"]["get"]  # the Request is not one
    assert "rateLimit" in doc["components"]["schemas"]["WhoAmI"]["properties"]


def test_a_state_route_takes_only_the_request() -> None:
    from fastapi import APIRouter

    from novaza_gateway.core.stateroute import StateRoute

    router = APIRouter(route_class=StateRoute)

    async def wants_more(slug: str) -> None:
        return None

    with pytest.raises(TypeError, match="takes only the Request"):
        router.add_api_route("/x/{slug}", wants_more)
