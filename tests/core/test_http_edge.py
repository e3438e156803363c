"""Failed authentications limited per client address (core.authlimit), on the local limiter
and on Redis shared by two app instances; the trusted-proxy setting's validation."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from novaza_gateway.config import ConfigurationError, load_settings
from novaza_gateway.core import httpserver
from tests.conftest import Gateway, gateway_settings, start_gateway

BUDGET = 5
ADMIN_ROUTE = "/admin/tenants/"
BAD = {"Authorization": "Bearer not-a-token"}


def address() -> str:
    """Fresh per test run: Redis keeps counts across runs for up to a minute."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


@contextlib.asynccontextmanager
async def gateways(tmp_path: Path, db: str, redis: str | None, count: int) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for _ in range(count):
            settings = gateway_settings(
                tmp_path / "data",
                db,
                redis_url=redis,
                auth_failures_per_minute=BUDGET,
                ratelimit_redis_timeout_ms=2000,  # a loaded test machine: Redis, not fallback
            )
            agen = start_gateway(settings)
            started.append(await agen.__anext__())
            stack.push_async_callback(agen.aclose)
        yield started
        for gw in started:  # every decision came from the backend under test
            assert not gw.app.state.runtime.limiter.fallback_active


def client(gw: Gateway, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=gw.app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def failures_counted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "novaza_auth_failures"
        for sample in metric.samples
        if sample.name == "novaza_auth_failures_total"
    )


def decisions_taken() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "novaza_ratelimit_decisions"
        for sample in metric.samples
        if sample.name == "novaza_ratelimit_decisions_total"
    )


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def test_an_address_spraying_bad_tokens_gets_429_others_do_not(
    tmp_path: Path, sqlite_url: str, backend: str | None
) -> None:
    async with gateways(tmp_path, sqlite_url, backend, 1) as (gw,):
        sprayer, other = address(), address()
        async with client(gw, sprayer) as spray:
            statuses = [(await spray.get(ADMIN_ROUTE, headers=BAD)).status_code for _ in range(6)]
            assert statuses == [401] * BUDGET + [429]
            refused = await spray.get(ADMIN_ROUTE, headers=BAD)
            assert refused.status_code == 429
            assert refused.json()["code"] == "RATE_LIMITED"
            assert "failed authentications" in refused.json()["message"]
            assert int(refused.headers["retry-after"]) >= 1
            # blocked before any verification: even a valid token waits, and no failure counts
            before = failures_counted()
            assert (await spray.get(ADMIN_ROUTE, headers=gw.admin())).status_code == 429
            assert (await spray.get(ADMIN_ROUTE, headers=BAD)).status_code == 429
            assert failures_counted() == before
        async with client(gw, other) as elsewhere:
            assert (await elsewhere.get(ADMIN_ROUTE, headers=BAD)).status_code == 401
            assert (await elsewhere.get(ADMIN_ROUTE, headers=gw.admin())).status_code == 200


async def test_valid_tokens_from_a_fresh_address_never_count(
    tmp_path: Path, sqlite_url: str, backend: str | None
) -> None:
    """Only failures reach the limiter: an admin route (no tenant limit) asks it nothing."""
    async with gateways(tmp_path, sqlite_url, backend, 1) as (gw,):
        fresh = client(gw, address())
        before = decisions_taken()
        for _ in range(BUDGET * 3):
            assert (await fresh.get(ADMIN_ROUTE, headers=gw.admin())).status_code == 200
        assert decisions_taken() == before
        await fresh.aclose()


async def test_two_instances_sharing_redis_share_the_count(
    tmp_path: Path, sqlite_url: str, redis_url: str
) -> None:
    async with gateways(tmp_path, sqlite_url, redis_url, 2) as (first, second):
        sprayer = address()
        async with client(first, sprayer) as one, client(second, sprayer) as two:
            for _ in range(3):
                assert (await one.get(ADMIN_ROUTE, headers=BAD)).status_code == 401
            for _ in range(BUDGET - 3):
                assert (await two.get(ADMIN_ROUTE, headers=BAD)).status_code == 401
            assert (await one.get(ADMIN_ROUTE, headers=BAD)).status_code == 429
            # the other instance learns from Redis on its next failure, then from memory
            assert (await two.get(ADMIN_ROUTE, headers=BAD)).status_code == 429
            assert (await two.get(ADMIN_ROUTE, headers=second.admin())).status_code == 429


@pytest.mark.parametrize("value", ["10.0.0.1", "10.0.0.0/8, 192.168.1.7", "::1,fd00::/8", ""])
def test_trusted_proxies_take_ips_and_cidrs(tmp_path: Path, value: str) -> None:
    settings = load_settings(data_dir=tmp_path, trusted_proxies=value)
    assert settings.trusted_proxy_list == [v.strip() for v in value.split(",") if v.strip()]


@pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.0/33"])
def test_trusted_proxies_refuse_what_is_no_address(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigurationError, match="NOVAZA_TRUSTED_PROXIES"):
        load_settings(data_dir=tmp_path, trusted_proxies=value)


@pytest.mark.parametrize(
    ("descriptors", "configured", "effective"),
    [(1024, 1000, 1024 - httpserver.RESERVED_DESCRIPTORS), (1_048_576, 1000, 1000), (1024, 50, 50)],
)
def test_the_connection_cap_stays_below_the_descriptor_limit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    descriptors: int,
    configured: int,
    effective: int,
) -> None:
    """Past the descriptor limit ``accept`` fails and clients wait unanswered: no 503."""
    monkeypatch.setattr(httpserver.resource, "getrlimit", lambda _: (descriptors, descriptors))
    limits = load_settings(data_dir=tmp_path, max_connections=configured).edge
    factory = httpserver.protocol_factory(limits)
    assert factory.keywords["limits"].max_connections == effective  # type: ignore[attr-defined]
