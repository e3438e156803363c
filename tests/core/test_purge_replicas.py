"""The idempotency purge with three replicas on one store (each its own connection pool):
one replica purges, the others wait on the lease; stopping releases the lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Table, func, insert, select

from novaza_gateway.config import Settings
from novaza_gateway.core.db import Database, create_engine, utcnow
from novaza_gateway.core.idempotency import KEYS, IdempotencyKeys
from novaza_gateway.core.leases import LEASES, Leases


class CountingKeys(IdempotencyKeys):
    """A replica's key store that counts the rows its purge passes delete."""

    def __init__(self) -> None:
        super().__init__(3600, purge_seconds=0.05)
        self.purged = 0

    async def purge_expired(self, db: Database, batch: int = 1000) -> int:
        deleted = await super().purge_expired(db, batch=100)
        self.purged += deleted
        return deleted


@pytest.fixture
async def dbs(db_url: str, tmp_path: Path) -> AsyncIterator[list[Database]]:
    url = Settings(database_url=db_url, data_dir=tmp_path).sqlalchemy_url
    databases = [Database(create_engine(url)) for _ in range(3)]
    yield databases
    for db in databases:
        await db.dispose()


async def count(db: Database, table: Table) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_one_of_three_replicas_purges_and_stopping_frees_the_lease(
    dbs: list[Database],
) -> None:
    past = utcnow() - timedelta(seconds=1)
    rows = [
        {"id": f"k{n:05d}", "tenant_id": "t", "operation": "op", "key_hash": f"{n:064x}",
         "fingerprint": "f" * 64, "status_code": 200, "content_type": "application/json",
         "body": b"{}", "created_at": past, "expires_at": past}
        for n in range(1200)
    ]  # fmt: skip
    async with dbs[0].session_scope() as session:
        await session.execute(insert(KEYS), rows)
    replicas = [(CountingKeys(), db, Leases(db, holder=f"replica-{n}")) for n, db in enumerate(dbs)]
    tasks = [asyncio.create_task(keys.run_purge(db, leases)) for keys, db, leases in replicas]
    for _ in range(200):
        if await count(dbs[0], KEYS) == 0:
            break
        await asyncio.sleep(0.05)
    assert await count(dbs[0], KEYS) == 0
    assert sorted(keys.purged for keys, _, _ in replicas) == [0, 0, 1200]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await count(dbs[0], LEASES) == 0  # the purge's lease, released on the way out
