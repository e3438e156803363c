"""GCRA arithmetic, both backends, and the fallback when Redis is down."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from novaza_gateway.config import RateLimitSettings
from novaza_gateway.core.ratelimit import (
    CircuitBreaker,
    MemoryLimiter,
    RateLimiter,
    RedisLimiter,
    gcra,
)
from novaza_gateway.core.resp import PipelinedRedis
from novaza_gateway.core.tenancy import RateLimitPolicy
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway

POLICY = RateLimitPolicy(rate_per_second=10.0, burst=5)
FAST_FAIL = RateLimitSettings(
    redis_timeout_seconds=0.025, breaker_failures=2, breaker_reset_seconds=60
)


def test_gcra_admits_the_burst_at_once_then_the_rate() -> None:
    limiter = MemoryLimiter()
    now = 1000.0
    answers = [limiter.decide_now("t", POLICY, now) for _ in range(7)]
    assert [a.allowed for a in answers] == [True] * 5 + [False] * 2
    assert [a.remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert answers[5].retry_after_seconds == pytest.approx(0.1)
    # one interval later exactly one more request fits
    assert limiter.decide_now("t", POLICY, now + 0.1).allowed
    assert not limiter.decide_now("t", POLICY, now + 0.1).allowed
    # after the full window the burst is back
    later = [limiter.decide_now("t", POLICY, now + 10).allowed for _ in range(6)]
    assert later == [True] * 5 + [False]


def test_gcra_steady_rate_over_time_matches_rate_plus_burst() -> None:
    limiter = MemoryLimiter()
    admitted = 0
    for step in range(2000):  # 2 s at 1 ms spacing: 1000 req/s offered
        admitted += limiter.decide_now("t", POLICY, 500.0 + step * 0.001).allowed
    assert admitted == POLICY.burst + int(2.0 * POLICY.rate_per_second) - 1 or admitted == (
        POLICY.burst + int(2.0 * POLICY.rate_per_second)
    )


def test_denied_request_does_not_consume_capacity() -> None:
    decision, tat = gcra(110.0, 100.0, RateLimitPolicy(1.0, 10))
    assert not decision.allowed
    assert tat == 110.0


def test_headers_follow_the_ietf_draft_and_x_ratelimit() -> None:
    decision, _ = gcra(0.0, 100.0, POLICY)
    headers = dict((k.decode(), v.decode()) for k, v in decision.headers(0.5))
    assert headers["ratelimit-policy"] == '"tenant";q=5;w=1'
    assert headers["ratelimit"] == '"tenant";r=4;t=1'
    assert headers["x-ratelimit-limit"] == "5"
    assert headers["x-ratelimit-remaining"] == "4"


async def test_redis_backend_shares_state_between_limiters(redis_url: str) -> None:
    key = uuid.uuid4().hex
    a = PipelinedRedis.from_url(redis_url, timeout=1.0)
    b = PipelinedRedis.from_url(redis_url, timeout=1.0)
    try:
        first, second = RedisLimiter(a), RedisLimiter(b)
        answers = []
        for i in range(8):
            limiter = first if i % 2 else second
            answers.append((await limiter.decide(key, POLICY)).allowed)
        assert answers.count(True) == 5
        assert answers[:5] == [True] * 5
        # many requests in one loop turn share one write; replies still go to their callers
        burst_key = uuid.uuid4().hex
        together = await asyncio.gather(*(first.decide(burst_key, POLICY) for _ in range(50)))
        assert [d.allowed for d in together] == [True] * 5 + [False] * 45
        assert [d.remaining for d in together[:5]] == [4, 3, 2, 1, 0]
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_backend_follows_a_changed_limit_and_a_flushed_script(redis_url: str) -> None:
    """Each tenant's call is encoded once; a new limit is a new call, and a Redis that lost
    the script (restart, SCRIPT FLUSH) gets it again."""
    key = uuid.uuid4().hex
    client = PipelinedRedis.from_url(redis_url, timeout=1.0)
    try:
        limiter = RedisLimiter(client)
        assert (await limiter.decide(key, POLICY)).limit == 5
        wider = RateLimitPolicy(rate_per_second=1.0, burst=50)
        decision = await limiter.decide(key, wider)
        assert decision.limit == 50 and decision.allowed
        assert await client.execute("SCRIPT", "FLUSH") == "OK"
        again = await limiter.decide(key, wider)
        assert again.allowed and again.remaining < decision.remaining
    finally:
        await client.aclose()


async def test_redis_backend_down_falls_back_to_local_quickly() -> None:
    port = free_port()  # nothing listens here
    client = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.025)
    limiter = RateLimiter(RedisLimiter(client), FAST_FAIL)
    try:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        answers = [await limiter.decide("t", POLICY) for _ in range(7)]
        assert loop.time() - begin < 1.0
        assert [a.allowed for a in answers] == [True] * 5 + [False] * 2
        assert limiter.fallback_active
        assert limiter.breaker_state == "open"
    finally:
        await client.aclose()


async def test_redis_that_never_answers_times_out_at_the_short_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.025)
    limiter = RateLimiter(RedisLimiter(client), FAST_FAIL)
    try:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        decision = await limiter.decide("t", POLICY)
        assert decision.allowed
        assert loop.time() - begin < 0.5
        assert limiter.fallback_active
    finally:
        await client.aclose()
        server.close()


def test_breaker_opens_after_threshold_and_allows_one_trial() -> None:
    breaker = CircuitBreaker(failures=2, reset_seconds=0.0)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "half_open"  # reset time 0: a trial is due at once
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    slow = CircuitBreaker(failures=1, reset_seconds=60)
    slow.failure()
    assert not slow.allow()


# ------------------------------------------------------------------------- through the API


async def test_limited_responses_carry_headers_and_429_envelope(gateway: Gateway) -> None:
    await gateway.create_tenant("busy", rateLimit={"ratePerSecond": 1, "burst": 3})
    headers = gateway.auth("busy")
    answers = [await gateway.client.get("/api/v1/whoami", headers=headers) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    ok = answers[0]
    assert ok.headers["ratelimit-policy"] == '"tenant";q=3;w=3'
    assert ok.headers["x-ratelimit-limit"] == "3"
    assert ok.headers["x-ratelimit-remaining"] == "2"
    limited = answers[3]
    assert limited.json() == {
        "code": "RATE_LIMITED",
        "message": limited.json()["message"],
        "details": {"retryAfterSeconds": 1},
    }
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-api-version"] == "1.0"
    assert limited.headers["x-request-id"]


async def test_limits_are_per_tenant(gw: Gateway) -> None:
    await gw.create_tenant("one", rateLimit={"ratePerSecond": 1, "burst": 1})
    await gw.create_tenant("two", rateLimit={"ratePerSecond": 1, "burst": 1})
    assert (await gw.client.get("/api/v1/whoami", headers=gw.auth("one"))).status_code == 200
    assert (await gw.client.get("/api/v1/whoami", headers=gw.auth("one"))).status_code == 429
    assert (await gw.client.get("/api/v1/whoami", headers=gw.auth("two"))).status_code == 200


async def test_plan_change_changes_the_limit_on_the_next_request(gw: Gateway) -> None:
    await gw.create_tenant("grow", rateLimit={"ratePerSecond": 1, "burst": 1})
    headers = gw.auth("grow")
    assert (await gw.client.get("/api/v1/whoami", headers=headers)).status_code == 200
    assert (await gw.client.get("/api/v1/whoami", headers=headers)).status_code == 429
    await gw.client.put(
        "/admin/tenants/grow", json={"rateLimit": None, "plan": "enterprise"}, headers=gw.admin()
    )
    response = await gw.client.get("/api/v1/whoami", headers=headers)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit"] == "400"


async def test_redis_backend_through_the_api_shares_one_limit_between_apps(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    """Two gateway apps on one store and one Redis admit the burst once, not twice."""
    settings = gateway_settings(tmp_path / "data", db_url, redis_url=redis_url)
    async for first in start_gateway(settings):
        tenant = await first.create_tenant(
            f"shared-{uuid.uuid4().hex[:8]}", rateLimit={"ratePerSecond": 0.5, "burst": 4}
        )
        headers = first.auth(tenant["slug"])
        async for second in start_gateway(settings):
            statuses = []
            for i in range(8):
                client = (first if i % 2 else second).client
                statuses.append((await client.get("/api/v1/whoami", headers=headers)).status_code)
            assert statuses.count(200) == 4
            assert statuses[4:] == [429] * 4
            decisions = (await second.client.get("/metrics")).text
            sample = 'novaza_ratelimit_decisions_total{backend="redis",outcome="allowed"}'
            assert sample in decisions
