"""Usage through Redis, when Redis is configured: sealed batches wait in a Redis list.

Each replica pushes its sealed batches (RPUSH, once a second) instead of writing them to the
database itself; one replica at a time (a lock with a token and an expiry) moves the oldest
batches into the database and then trims exactly those from the list — only if it still holds
the lock, so a drain that outlived its lock removes nothing. A batch may be inserted twice
(a crash between COMMIT and the trim, an expired lock): its rows keep their keys, so the
second insert counts nothing. Batches survive a replica's crash and a database outage in
Redis instead of in one process's memory. The list's name is derived from the database URL,
so deployments sharing one Redis never drain into each other's database.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as redis

from novaza_gateway.billing.metering import UsageMeter, UsageRow, insert_rows
from novaza_gateway.core.db import Database
from novaza_gateway.core.ids import new_id

# KEYS: lock, list; ARGV: token, count. Trim the drained batches only while holding the lock.
_TRIM_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def relay_key(database_url: str) -> str:
    return "novaza:billing:usage:" + hashlib.sha256(database_url.encode()).hexdigest()[:16]


def _encode(batch: list[UsageRow]) -> bytes:
    return orjson.dumps([dataclasses.asdict(row) for row in batch])


def _decode(item: bytes | str) -> list[UsageRow]:
    rows = []
    for values in orjson.loads(item):
        values["hour"] = datetime.fromisoformat(values["hour"])
        rows.append(UsageRow(**values))
    return rows


class UsageRelay:
    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        lock_ms: int = 15_000,
        max_batches: int = 500,
    ) -> None:
        self.client = client
        self.key = key
        self.lock_key = f"{key}:drain-lock"
        self.lock_ms = lock_ms
        self.max_batches = max_batches
        self._trim: Any = client.register_script(_TRIM_IF_OWNER)
        self._release: Any = client.register_script(_RELEASE)

    async def push(self, meter: UsageMeter) -> int:
        """Move the meter's pending batches to Redis, oldest first; stops at the first error."""
        async with meter.handing_off:
            meter.seal()
            pushed = 0
            while meter.pending:
                batch = meter.pending[0]
                await self.client.rpush(self.key, _encode(batch))
                meter.pending.pop(0)
                meter.flush_generation += 1
                pushed += len(batch)
            return pushed

    async def drain(self, db: Database) -> int:
        """Insert the oldest waiting batches into the database; 0 when another replica is
        draining or nothing waits."""
        token = new_id()
        if not await self.client.set(self.lock_key, token, nx=True, px=self.lock_ms):
            return 0
        try:
            items = await self.client.lrange(self.key, 0, self.max_batches - 1)
            if not items:
                return 0
            rows = [row for item in items for row in _decode(item)]
            async with db.session_scope() as session:
                await insert_rows(session, rows)
            await self._trim(keys=[self.lock_key, self.key], args=[token, len(items)])
            return len(rows)
        finally:
            await self._release(keys=[self.lock_key], args=[token])

    async def waiting(self) -> int:
        return int(await self.client.llen(self.key))
