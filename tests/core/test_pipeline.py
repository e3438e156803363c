"""The request pipeline: ids, version header, envelopes, tenants, add-ons, body limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from novaza_gateway.core.deps import TenantDep
from novaza_gateway.core.policy import policy
from tests.conftest import Gateway, gateway_settings, start_gateway

probe = APIRouter(prefix="/test", tags=["test"])


class Echo(BaseModel):
    text: str
    count: int


@probe.get("/imaging", **policy("imaging:read", addon="medical_imaging"))
async def imaging_only(tenant: TenantDep) -> dict[str, str]:
    return {"tenant": tenant.slug}


@probe.post("/echo", **policy(max_body_bytes=2048))
async def echo(body: Echo) -> Echo:
    return body


@probe.get("/boom", **policy())
async def boom() -> None:
    raise RuntimeError("secret internals: patient Jane Doe")


@probe.get("/db-down", **policy())
async def db_down() -> None:
    raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))


@pytest.fixture
async def pgw(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Gateway]:
    settings = gateway_settings(tmp_path / "data", sqlite_url)
    async for gw in start_gateway(settings, extra_routers=(probe,)):
        await gw.create_tenant("acme", addons=["medical_imaging"])
        await gw.create_tenant("plain")
        yield gw


async def test_request_id_is_echoed_when_valid_and_replaced_otherwise(pgw: Gateway) -> None:
    good = await pgw.client.get("/health", headers={"X-Request-Id": "abc.DEF_123-x"})
    assert good.headers["x-request-id"] == "abc.DEF_123-x"
    for bad in ["has space", "x" * 129, "semi;colon", ""]:
        response = await pgw.client.get("/health", headers={"X-Request-Id": bad})
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "NOT_FOUND"),
        ("DELETE", "/health", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/whoami", 401, "UNAUTHENTICATED"),
    ],
)
async def test_every_answer_has_the_headers_and_envelope(
    pgw: Gateway, method: str, path: str, status: int, code: str
) -> None:
    response = await pgw.client.request(method, path)
    assert response.status_code == status
    assert response.headers["x-api-version"] == "1.0"
    assert response.headers["x-request-id"]
    assert response.json()["code"] == code
    assert isinstance(response.json()["message"], str)


async def test_401_carries_www_authenticate(pgw: Gateway) -> None:
    for headers in [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer not.a.jwt"}]:
        response = await pgw.client.get("/api/v1/whoami", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_unhandled_error_is_500_envelope_without_trace_and_logged(
    pgw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await pgw.client.get(
            "/test/boom", headers={**pgw.auth("acme"), "X-Request-Id": "crash-1"}
        )
    assert response.status_code == 500
    assert response.json() == {"code": "INTERNAL", "message": response.json()["message"]}
    assert "Jane" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "crash-1"
    assert response.headers["x-api-version"] == "1.0"
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_lost_database_is_503_not_500(pgw: Gateway) -> None:
    response = await pgw.client.get("/test/db-down", headers=pgw.auth("acme"))
    assert response.status_code == 503
    assert response.json()["code"] == "UPSTREAM_UNAVAILABLE"


async def test_validation_errors_name_the_field(pgw: Gateway) -> None:
    response = await pgw.client.post(
        "/test/echo", json={"text": "hi", "count": "many"}, headers=pgw.auth("acme")
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert body["details"]["errors"][0]["path"] == "count"


async def test_oversized_body_is_413_by_header_and_by_stream(pgw: Gateway) -> None:
    big = b'{"text": "' + b"x" * 5000 + b'", "count": 1}'
    declared = await pgw.client.post(
        "/test/echo", content=big, headers={**pgw.auth("acme"), "Content-Type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert declared.json()["details"] == {"maxBytes": 2048}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    streamed = await pgw.client.post(
        "/test/echo",
        content=chunks(),
        headers={**pgw.auth("acme"), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "PAYLOAD_TOO_LARGE"
    small = await pgw.client.post(
        "/test/echo", json={"text": "hi", "count": 2}, headers=pgw.auth("acme")
    )
    assert small.status_code == 200


async def test_addon_gate(pgw: Gateway) -> None:
    allowed = await pgw.client.get("/test/imaging", headers=pgw.auth("acme"))
    assert allowed.status_code == 200
    denied = await pgw.client.get("/test/imaging", headers=pgw.auth("plain"))
    assert denied.status_code == 403
    assert denied.json()["code"] == "ADDON_REQUIRED"
    assert denied.json()["details"] == {"addon": "medical_imaging"}


async def test_scope_gate(pgw: Gateway) -> None:
    response = await pgw.client.get("/test/imaging", headers=pgw.auth("acme", scopes="ai:use"))
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"


async def test_tenant_states(pgw: Gateway) -> None:
    await pgw.create_tenant("later", status="pending")
    assert (await pgw.client.get("/api/v1/whoami", headers=pgw.auth("ghost"))).json()[
        "code"
    ] == "TENANT_UNKNOWN"
    assert (await pgw.client.get("/api/v1/whoami", headers=pgw.auth("later"))).json()[
        "code"
    ] == "TENANT_INACTIVE"
    headers = pgw.auth("acme")
    assert (await pgw.client.get("/api/v1/whoami", headers=headers)).status_code == 200
    await pgw.client.post("/admin/tenants/acme/suspend", headers=pgw.admin())
    suspended = await pgw.client.get("/api/v1/whoami", headers=headers)
    assert suspended.status_code == 403
    assert suspended.json()["code"] == "TENANT_SUSPENDED"
    await pgw.client.post("/admin/tenants/acme/activate", headers=pgw.admin())
    assert (await pgw.client.get("/api/v1/whoami", headers=headers)).status_code == 200
    await pgw.client.delete("/admin/tenants/acme", headers=pgw.admin())
    gone = await pgw.client.get("/api/v1/whoami", headers=headers)
    assert gone.json()["code"] == "TENANT_UNKNOWN"


async def test_addon_removal_applies_on_the_next_request(pgw: Gateway) -> None:
    headers = pgw.auth("acme")
    assert (await pgw.client.get("/test/imaging", headers=headers)).status_code == 200
    await pgw.client.put("/admin/tenants/acme", json={"addons": []}, headers=pgw.admin())
    assert (await pgw.client.get("/test/imaging", headers=headers)).status_code == 403


async def test_tenant_claim_may_carry_the_tenant_id(pgw: Gateway) -> None:
    tenant_id = pgw.tenants["acme"]["id"]
    response = await pgw.client.get("/api/v1/whoami", headers=pgw.auth(tenant_id))
    assert response.status_code == 200
    assert response.json()["tenant"] == "acme"


async def test_token_without_tenant_is_forbidden_on_tenant_routes(pgw: Gateway) -> None:
    response = await pgw.client.get("/api/v1/whoami", headers=pgw.admin())
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"


async def test_whoami_answers_from_token_and_tenant(pgw: Gateway) -> None:
    body = (await pgw.client.get("/api/v1/whoami", headers=pgw.auth("acme"))).json()
    assert body["tenant"] == "acme"
    assert body["subject"] == "user-1"
    assert body["addons"] == ["medical_imaging"]
    assert body["rateLimit"] == {"ratePerSecond": 10.0, "burst": 20}
    assert "imaging:read" in body["scopes"]


def test_a_route_the_guard_cannot_wrap_stops_the_start(tmp_path: Path, sqlite_url: str) -> None:
    """A mount or websocket would be served past authentication: refused when the app is built."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount

    from novaza_gateway.app import create_app

    sneaky = APIRouter()
    sneaky.routes.append(Mount("/files", app=PlainTextResponse("open")))
    with pytest.raises(RuntimeError, match="cannot be guarded"):
        create_app(gateway_settings(tmp_path / "data", sqlite_url), extra_routers=(sneaky,))

    undeclared = APIRouter()

    @undeclared.get("/nopolicy")
    async def nopolicy() -> None:
        return None

    with pytest.raises(RuntimeError, match="declares no policy"):
        create_app(gateway_settings(tmp_path / "data2", sqlite_url), extra_routers=(undeclared,))
