"""Tenant resolution for the request path: who the caller acts for, and what it may use.

``core`` knows tenants only through ``TenantSource`` (wired in ``app.py`` from the tenants
area). Resolved tenants are cached per process for a short TTL, invalidated locally at once
on change and across replicas through Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis

from novaza_gateway.core.errors import TenantInactive, TenantSuspended, TenantUnknown
from novaza_gateway.core.metrics import TALLY, TENANT_CACHE

log = logging.getLogger("novaza.tenancy")

INVALIDATION_CHANNEL = "novaza:tenants:invalidate"
_HIT = TENANT_CACHE.labels(result="hit")
_MISS = TENANT_CACHE.labels(result="miss")


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    rate_per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class TenantContext:
    id: str
    slug: str
    status: str
    plan: str
    addons: frozenset[str]
    rate_limit: RateLimitPolicy
    rate_limit_override: RateLimitPolicy | None = None  # the operator's, when one is set

    def check_active(self) -> None:
        if self.status == "active":
            return
        if self.status == "suspended":
            raise TenantSuspended()
        if self.status == "pending":
            raise TenantInactive()
        raise TenantUnknown()


class TenantSource(Protocol):
    async def load(self, key: str) -> TenantContext | None:
        """The tenant whose slug or id is ``key``, with resolved entitlements; None if unknown."""


class TenantCache:
    """Resolved tenants per process, for ``ttl_seconds``; one load per key at a time.

    An invalidation wins over every load that started before it: it bumps ``_epoch`` and
    detaches the loads in flight, so a load that read the tenant before the change neither
    stores its answer nor hands it to requests that arrive after the invalidation. (Without
    this, a suspension announced while another replica was loading the tenant was undone by
    that load for one TTL.) The epoch is one counter, not one per key: a tenant is cached
    under its slug and its id, and invalidations are rare enough that a load they discard
    costs nothing worth tracking keys for.
    """

    def __init__(self, source: TenantSource, ttl_seconds: float) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[TenantContext | None, float]] = {}
        self._inflight: dict[str, asyncio.Future[TenantContext | None]] = {}
        self._epoch = 0

    async def resolve(self, key: str) -> TenantContext:
        tenant = await self.get(key)
        if tenant is None:
            raise TenantUnknown()
        tenant.check_active()
        return tenant

    def peek(self, key: str) -> tuple[bool, TenantContext | None]:
        """``get`` without waiting: (True, tenant or None) when a fresh entry answers,
        (False, None) when ``get`` would have to load it."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] > time.monotonic():
            TALLY.inc(_HIT)
            return True, entry[0]
        return False, None

    async def get(self, key: str) -> TenantContext | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] > time.monotonic():
            TALLY.inc(_HIT)
            return entry[0]
        _MISS.inc()
        inflight = self._inflight.get(key)
        if inflight is not None:  # one load per key, however many requests wait for it
            return await asyncio.shield(inflight)
        return await self._load(key)

    async def _load(self, key: str) -> TenantContext | None:
        future: asyncio.Future[TenantContext | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        epoch = self._epoch
        try:
            tenant = await self._source.load(key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may be none
            raise
        finally:
            if self._inflight.get(key) is future:  # not detached by an invalidation
                del self._inflight[key]
        future.set_result(tenant)
        if epoch == self._epoch:  # no invalidation since the load began
            self._entries[key] = (tenant, time.monotonic() + self._ttl)
        return tenant

    def invalidate(self, *keys: str) -> None:
        self._epoch += 1
        self._inflight.clear()  # later requests load afresh instead of joining a stale load
        for key in keys:
            self._entries.pop(key, None)
        # a tenant is cached under both slug and id: drop every alias of the same tenant
        stale = [k for k, (t, _) in self._entries.items() if t and (t.slug in keys or t.id in keys)]
        for key in stale:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._epoch += 1
        self._inflight.clear()
        self._entries.clear()


class TenantInvalidator:
    """Announces tenant changes to every replica and applies the announcements it hears.

    Publishing goes through ``publisher`` (short timeouts: an announcement runs before the
    admin's answer and is best effort, replicas converge through the TTL anyway); listening
    holds its own connection and pings it, so a connection that went silent is noticed.
    """

    KEEPALIVE_SECONDS = 10.0

    def __init__(
        self,
        cache: TenantCache,
        listener: redis.Redis | None,
        publisher: redis.Redis | None = None,
    ) -> None:
        self._cache = cache
        self._listener = listener
        self._publisher = publisher or listener

    async def announce(self, *keys: str) -> None:
        self._cache.invalidate(*keys)
        if self._publisher is None:
            return
        try:
            for key in keys:
                await self._publisher.publish(INVALIDATION_CHANNEL, key)
        except Exception as exc:  # replicas still converge through the TTL
            log.warning("tenant invalidation not published", extra={"error": type(exc).__name__})

    async def listen(self) -> None:
        if self._listener is None:
            return
        while True:
            try:
                await self._listen_once(self._listener)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "tenant invalidation listener lost Redis", extra={"error": type(exc).__name__}
                )
            self._cache.clear()  # messages may have been missed while disconnected
            await asyncio.sleep(1.0)

    async def _listen_once(self, client: redis.Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(INVALIDATION_CHANNEL)
            self._cache.clear()
            loop = asyncio.get_running_loop()
            last_heard = last_ping = loop.time()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                now = loop.time()
                if message is not None:
                    last_heard = now
                    if message.get("type") == "message":
                        self._cache.invalidate(_text(message["data"]))
                if now - last_ping >= self.KEEPALIVE_SECONDS:
                    await pubsub.ping()
                    last_ping = now
                if now - last_heard > 2.5 * self.KEEPALIVE_SECONDS:
                    raise ConnectionError("no answer to keepalive pings")
        finally:
            await pubsub.aclose()


def _text(data: object) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
