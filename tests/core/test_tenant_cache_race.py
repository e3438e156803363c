"""An invalidation wins over a tenant load that started before it (in process, no sleeps).

The slow source parks each load on an event the test releases, so the order of "load
began", "tenant changed + invalidation" and "load finished" is set by the test.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from novaza_gateway.core.errors import TenantSuspended
from novaza_gateway.core.tenancy import RateLimitPolicy, TenantCache, TenantContext

ACTIVE = TenantContext(
    id="t-1",
    slug="acme",
    status="active",
    plan="starter",
    addons=frozenset(),
    rate_limit=RateLimitPolicy(10.0, 10),
)
SUSPENDED = dataclasses.replace(ACTIVE, status="suspended")


class GatedSource:
    """Reads the tenant when a load begins, answers when the test opens the gate."""

    def __init__(self) -> None:
        self.tenant = ACTIVE
        self.loads = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def load(self, key: str) -> TenantContext | None:
        self.loads += 1
        read = self.tenant if key in (self.tenant.slug, self.tenant.id) else None
        self.started.set()
        await self.gate.wait()
        return read


async def _load_in_flight(cache: TenantCache, source: GatedSource, key: str) -> asyncio.Task:
    task = asyncio.create_task(cache.get(key))
    await source.started.wait()
    source.started.clear()
    return task


@pytest.mark.parametrize("announced_as", ["acme", "t-1"])
@pytest.mark.parametrize("loaded_as", ["acme", "t-1"])
async def test_an_invalidation_during_a_load_is_not_undone_by_it(
    loaded_as: str, announced_as: str
) -> None:
    source = GatedSource()
    cache = TenantCache(source, ttl_seconds=3600)
    first = await _load_in_flight(cache, source, loaded_as)

    source.tenant = SUSPENDED  # the change commits, then is announced, while the load waits
    cache.invalidate(announced_as)
    source.gate.set()

    assert (await first).status == "active"  # it asked before the change: the old answer
    with pytest.raises(TenantSuspended):
        await cache.resolve(loaded_as)  # but it was not kept: this one loads again
    assert source.loads == 2


async def test_a_request_after_the_invalidation_does_not_join_the_stale_load() -> None:
    source = GatedSource()
    cache = TenantCache(source, ttl_seconds=3600)
    first = await _load_in_flight(cache, source, "acme")

    source.tenant = SUSPENDED
    cache.invalidate("acme")
    second = asyncio.create_task(cache.get("acme"))
    await source.started.wait()  # a load of its own began, after the change
    source.gate.set()

    assert (await first).status == "active"
    assert (await second).status == "suspended"
    assert source.loads == 2
    assert (await cache.get("acme")).status == "suspended"  # the later load was kept
    assert source.loads == 2


async def test_a_clear_during_a_load_wins_too() -> None:
    source = GatedSource()
    cache = TenantCache(source, ttl_seconds=3600)
    first = await _load_in_flight(cache, source, "acme")
    source.tenant = SUSPENDED
    cache.clear()  # what the listener does after reconnecting to Redis
    source.gate.set()
    await first
    assert (await cache.get("acme")).status == "suspended"


async def test_without_an_invalidation_the_load_is_kept_and_shared() -> None:
    source = GatedSource()
    cache = TenantCache(source, ttl_seconds=3600)
    first = await _load_in_flight(cache, source, "acme")
    joined = asyncio.create_task(cache.get("acme"))
    await asyncio.sleep(0)  # let it find the load in flight (an ordering step, not a wait)
    source.gate.set()
    assert await first == await joined == ACTIVE
    assert await cache.get("acme") == ACTIVE
    assert source.loads == 1
