"""The front door: one layer for ids, metrics and the access log; StateRoutes skip the
framework's layers, every other route still goes through them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from novaza_gateway.core.metrics import Tally
from novaza_gateway.core.policy import policy
from novaza_gateway.core.requestid import new_request_id
from tests.conftest import Gateway, gateway_settings, start_gateway

probe = APIRouter(prefix="/test", tags=["test"])


@probe.get("/plain", **policy())
async def plain() -> dict[str, str]:
    return {"ok": "yes"}


class Seen:
    """A user middleware: it sits inside the front door, with the framework's layers."""

    paths: list[str] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Seen.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
async def fgw(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Gateway]:
    settings = gateway_settings(tmp_path / "data", sqlite_url)
    async for gw in start_gateway(settings, extra_routers=(probe,)):
        await gw.create_tenant("acme")
        yield gw


async def test_state_routes_skip_the_framework_layers_and_others_pass_them(
    fgw: Gateway,
) -> None:
    fgw.app.middleware_stack = None  # rebuilt on the next request, with the middleware
    fgw.app.add_middleware(Seen)
    Seen.paths = []
    for path in ("/health", "/api/v1/whoami", "/test/plain", "/no/such/route"):
        answer = await fgw.client.get(path, headers=fgw.auth("acme"))
        assert answer.headers["x-request-id"] and answer.headers["x-api-version"] == "1.0"
        assert answer.status_code == (404 if path.startswith("/no/") else 200)
    assert Seen.paths == ["/test/plain", "/no/such/route"]
    # the guard's rate-limit headers reach the answer both ways
    for path in ("/api/v1/whoami", "/test/plain"):
        answer = await fgw.client.get(path, headers=fgw.auth("acme"))
        assert answer.headers["ratelimit-policy"].startswith('"tenant"')
        assert answer.headers["x-ratelimit-remaining"].isdigit()
        assert answer.headers.get_list("x-request-id") == [answer.headers["x-request-id"]]


async def test_metrics_count_every_answer_exactly(fgw: Gateway) -> None:
    def count(text: str, route: str, status: str) -> float:
        found = re.search(
            rf'novaza_http_requests_total\{{method="GET",route="{re.escape(route)}",'
            rf'status="{status}"\}} ([0-9.e+]+)',
            text,
        )
        return float(found.group(1)) if found else 0.0

    before = (await fgw.client.get("/metrics")).text
    for _ in range(7):
        await fgw.client.get("/api/v1/whoami", headers=fgw.auth("acme"))
    await fgw.client.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
    after = (await fgw.client.get("/metrics")).text
    assert count(after, "/api/v1/whoami", "200") - count(before, "/api/v1/whoami", "200") == 7
    assert count(after, "/api/v1/whoami", "401") - count(before, "/api/v1/whoami", "401") == 1


def test_tally_applies_what_prometheus_would_observe() -> None:
    registry = CollectorRegistry()
    bounds = (0.001, 0.005, 0.01, 0.1, 1.0)
    direct = Histogram("direct_seconds", "d", buckets=bounds, registry=registry)
    tallied = Histogram("tallied_seconds", "t", buckets=bounds, registry=registry)
    values = [0.0, 0.001, 0.0010001, 0.005, 0.02, 0.1, 0.5, 1.0, 3.0, 1e-9, 0.0099]
    tally = Tally()  # no running loop: applied at once, one value at a time
    for value in values:
        direct.observe(value)
        tally.observe(tallied, value)

    def samples(name: str) -> list[tuple[str, float]]:
        metric = next(m for m in registry.collect() if m.name == name)
        return sorted(
            (s.name.removeprefix(name) + repr(s.labels), s.value)
            for s in metric.samples
            if not s.name.endswith("_created")
        )

    assert samples("tallied_seconds") == samples("direct_seconds")


async def test_tally_batches_a_loop_turn_and_flushes_once() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("turn_seconds", "t", buckets=(0.01, 0.1), registry=registry)
    tally = Tally()
    for value in (0.005, 0.05, 0.5, 0.05):
        tally.observe(histogram, value)
    assert registry.get_sample_value("turn_seconds_count") == 0  # pending in this turn
    await asyncio.sleep(0)  # the scheduled pass runs
    assert registry.get_sample_value("turn_seconds_count") == 4
    assert registry.get_sample_value("turn_seconds_bucket", {"le": "0.1"}) == 3
    assert registry.get_sample_value("turn_seconds_sum") == pytest.approx(0.605)


def test_generated_request_ids_are_128_bit_hex_and_unique() -> None:
    ids = {new_request_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
