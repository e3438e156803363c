"""The rooms reconciler with three replicas on one store (each its own connection pool, as
three processes) against the real HTTP peer: every intent is settled once, and the intents
of a replica that died holding them are settled by another after the lease."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.rooms.reconcile import Reconciler
from tests.rooms.conftest import Personeo, RoomsGateway
from tests.rooms.test_reconcile import area, fail_create, intents, make_due


@pytest.fixture
async def stopped(
    upstream: tuple[RoomsGateway, Personeo],
) -> AsyncIterator[tuple[RoomsGateway, Personeo]]:
    """Upstream mode with the app's own reconciler loop stopped: the test drives replicas."""
    [loop] = [t for t in asyncio.all_tasks() if t.get_name() == "rooms-reconcile"]
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    yield upstream


def replica(rooms: RoomsGateway) -> Reconciler:
    mine = area(rooms)
    db = Database(create_engine(rooms.gw.settings.sqlalchemy_url))
    return Reconciler(db, mine.personeo, mine.tenant_section, mine.reconciler.policy, 0.5)


@pytest.fixture
async def three(
    stopped: tuple[RoomsGateway, Personeo],
) -> AsyncIterator[list[Reconciler]]:
    rooms, _ = stopped
    replicas = [replica(rooms) for _ in range(3)]
    yield replicas
    for r in replicas:
        await r.db.dispose()


async def failed_creates(rooms: RoomsGateway, peer: Personeo, count: int) -> None:
    """``count`` creates Personeo made and the gateway did not commit; the immediate undo
    failed too, so each waits for the reconciler."""
    peer.delete_mode = "fail"
    for n in range(count):
        await rooms.encounter(f"V{200 + n}")
        await fail_create(rooms, f"V{200 + n}")
    peer.delete_mode = None
    await make_due(rooms)


async def test_three_replicas_settle_each_intent_once(
    stopped: tuple[RoomsGateway, Personeo], three: list[Reconciler]
) -> None:
    rooms, peer = stopped
    await failed_creates(rooms, peer, 4)
    undone = len(peer.deletes())  # the failed immediate undos
    handled = await asyncio.gather(*(r.run_once() for r in three))
    assert sum(handled) == 4
    assert set(Counter(peer.deletes()[undone:]).values()) == {1}  # each room archived once
    assert [(i.status, i.attempts) for i in await intents(rooms)] == [("done", 2)] * 4
    assert await asyncio.gather(*(r.run_once() for r in three)) == [0, 0, 0]


async def test_intents_of_a_replica_that_died_are_settled_after_the_lease(
    stopped: tuple[RoomsGateway, Personeo], three: list[Reconciler]
) -> None:
    rooms, peer = stopped
    await failed_creates(rooms, peer, 2)
    undone = len(peer.deletes())
    dead = replica(rooms)
    dead._lease = timedelta(seconds=0.5)
    try:
        _, claimed = await dead._claim()  # then the process is killed
    finally:
        await dead.db.dispose()
    assert len(claimed) == 2
    assert await asyncio.gather(*(r.run_once() for r in three)) == [0, 0, 0]  # still held
    await asyncio.sleep(0.6)
    assert sorted(await asyncio.gather(*(r.run_once() for r in three))) == [0, 0, 2]
    assert len(peer.deletes()) == undone + 2
    assert {i.status for i in await intents(rooms)} == {"done"}
