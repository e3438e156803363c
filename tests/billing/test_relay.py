"""Usage through Redis: replicas push batches, one drains them, nothing counted twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from sqlalchemy import func, select

from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.models import UsageHourly
from novaza_gateway.billing.relay import UsageRelay
from tests.billing.conftest import probe
from tests.billing.test_metering import CrashAfterCommit, stored
from tests.conftest import Gateway, gateway_settings, start_gateway


@pytest.fixture
async def relay_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def rollup_total(gw: Gateway, tenant_id: str) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(UsageHourly.quantity), 0)).where(
                UsageHourly.tenant_id == tenant_id
            )
        )
        return int(total or 0)


async def test_two_replicas_push_and_one_drain_counts_once(
    billed_lite: Any, relay_client: redis.Redis
) -> None:
    gw, _ = billed_lite
    tenant = await gw.create_tenant("relayed")
    key = f"novaza:test:usage:{uuid.uuid4().hex}"
    replicas = [UsageRelay(relay_client, key) for _ in range(2)]
    meters = [UsageMeter(instance=f"replica-{n}") for n in range(2)]
    for n, meter in enumerate(meters):
        meter.record(tenant["id"], "api_requests", 10 + n)
        assert await replicas[n].push(meter) == 1
        assert not meter.pending
    assert await replicas[0].waiting() == 2
    # the drain's commit is not acknowledged: the batches stay in Redis
    with pytest.raises(ConnectionResetError):
        await replicas[1].drain(CrashAfterCommit(gw.app.state.db))  # type: ignore[arg-type]
    assert await replicas[0].waiting() == 2
    assert await replicas[0].drain(gw.app.state.db) == 2  # inserted again: no effect
    assert await replicas[0].waiting() == 0
    assert await stored(gw, tenant["id"]) == 21
    assert await rollup_total(gw, tenant["id"]) == 21
    await relay_client.delete(key)


async def test_a_drain_that_lost_its_lock_trims_nothing(
    billed_lite: Any, relay_client: redis.Redis
) -> None:
    gw, _ = billed_lite
    tenant = await gw.create_tenant("lock-lost")
    key = f"novaza:test:usage:{uuid.uuid4().hex}"
    relay = UsageRelay(relay_client, key)
    meter = UsageMeter()
    meter.record(tenant["id"], "api_requests", 5)
    await relay.push(meter)
    busy = UsageRelay(relay_client, key)
    await relay_client.set(busy.lock_key, "someone-else", px=5000)
    assert await relay.drain(gw.app.state.db) == 0  # another replica is draining
    await relay_client.delete(busy.lock_key)
    assert await relay.drain(gw.app.state.db) == 1
    assert await stored(gw, tenant["id"]) == 5
    await relay_client.delete(key)


async def test_gateway_with_redis_meters_through_the_relay(
    tmp_path: Path, sqlite_url: str, redis_url: str
) -> None:
    settings = gateway_settings(tmp_path / "data", sqlite_url, redis_url=redis_url)
    async for gw in start_gateway(settings, extra_routers=(probe,)):
        tenant = await gw.create_tenant("redis-meter")
        for _ in range(4):
            assert (
                await gw.client.get("/probe/metered", headers=gw.auth("redis-meter"))
            ).is_success
        for _ in range(50):  # the flusher runs every second
            if await rollup_total(gw, tenant["id"]) == 4:
                break
            await asyncio.sleep(0.1)
        assert await rollup_total(gw, tenant["id"]) == 4
