"""Failed authentications per client address: past the budget, 429 instead of 401.

Each failure counts against ``authfail:<address>`` in the shared ``RateLimiter`` (Redis when
configured, so replicas share the count; local otherwise, or while Redis is down). An address
past its budget is remembered here until its retry time, so its next requests are refused
before any signature check and without a Redis round trip. A valid token costs one dict
lookup: only failures reach the limiter.

The address is ``scope["client"]``: the socket peer, or the right-most untrusted
``X-Forwarded-For`` hop when the peer is one of ``NOVAZA_TRUSTED_PROXIES`` (uvicorn's proxy
headers layer, ``novaza serve``).
"""

from __future__ import annotations

import logging
import math
import time

from starlette.types import Scope

from novaza_gateway.core.errors import AuthFailuresLimited
from novaza_gateway.core.ratelimit import RateLimiter
from novaza_gateway.core.tenancy import RateLimitPolicy

log = logging.getLogger("novaza.auth")
MAX_BLOCKED = 100_000


def client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthFailureLimit:
    def __init__(self, limiter: RateLimiter, per_minute: int) -> None:
        self._limiter = limiter
        self._policy = RateLimitPolicy(rate_per_second=per_minute / 60.0, burst=per_minute)
        self._blocked: dict[str, float] = {}  # address -> monotonic time it may try again

    def refused(self, address: str) -> AuthFailuresLimited | None:
        """The answer for an address still blocked, from memory alone."""
        until = self._blocked.get(address)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[address]
            return None
        return _limited(left)

    async def failed(self, address: str) -> AuthFailuresLimited | None:
        """Counts one failure; the answer that replaces the 401 once the budget is spent."""
        decision = await self._limiter.decide(f"authfail:{address}", self._policy)
        if decision.allowed:
            return None
        wait = max(decision.retry_after_seconds, 0.001)
        if address not in self._blocked:
            log.warning("failed authentications limited", extra={"client": address})
            if len(self._blocked) >= MAX_BLOCKED:
                self._prune()
        self._blocked[address] = time.monotonic() + wait
        return _limited(wait)

    def _prune(self) -> None:
        now = time.monotonic()
        for address in [a for a, until in self._blocked.items() if until <= now]:
            del self._blocked[address]
        while len(self._blocked) >= MAX_BLOCKED:
            del self._blocked[next(iter(self._blocked))]


def _limited(wait_seconds: float) -> AuthFailuresLimited:
    return AuthFailuresLimited(max(1, math.ceil(wait_seconds)), {})
