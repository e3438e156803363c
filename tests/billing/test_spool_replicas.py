"""Usage that a stopping replica could not write survives the replica's pod: with Redis it
waits in the shared list for another replica; without, its spool file (written whole) is
adopted by another replica sharing the spool directory, and counted once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from novaza_gateway.billing.flusher import UsageFlusher
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.relay import UsageRelay
from novaza_gateway.core.db import Database, create_engine
from tests.billing.conftest import Clock
from tests.billing.test_metering import stored
from tests.conftest import Gateway, free_port


@pytest.fixture
async def gone() -> AsyncIterator[Database]:
    """A database nobody answers for: the store is down while the replica stops."""
    db = Database(create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone"))
    yield db
    await db.dispose()


@pytest.fixture
async def relay_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_with_redis_a_replica_stopping_without_the_database_leaves_usage_in_redis(
    billed: tuple[Gateway, Clock], gone: Database, relay_client: redis.Redis, tmp_path: Path
) -> None:
    gw, _ = billed
    tenant_id = (await gw.create_tenant("relay-spool"))["id"]
    key = f"novaza:test:usage:{uuid.uuid4().hex}"
    stopping = UsageFlusher(
        UsageMeter(), gone, tmp_path / "pod-a", 1, UsageRelay(relay_client, key)
    )
    stopping.meter.record(tenant_id, "api_requests", 7)
    await stopping.drain()  # shutdown with the database down
    assert not (tmp_path / "pod-a").exists()  # nothing on the pod's disk
    assert await UsageRelay(relay_client, key).waiting() == 1
    other = UsageFlusher(
        UsageMeter(), gw.app.state.db, tmp_path / "pod-b", 1, UsageRelay(relay_client, key)
    )
    await other.flush_once()
    assert await stored(gw, tenant_id) == 7
    assert await other.relay.waiting() == 0  # type: ignore[union-attr]


async def test_a_spool_on_a_shared_volume_is_adopted_by_the_other_replicas_once(
    billed: tuple[Gateway, Clock], gone: Database, tmp_path: Path
) -> None:
    gw, _ = billed
    tenant_id = (await gw.create_tenant("file-spool"))["id"]
    shared = tmp_path / "shared-spool"
    stopping = UsageFlusher(UsageMeter(), gone, shared, 1)
    stopping.meter.record(tenant_id, "api_requests", 5)
    stopping.meter.record(tenant_id, "hl7_messages", 2, source="hl7", event_id="m-1")
    await stopping.drain()  # no Redis, the database down: the last resort
    [spooled] = list(shared.iterdir())
    assert spooled.suffix == ".jsonl"  # written whole, under its final name
    # the survivors adopt it on a periodic pass, both at once: counted once, then removed
    survivors = [UsageFlusher(UsageMeter(), gw.app.state.db, shared, 1, adopt_every=1)]
    survivors.append(UsageFlusher(UsageMeter(), gw.app.state.db, shared, 1, adopt_every=1))
    await asyncio.gather(*(s.flush_once() for s in survivors))
    assert await stored(gw, tenant_id) == 5
    assert await stored(gw, tenant_id, "hl7_messages") == 2
    assert list(shared.iterdir()) == []
    await asyncio.gather(*(s.flush_once() for s in survivors))
    assert await stored(gw, tenant_id) == 5
