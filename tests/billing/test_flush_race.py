"""Two hand-offs of the meter's pending batches at once (the flush loop's and a drain's, or
a flush and a push to the Redis relay) must not drop a batch: each popped ``pending[0]`` after
its own await, so the second pop took a batch nobody had written (seen as AI tokens missing
from the usage table under load)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from novaza_gateway.billing import metering
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.core.db import Database


class GatedDatabase:
    """A database whose first write waits for the test to open the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.written: list[int] = []  # the quantities of every batch written

    @contextlib.asynccontextmanager
    async def session_scope(self) -> AsyncIterator[Any]:
        yield self


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedDatabase:
    db = GatedDatabase()

    async def insert_rows(session: GatedDatabase, batch: list[Any]) -> None:
        if not session.written:
            await session.gate.wait()
        session.written.append(sum(row.quantity for row in batch))

    monkeypatch.setattr(metering, "insert_rows", insert_rows)
    return db


async def test_two_flushes_at_once_write_every_batch(gated: GatedDatabase) -> None:
    meter = UsageMeter()
    database = cast(Database, gated)
    meter.record("t1", "ai_tokens", 78)
    first = asyncio.create_task(meter.flush(database))  # waits inside its first insert
    await asyncio.sleep(0)
    meter.record("t1", "ai_tokens", 51)  # more usage while that flush is in flight
    second = asyncio.create_task(meter.flush(database))
    await asyncio.sleep(0)
    gated.gate.set()
    await asyncio.gather(first, second)
    assert sum(gated.written) == 78 + 51
    assert meter.pending == []
