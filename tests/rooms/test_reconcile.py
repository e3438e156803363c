"""No orphaned Personeo rooms (ADR 0051): what Personeo did and the gateway did not commit is
undone at once or by the reconciler, and an archive that did not commit is finished.

Against the real HTTP peer, on SQLite and PostgreSQL. The background loop is stopped: each
test drives ``Reconciler.run_once`` itself, and moves a row's due time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from novaza_gateway.core.db import utcnow
from novaza_gateway.rooms.area import RoomsArea
from novaza_gateway.rooms.journal import TABLE
from novaza_gateway.rooms.models import ACTIVE, ARCHIVED, ReconcileItem
from novaza_gateway.rooms.reconcile import Reconciler
from tests.rooms.conftest import Personeo, RoomsGateway, commit_fails

ROOM = "/med/personeo/room"
KEY = "prs-s3cret-key"


@pytest.fixture
async def reconcile(
    upstream: tuple[RoomsGateway, Personeo],
) -> AsyncIterator[tuple[RoomsGateway, Personeo]]:
    """Upstream mode with the reconciler's background loop stopped (the test runs passes)."""
    [loop] = [t for t in asyncio.all_tasks() if t.get_name() == "rooms-reconcile"]
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    yield upstream


def area(rooms: RoomsGateway) -> RoomsArea:
    found: RoomsArea = rooms.gw.app.state.rooms
    return found


async def intents(rooms: RoomsGateway) -> list[ReconcileItem]:
    async with rooms.gw.app.state.db.sessionmaker() as session:
        query = select(ReconcileItem).order_by(ReconcileItem.created_at)
        return list((await session.execute(query)).scalars())


async def make_due(rooms: RoomsGateway) -> None:
    """What a wait past the backoff would do."""
    async with rooms.gw.app.state.db.session_scope() as session:
        await session.execute(update(TABLE).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


async def fail_create(rooms: RoomsGateway, visit_number: str = "V100") -> dict[str, Any]:
    """A create whose local commit the store refuses, after Personeo created the room."""
    with commit_fails(rooms, ACTIVE) as refused:
        failed = await rooms.gw.client.post(
            ROOM, json={"encounter": visit_number}, headers=rooms.auth()
        )
    assert refused == ["commit"]
    assert failed.status_code == 503, failed.text
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert "Traceback" not in failed.text
    body: dict[str, Any] = failed.json()
    return body


async def test_a_create_that_does_not_commit_is_archived_at_personeo(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    await rooms.encounter("V100")
    await fail_create(rooms)
    [created, deleted] = peer.requests
    assert created["method"] == "POST"
    assert deleted["method"] == "DELETE"
    assert deleted["path"] == "/api/rooms/prs-0"  # exactly the room Personeo made
    assert deleted["authorization"] == f"Bearer {KEY}"
    assert await rooms.rooms() == []
    assert await rooms.audits() == []  # nothing happened: nothing audited
    [intent] = await intents(rooms)
    assert (intent.tenant_id, intent.room_id, intent.remote_id, intent.status) == (
        rooms.tenant_id,
        created["json"]["externalId"],
        "prs-0",
        "done",
    )
    assert await area(rooms).reconciler.run_once() == 0  # nothing left to do
    # the retry makes the room, and retires its own intent with it
    retried = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert retried.status_code == 201, retried.text
    assert retried.json()["remoteId"] == "prs-2"
    assert [r.remote_id for r in await rooms.rooms()] == ["prs-2"]
    assert [i.status for i in await intents(rooms)] == ["done"]
    assert len(await rooms.audits("room.created")) == 1


async def test_when_personeo_refuses_the_undo_the_loop_archives_it_later(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    await rooms.encounter("V100")
    peer.delete_mode = "fail"
    started = utcnow()
    await fail_create(rooms)
    assert peer.deletes() == ["/api/rooms/prs-0"]  # tried at once, refused
    [orphan] = await intents(rooms)
    assert (orphan.status, orphan.action, orphan.remote_id) == ("queued", "undo_create", "prs-0")
    assert orphan.tenant_id == rooms.tenant_id
    assert orphan.attempts == 1
    assert orphan.last_error == "Personeo answered 500"
    assert orphan.next_attempt_at >= started + timedelta(seconds=5)  # backing off
    reconciler = area(rooms).reconciler
    assert await reconciler.run_once() == 0  # not due yet
    peer.delete_mode = None  # Personeo recovers
    await make_due(rooms)
    assert await reconciler.run_once() == 1
    assert peer.deletes() == ["/api/rooms/prs-0", "/api/rooms/prs-0"]
    assert peer.requests[-1]["authorization"] == f"Bearer {KEY}"
    [settled] = await intents(rooms)
    assert (settled.status, settled.attempts, settled.claim) == ("done", 2, None)
    assert settled.done_at is not None
    await make_due(rooms)
    assert await reconciler.run_once() == 0  # done is done
    assert len(peer.deletes()) == 2
    assert await rooms.rooms() == []
    assert await rooms.audits() == []


async def test_retries_back_off_then_the_intent_is_dead_and_shows_in_readiness(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    reconciler = area(rooms).reconciler
    reconciler.policy = replace(
        reconciler.policy, max_attempts=3, backoff_seconds=10, backoff_max_seconds=1000
    )
    await rooms.encounter("V100")
    peer.delete_mode = "fail"
    await fail_create(rooms)
    for attempt, ceiling in [(2, 20), (3, None)]:
        await make_due(rooms)
        before = utcnow()
        assert await reconciler.run_once() == 1
        [intent] = await intents(rooms)
        assert intent.attempts == attempt
        if ceiling is not None:  # full jitter within [base, base * 2^(n-1)]
            assert intent.status == "queued"
            wait = (intent.next_attempt_at - before).total_seconds()
            assert 10 <= wait <= ceiling + 1, wait
    assert (intent.status, intent.last_error) == ("dead", "Personeo answered 500")
    assert len(peer.deletes()) == 3  # the undo at once, then two passes
    await make_due(rooms)
    assert await reconciler.run_once() == 0  # dead is left alone
    assert len(peer.deletes()) == 3
    ready = await rooms.gw.client.get("/health/ready")
    assert ready.status_code == 200  # non-critical
    check = ready.json()["checks"]["rooms-reconcile"]
    assert check["critical"] is False
    assert check["detail"] == "0 queued, 1 dead, 0 in flight"


async def test_an_archive_that_does_not_commit_is_finished(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    patient = await rooms.encounter("V100")
    created = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert created.status_code == 201
    with commit_fails(rooms, ARCHIVED) as refused:
        failed = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth(sub="dr-2"))
    assert refused == ["commit"]
    assert failed.status_code == 503, failed.text
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert peer.deletes() == ["/api/rooms/prs-0"]  # archived there ...
    assert [r.status for r in await rooms.rooms()] == [ACTIVE]  # ... not here, yet
    assert await rooms.audits("room.archived") == []
    [intent] = await intents(rooms)
    assert (intent.action, intent.status, intent.requested_by) == (
        "finish_archive",
        "queued",
        "dr-2",
    )
    assert await area(rooms).reconciler.run_once() == 1  # due at once
    assert peer.deletes() == ["/api/rooms/prs-0", "/api/rooms/prs-0"]
    [room] = await rooms.rooms()
    assert (room.status, room.archived_by, room.remote_id) == (ARCHIVED, "dr-2", "prs-0")
    [audited] = await rooms.audits("room.archived")
    assert (audited.actor, audited.patient_id, audited.tenant_id) == (
        "rooms-reconcile",
        patient,
        rooms.tenant_id,
    )
    assert audited.after is not None and audited.after["status"] == ARCHIVED
    assert [i.status for i in await intents(rooms)] == ["done"]
    # the caller's retry finds it archived: nobody is asked again, nothing audited twice
    again = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth(sub="dr-2"))
    assert again.status_code == 200
    assert again.json()["status"] == "archived"
    assert len(peer.deletes()) == 2
    assert len(await rooms.audits("room.archived")) == 1


async def test_an_archive_that_timed_out_is_finished_both_sides(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    await rooms.encounter("V100")
    await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    peer.delete_mode = "slow"  # Personeo may or may not have archived it
    failed = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    assert failed.status_code == 502
    assert failed.json()["details"]["reason"] == "timeout"
    assert [r.status for r in await rooms.rooms()] == [ACTIVE]
    assert await rooms.audits("room.archived") == []
    peer.delete_mode = None
    assert await area(rooms).reconciler.run_once() == 1
    assert [r.status for r in await rooms.rooms()] == [ARCHIVED]
    assert peer.deletes() == ["/api/rooms/prs-0", "/api/rooms/prs-0"]
    assert len(await rooms.audits("room.archived")) == 1


async def test_a_refused_archive_changes_nothing_and_leaves_no_intent(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    await rooms.encounter("V100")
    await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    peer.delete_mode = "fail"  # a definite answer: nothing was archived there
    failed = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    assert failed.status_code == 502
    assert await intents(rooms) == []
    await make_due(rooms)
    assert await area(rooms).reconciler.run_once() == 0
    assert [r.status for r in await rooms.rooms()] == [ACTIVE]


async def test_a_reopen_that_does_not_commit_is_undone_and_the_room_stays_archived(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    await rooms.encounter("V100")
    await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    with commit_fails(rooms, ACTIVE):
        failed = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert failed.status_code == 503
    assert peer.requests[-2]["method"] == "POST"  # the new remote room, prs-2 ...
    assert peer.deletes() == ["/api/rooms/prs-0", "/api/rooms/prs-2"]  # ... undone
    [room] = await rooms.rooms()
    assert (room.status, room.remote_id) == (ARCHIVED, "prs-0")
    assert await rooms.audits("room.reopened") == []


async def test_intents_are_tenant_scoped(reconcile: tuple[RoomsGateway, Personeo]) -> None:
    rooms, peer = reconcile
    updated = await rooms.gw.client.put(
        "/admin/tenants/other",
        json={"settings": {"rooms": {"baseUrl": peer.url, "apiKey": "other-key"}}},
        headers=rooms.gw.admin(),
    )
    assert updated.status_code == 200, updated.text
    await rooms.encounter("V100")
    await rooms.encounter("V100", tenant_id=rooms.other_id)  # the same visit number
    peer.delete_mode = "fail"
    await fail_create(rooms)
    peer.delete_mode = None
    theirs = await rooms.gw.client.post(
        ROOM, json={"encounter": "V100"}, headers=rooms.auth(tenant="other")
    )
    assert theirs.status_code == 201, theirs.text
    assert peer.requests[-1]["authorization"] == "Bearer other-key"
    [orphan] = await intents(rooms)  # the other tenant's create retired its own
    assert orphan.tenant_id == rooms.tenant_id
    await make_due(rooms)
    assert await area(rooms).reconciler.run_once() == 1
    last = peer.requests[-1]
    assert (last["method"], last["path"], last["authorization"]) == (
        "DELETE",
        "/api/rooms/prs-0",
        f"Bearer {KEY}",  # the clinic's Personeo key, for the clinic's room
    )
    assert [r.status for r in await rooms.rooms(rooms.other_id)] == [ACTIVE]
    assert await rooms.rooms() == []
    other_room = await rooms.gw.client.get(f"{ROOM}/V100", headers=rooms.auth())
    assert other_room.json()["code"] == "ROOM_NOT_FOUND"  # not the other tenant's
    assert [a.tenant_id for a in await rooms.audits()] == [rooms.other_id]  # its create


async def test_a_request_that_outlives_its_intent_is_undone(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    """The reconciler took the intent while Personeo was still answering: the request may
    not keep its room, and the remote one is archived."""
    rooms, peer = reconcile
    await rooms.encounter("V100")
    reconciler = area(rooms).reconciler

    async def the_loop_meanwhile() -> None:
        await make_due(rooms)
        assert await reconciler.run_once() == 1

    peer.before_create = the_loop_meanwhile
    failed = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert failed.status_code == 503, failed.text
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert peer.deletes() == ["/api/rooms/prs-0"]
    assert await rooms.rooms() == []
    assert await rooms.audits() == []
    [intent] = await intents(rooms)
    assert intent.status == "dead"  # the loop could not know the id: an operator's note


async def test_the_loser_of_concurrent_creates_gives_its_remote_room_back(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    await rooms.encounter("V100")
    answers = await asyncio.gather(
        *(
            rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
            for _ in range(2)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 201]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    [room] = await rooms.rooms()
    posted = {r["json"]["externalId"]: r["id"] for r in peer.requests}
    assert len(posted) == 2 and room.remote_id in posted.values()
    assert await area(rooms).reconciler.run_once() == 1
    [loser] = [remote for remote in posted.values() if remote != room.remote_id]
    assert peer.deletes() == [f"/api/rooms/{loser}"]
    assert [i.status for i in await intents(rooms)] == ["done"]
    assert len(await rooms.audits("room.created")) == 1


async def test_two_replicas_never_work_the_same_intent(
    reconcile: tuple[RoomsGateway, Personeo],
) -> None:
    rooms, peer = reconcile
    mine = area(rooms)
    other = Reconciler(  # a second replica's reconciler, on the same store
        mine.reconciler.db, mine.personeo, mine.tenant_section, mine.reconciler.policy, 0.5
    )
    await rooms.encounter("V100")
    peer.delete_mode = "fail"
    await fail_create(rooms)
    peer.delete_mode = None
    await make_due(rooms)
    handled = await asyncio.gather(mine.reconciler.run_once(), other.run_once())
    assert sorted(handled) == [0, 1]
    assert peer.deletes() == ["/api/rooms/prs-0", "/api/rooms/prs-0"]  # the undo, then once
    [intent] = await intents(rooms)
    assert (intent.status, intent.attempts) == ("done", 2)
