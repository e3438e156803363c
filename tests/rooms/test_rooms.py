"""POST/GET/DELETE /med/personeo/room: one room per encounter, tenant-scoped, audited."""

from __future__ import annotations

import asyncio

from tests.rooms.conftest import RoomsGateway

ROOM = "/med/personeo/room"


async def test_create_then_the_same_room_again(rooms: RoomsGateway) -> None:
    patient = await rooms.encounter("V100")
    body = {"encounter": "V100", "displayName": "Ward 3 handover", "members": ["nurse-1"]}
    created = await rooms.gw.client.post(ROOM, json=body, headers=rooms.auth())
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"{ROOM}/V100"
    room = created.json()
    assert room["encounter"] == "V100"
    assert room["displayName"] == "Ward 3 handover"
    assert room["members"] == ["dr-who", "nurse-1"]  # the creator joins
    assert room["status"] == "active"
    assert room["mode"] == "embedded"
    assert room["remoteId"] is None
    assert room["createdBy"] == "dr-who"
    assert room["archivedAt"] is None
    again = await rooms.gw.client.post(
        ROOM, json={"encounter": "V100", "displayName": "other"}, headers=rooms.auth(sub="dr-2")
    )
    assert again.status_code == 200, again.text
    assert "location" not in again.headers
    assert again.json() == room  # the existing room, unchanged
    assert len(await rooms.rooms()) == 1
    created_audits = await rooms.audits("room.created")
    assert [(a.resource_id, a.patient_id, a.tenant_id, a.actor) for a in created_audits] == [
        (room["id"], patient, rooms.tenant_id, "dr-who")
    ]
    assert "Ward 3" not in str(created_audits[0].after)  # state, not content
    got = await rooms.gw.client.get(f"{ROOM}/V100", headers=rooms.auth())
    assert got.status_code == 200
    assert got.json() == room
    assert [a.patient_id for a in await rooms.audits("room.read")] == [patient]


async def test_unknown_and_canceled_encounters_get_no_room(rooms: RoomsGateway) -> None:
    unknown = await rooms.gw.client.post(ROOM, json={"encounter": "NOPE"}, headers=rooms.auth())
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "ENCOUNTER_NOT_FOUND"
    await rooms.encounter("V-CX", status="canceled")
    canceled = await rooms.gw.client.post(ROOM, json={"encounter": "V-CX"}, headers=rooms.auth())
    assert canceled.status_code == 409
    assert canceled.json()["code"] == "ENCOUNTER_CANCELED"
    invalid = await rooms.gw.client.post(ROOM, json={"encounter": ""}, headers=rooms.auth())
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "VALIDATION_FAILED"
    assert await rooms.rooms() == []
    assert await rooms.audits() == []


async def test_archive_is_soft_idempotent_and_reopened_by_a_create(rooms: RoomsGateway) -> None:
    await rooms.encounter("V100")
    created = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    archived = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth(sub="dr-2"))
    assert archived.status_code == 200, archived.text
    room = archived.json()
    assert room["id"] == created.json()["id"]
    assert room["status"] == "archived"
    assert room["archivedBy"] == "dr-2"
    assert room["archivedAt"] is not None
    again = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    assert again.status_code == 200
    assert again.json() == room  # unchanged: not archived twice
    assert len(await rooms.audits("room.archived")) == 1
    stored = await rooms.rooms()
    assert [r.status for r in stored] == ["archived"]  # kept, not deleted
    reopened = await rooms.gw.client.post(
        ROOM, json={"encounter": "V100", "displayName": "Reopened"}, headers=rooms.auth()
    )
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["id"] == room["id"]
    assert reopened.json()["status"] == "active"
    assert reopened.json()["displayName"] == "Reopened"
    assert reopened.json()["archivedAt"] is None
    reopen_audit = await rooms.audits("room.reopened")
    assert len(reopen_audit) == 1
    assert reopen_audit[0].before is not None and reopen_audit[0].before["status"] == "archived"
    missing = await rooms.gw.client.delete(f"{ROOM}/V999", headers=rooms.auth())
    assert missing.status_code == 404
    assert missing.json()["code"] == "ROOM_NOT_FOUND"
    assert (await rooms.gw.client.get(f"{ROOM}/V999", headers=rooms.auth())).status_code == 404


async def test_tenants_do_not_see_each_others_rooms(rooms: RoomsGateway) -> None:
    await rooms.encounter("V100")
    mine = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert mine.status_code == 201
    other = rooms.auth(tenant="other")
    assert (await rooms.gw.client.get(f"{ROOM}/V100", headers=other)).status_code == 404
    deleted = await rooms.gw.client.delete(f"{ROOM}/V100", headers=other)
    assert deleted.status_code == 404
    assert deleted.json()["code"] == "ROOM_NOT_FOUND"
    # the other tenant's encounter of the same visit number is its own
    create = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=other)
    assert create.status_code == 404
    assert create.json()["code"] == "ENCOUNTER_NOT_FOUND"
    await rooms.encounter("V100", tenant_id=rooms.other_id)
    theirs = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=other)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine.json()["id"]
    assert [r.status for r in await rooms.rooms()] == ["active"]  # mine untouched
    assert len(await rooms.rooms(rooms.other_id)) == 1


async def test_concurrent_creates_make_one_room(rooms: RoomsGateway) -> None:
    await rooms.encounter("V100")
    answers = await asyncio.gather(
        *(
            rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
            for _ in range(4)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(await rooms.rooms()) == 1
    assert len(await rooms.audits("room.created")) == 1


async def test_requests_are_metered_to_rooms(rooms: RoomsGateway) -> None:
    from sqlalchemy import select

    from novaza_gateway.billing.models import UsageRecord

    await rooms.gw.client.post("/med/personeo/token", json={}, headers=rooms.auth())
    await rooms.gw.app.state.billing.meter.flush(rooms.gw.app.state.db)
    async with rooms.gw.app.state.db.sessionmaker() as session:
        rows = (
            await session.execute(
                select(UsageRecord).where(
                    UsageRecord.tenant_id == rooms.tenant_id, UsageRecord.meter == "api_requests"
                )
            )
        ).scalars()
        assert [r.dimensions for r in rows] == ["area=rooms"]
