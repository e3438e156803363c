"""Leases on both stores: of replicas racing for a job's lease exactly one holds it; the
holder renews it; a lapsed or released lease goes to the next replica that asks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from novaza_gateway.config import Settings
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.core.leases import Lease, Leases, lease_seconds, leased


async def replicas(db_url: str, tmp_path: Path, n: int = 3) -> list[Leases]:
    """N replicas' lease tables: each its own engine (connection pool), as N processes."""
    url = Settings(database_url=db_url, data_dir=tmp_path).sqlalchemy_url
    return [Leases(Database(create_engine(url)), holder=f"replica-{i}") for i in range(n)]


@pytest.fixture
async def three(db_url: str, tmp_path: Path) -> AsyncIterator[list[Leases]]:
    leases = await replicas(db_url, tmp_path)
    yield leases
    for lease in leases:
        await lease.db.dispose()


async def row(leases: Leases, name: str) -> Lease | None:
    async with leases.db.sessionmaker() as session:
        return (await session.execute(select(Lease).where(Lease.name == name))).scalar_one_or_none()


async def test_of_three_racing_replicas_exactly_one_holds_the_lease(three: list[Leases]) -> None:
    for round_no in range(10):
        name = f"job-{round_no}"
        won = await asyncio.gather(*(lease.acquire(name, 30) for lease in three))
        assert sum(won) == 1, won
        holder = three[won.index(True)]
        held = await row(holder, name)
        assert held is not None and held.holder == holder.holder
        # the holder renews; the others still cannot take it
        assert await holder.acquire(name, 30)
        others = [lease for lease in three if lease is not holder]
        assert await asyncio.gather(*(lease.acquire(name, 30) for lease in others)) == [
            False,
            False,
        ]


async def test_a_lapsed_lease_goes_to_the_next_replica(three: list[Leases]) -> None:
    first, second, third = three
    assert await first.acquire("close", -1)  # a holder that died a second ago
    before = await row(first, "close")
    assert await second.acquire("close", 30)
    assert not await first.acquire("close", 30)  # the dead one came back: too late
    assert not await third.acquire("close", 30)
    taken = await row(second, "close")
    assert before is not None and taken is not None
    assert taken.holder == "replica-1" and taken.acquired_at > before.acquired_at
    assert await second.acquire("close", 30)  # a renewal keeps when it was taken
    renewed = await row(second, "close")
    assert renewed is not None and renewed.acquired_at == taken.acquired_at
    assert renewed.expires_at >= taken.expires_at


async def test_a_released_lease_is_free_at_once_and_only_its_holder_releases(
    three: list[Leases],
) -> None:
    first, second, _ = three
    assert await first.acquire("purge", 300)
    await second.release("purge")  # not second's: nothing happens
    assert not await second.acquire("purge", 300)
    await first.release_quietly("purge")
    assert await row(first, "purge") is None
    assert await second.acquire("purge", 300)


async def test_a_leased_job_runs_on_the_holder_only(three: list[Leases]) -> None:
    runs: list[str] = []

    def job_of(lease: Leases) -> Callable[[], Awaitable[int]]:
        async def job() -> int:
            runs.append(lease.holder)
            return 1

        return leased(lease, "job", 30, job)

    for _ in range(3):
        counts = await asyncio.gather(*(job_of(lease)() for lease in three))
        assert sorted(counts) == [0, 0, 1]
    assert len(runs) == 3 and len(set(runs)) == 1  # the same replica every pass


def test_lease_length_covers_passes() -> None:
    assert lease_seconds(1) == 30  # at least 30 s
    assert lease_seconds(300) == 900  # three passes
