"""The Desk outbox with three replicas on one store (each its own connection pool, as three
processes) pushing to a real HTTP Desk: each contact version is pushed once; the claims of
a replica that died are taken over after their lease."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.desk.outbox import DeskPusher
from tests.desk.conftest import Desk, FakeDesk, contact, outbox


class ShortLease(DeskPusher):
    lease_margin_seconds = 0.0  # its claims lapse after two push timeouts


async def stop_the_apps_own_pusher() -> None:
    """The gateway under test is one replica; the test drives all three replicas' passes."""
    for task in asyncio.all_tasks():
        if task.get_name() == "desk-outbox":
            task.cancel()


def pusher(desk: Desk, http: httpx.AsyncClient, kind: type[DeskPusher] = DeskPusher) -> Any:
    area = desk.gw.app.state.desk
    db = Database(create_engine(desk.gw.settings.sqlalchemy_url))
    return kind(area.pusher.config, db, area.settings, http)


@pytest.fixture
async def three(upstream: Desk) -> AsyncIterator[list[DeskPusher]]:
    await stop_the_apps_own_pusher()
    async with httpx.AsyncClient() as http:
        pushers = [pusher(upstream, http) for _ in range(3)]
        yield pushers
        for p in pushers:
            await p.db.dispose()


def pushed(fake_desk: FakeDesk) -> Counter[tuple[str, int]]:
    return Counter(
        (c["externalId"], c["version"]) for _, body in fake_desk.requests for c in body["contacts"]
    )


async def test_three_replicas_push_each_contact_version_once(
    upstream: Desk, fake_desk: FakeDesk, three: list[DeskPusher]
) -> None:
    for n in range(6):  # 30 versions waiting
        await upstream.sync([contact(f"c{n}-{i}") for i in range(5)])
    assert {r.status for r in await outbox(upstream)} == {"queued"}
    for _ in range(5):
        await asyncio.gather(*(p.run_once() for p in three))
    assert set(pushed(fake_desk).values()) == {1} and len(pushed(fake_desk)) == 30
    rows = await outbox(upstream)
    assert {(r.status, r.attempts, r.claim) for r in rows} == {("delivered", 1, None)}


async def test_claims_of_a_replica_that_died_are_taken_over_after_the_lease(
    upstream: Desk, fake_desk: FakeDesk, three: list[DeskPusher]
) -> None:
    await upstream.sync([contact("d1"), contact("d2")])
    async with httpx.AsyncClient() as http:
        dead = pusher(upstream, http, ShortLease)
        dead.config = dataclasses.replace(dead.config, push_timeout_seconds=0.5)
        try:
            _, rows = await dead._claim()  # then the process is killed
        finally:
            await dead.db.dispose()
    assert len(rows) == 2
    assert await asyncio.gather(*(p.run_once() for p in three)) == [0, 0, 0]  # still held
    assert fake_desk.requests == []
    await asyncio.sleep(1.1)  # the lease: two push timeouts
    assert sorted(await asyncio.gather(*(p.run_once() for p in three))) == [0, 0, 2]
    assert pushed(fake_desk) == {("d1", 1): 1, ("d2", 1): 1}
    assert {(r.status, r.attempts) for r in await outbox(upstream)} == {("delivered", 1)}
