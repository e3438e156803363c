"""Per-tenant rate limiting with GCRA (the generic cell rate algorithm).

A tenant with rate r/s and burst b may send b requests at once and then r per second. The
state per tenant is one number, the theoretical arrival time (TAT). The Redis backend runs
the same arithmetic in one Lua call on the server's clock, so N replicas share one limit. When
Redis is slow (timeout ~25 ms) or down, a circuit breaker sends decisions to the local limiter:
never a 500, never a hang.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from novaza_gateway.config import RateLimitSettings
from novaza_gateway.core.metrics import RATELIMIT_DECISIONS, RATELIMIT_FALLBACKS, TALLY
from novaza_gateway.core.resp import PipelinedRedis, Script, encode_command
from novaza_gateway.core.tenancy import RateLimitPolicy

log = logging.getLogger("novaza.ratelimit")
_DECISIONS = {
    (allowed, backend): RATELIMIT_DECISIONS.labels(
        outcome="allowed" if allowed else "limited", backend=backend
    )
    for allowed in (True, False)
    for backend in ("memory", "redis")
}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the bucket is full again
    retry_after_seconds: float  # until the next request would pass (0 when allowed)

    def headers(self, window_seconds: float) -> list[tuple[bytes, bytes]]:
        reset = max(0, math.ceil(self.reset_seconds))
        policy, limit = _policy_headers(self.limit, max(1, math.ceil(window_seconds)))
        return [
            policy,
            (b"ratelimit", b'"tenant";r=%d;t=%d' % (self.remaining, reset)),
            limit,
            (b"x-ratelimit-remaining", b"%d" % self.remaining),
            (b"x-ratelimit-reset", b"%d" % reset),
        ]


@functools.lru_cache(maxsize=1024)
def _policy_headers(limit: int, window: int) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """A tenant's policy headers, the same on every answer until its limits change."""
    return (
        (b"ratelimit-policy", b'"tenant";q=%d;w=%d' % (limit, window)),
        (b"x-ratelimit-limit", b"%d" % limit),
    )


def gcra(tat: float, now: float, policy: RateLimitPolicy) -> tuple[Decision, float]:
    """One decision: (answer, new TAT). Pure, shared by both backends' tests."""
    interval = 1.0 / policy.rate_per_second
    capacity = policy.burst * interval
    new_tat = max(tat, now) + interval
    over = new_tat - now - capacity
    if over > 1e-9:
        backlog = max(tat, now) - now
        remaining = 0
        return Decision(False, policy.burst, remaining, backlog, over), tat
    remaining = int((capacity - (new_tat - now)) / interval + 1e-9)
    return Decision(True, policy.burst, remaining, new_tat - now, 0.0), new_tat


class Limiter(Protocol):
    name: str

    async def decide(self, key: str, policy: RateLimitPolicy) -> Decision: ...


class MemoryLimiter:
    name = "memory"

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    async def decide(self, key: str, policy: RateLimitPolicy) -> Decision:
        return self.decide_now(key, policy, time.monotonic())

    def decide_now(self, key: str, policy: RateLimitPolicy, now: float) -> Decision:
        decision, tat = gcra(self._tat.get(key, now), now, policy)
        if len(self._tat) >= self._max_keys and key not in self._tat:
            self._prune(now)
        self._tat[key] = tat
        return decision

    def _prune(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


# KEYS[1] = bucket; ARGV = interval seconds, capacity seconds.
# Returns {allowed, remaining, reset_ms, retry_ms}. TIME is the server clock: replicas agree.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local over = new_tat - now - capacity
if over > 1e-9 then
  return {0, 0, math.ceil((tat - now) * 1000), math.ceil(over * 1000)}
end
local ttl_ms = math.ceil((new_tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
local remaining = math.floor((capacity - (new_tat - now)) / interval + 1e-9)
return {1, remaining, math.ceil((new_tat - now) * 1000), 0}
"""


_GCRA = Script(_GCRA_LUA)


class RedisLimiter:
    name = "redis"

    def __init__(self, client: PipelinedRedis) -> None:
        self._client = client
        # A tenant's call is the same bytes every time until its limits change: encoded once.
        self._calls: dict[tuple[str, RateLimitPolicy], tuple[list[str], list[str], bytes]] = {}

    async def decide(self, key: str, policy: RateLimitPolicy) -> Decision:
        call = self._calls.get((key, policy))
        if call is None:
            call = self._encode(key, policy)
        keys, args, evalsha = call
        result = await self._client.eval_script(_GCRA, keys, args, evalsha)
        allowed, remaining, reset_ms, retry_ms = (int(x) for x in result)
        return Decision(
            bool(allowed), policy.burst, remaining, reset_ms / 1000.0, retry_ms / 1000.0
        )

    def _encode(self, key: str, policy: RateLimitPolicy) -> tuple[list[str], list[str], bytes]:
        interval = 1.0 / policy.rate_per_second
        keys, args = [f"novaza:rl:{key}"], [repr(interval), repr(policy.burst * interval)]
        call = (keys, args, encode_command("EVALSHA", _GCRA.sha, len(keys), *keys, *args))
        if len(self._calls) >= 10_000:  # tenants x limit changes: start over rather than grow
            self._calls.clear()
        self._calls[key, policy] = call
        return call

    async def aclose(self) -> None:
        await self._client.aclose()


class CircuitBreaker:
    """Closed -> open after N consecutive failures; one trial call after the reset time."""

    def __init__(self, failures: int, reset_seconds: float) -> None:
        self._threshold = failures
        self._reset = reset_seconds
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self._opened_at >= self._reset else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "half_open":
            self._opened_at = time.monotonic()  # exactly one trial per reset period
            return True
        return state == "closed"

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._opened_at = time.monotonic()


class RateLimiter:
    """The decision the request path asks for: shared backend first, local when it fails."""

    def __init__(self, shared: RedisLimiter | None, settings: RateLimitSettings) -> None:
        self._shared = shared
        self._local = MemoryLimiter()
        self._breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds)
        self.fallback_active = False

    @property
    def backend(self) -> str:
        return self._shared.name if self._shared else self._local.name

    @property
    def breaker_state(self) -> str:
        return self._breaker.state if self._shared else "n/a"

    async def decide(self, key: str, policy: RateLimitPolicy) -> Decision:
        if self._shared is not None:
            if self._breaker.allow():
                try:
                    decision = await self._shared.decide(key, policy)
                except Exception as exc:  # timeout, refused, script error: never the caller's 500
                    self._breaker.failure()
                    self._note_fallback(type(exc).__name__)
                else:
                    self._breaker.success()
                    self.fallback_active = False
                    self._count(decision, self._shared.name)
                    return decision
            else:
                self._note_fallback("breaker_open")
        decision = await self._local.decide(key, policy)
        self._count(decision, "memory")
        return decision

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    def _note_fallback(self, reason: str) -> None:
        if not self.fallback_active:
            log.warning("rate limiter falling back to local decisions", extra={"reason": reason})
        self.fallback_active = True
        RATELIMIT_FALLBACKS.labels(reason=reason).inc()

    @staticmethod
    def _count(decision: Decision, backend: str) -> None:
        TALLY.inc(_DECISIONS[decision.allowed, backend])
