"""Upstream mode: rooms are created and archived at the tenant's Personeo, a real HTTP peer.

A failing Personeo (500, or slower than the timeout) is 502 UPSTREAM_UNAVAILABLE and leaves
nothing behind: no room, no audit record, the room as it was.
"""

from __future__ import annotations

import jwt
import pytest

from novaza_gateway.rooms.tokens import DEV_SECRET_FILE
from tests.rooms.conftest import Personeo, RoomsGateway

ROOM = "/med/personeo/room"
KEY = "prs-s3cret-key"


async def test_create_and_archive_at_personeo(upstream: tuple[RoomsGateway, Personeo]) -> None:
    rooms, peer = upstream
    await rooms.encounter("V100")
    created = await rooms.gw.client.post(
        ROOM, json={"encounter": "V100", "displayName": "Ward 3"}, headers=rooms.auth()
    )
    assert created.status_code == 201, created.text
    room = created.json()
    assert room["mode"] == "upstream"
    assert room["remoteId"] == "prs-0"
    [sent] = peer.requests
    assert sent["method"] == "POST"
    assert sent["path"] == "/api/rooms"
    assert sent["authorization"] == f"Bearer {KEY}"
    assert sent["json"] == {
        "externalId": room["id"],
        "tenant": "clinic",
        "encounter": "V100",
        "name": "Ward 3",
        "members": ["dr-who"],
    }
    again = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert again.status_code == 200
    assert len(peer.requests) == 1  # the existing room: Personeo is not asked again
    archived = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    assert archived.status_code == 200, archived.text
    assert archived.json()["status"] == "archived"
    assert peer.requests[-1]["method"] == "DELETE"
    assert peer.requests[-1]["path"] == "/api/rooms/prs-0"
    assert peer.requests[-1]["authorization"] == f"Bearer {KEY}"
    await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    assert len(peer.requests) == 2  # archiving again asks nobody
    # an archived room is granted to nobody
    token = await rooms.gw.client.post(
        "/med/personeo/token", json={"rooms": ["V100"]}, headers=rooms.auth()
    )
    assert token.json()["code"] == "ROOM_ARCHIVED"
    reopened = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert reopened.status_code == 200
    assert reopened.json()["remoteId"] == "prs-2"  # a new room at Personeo
    assert reopened.json()["id"] == room["id"]
    # a token grants the room by Personeo's id too
    granted = await rooms.gw.client.post(
        "/med/personeo/token", json={"rooms": ["V100"]}, headers=rooms.auth()
    )
    secret = (rooms.gw.data_dir / DEV_SECRET_FILE).read_bytes().strip()
    claims = jwt.decode(
        granted.json()["accessToken"], secret, algorithms=["HS256"], audience="personeo"
    )
    assert claims["rooms"] == [{"room": room["id"], "encounter": "V100", "remoteId": "prs-2"}]


@pytest.mark.parametrize("mode", ["fail", "slow"])
async def test_personeo_failure_creates_nothing(
    upstream: tuple[RoomsGateway, Personeo], mode: str
) -> None:
    rooms, peer = upstream
    await rooms.encounter("V100")
    peer.mode = mode
    failed = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert failed.status_code == 502, failed.text
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert failed.json()["details"]["reason"] == (
        "timeout" if mode == "slow" else "Personeo answered 500"
    )
    assert len(peer.requests) == 1  # it was asked
    assert await rooms.rooms() == []
    assert await rooms.audits() == []
    peer.mode = "ok"  # Personeo is back: the retry creates the room
    retried = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert retried.status_code == 201, retried.text
    assert len(await rooms.rooms()) == 1


@pytest.mark.parametrize("mode", ["fail", "slow"])
async def test_personeo_failure_leaves_the_room_active(
    upstream: tuple[RoomsGateway, Personeo], mode: str
) -> None:
    rooms, peer = upstream
    await rooms.encounter("V100")
    created = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert created.status_code == 201
    peer.mode = mode
    failed = await rooms.gw.client.delete(f"{ROOM}/V100", headers=rooms.auth())
    assert failed.status_code == 502, failed.text
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert [r.status for r in await rooms.rooms()] == ["active"]
    assert await rooms.audits("room.archived") == []


async def test_the_api_key_is_write_only(upstream: tuple[RoomsGateway, Personeo]) -> None:
    rooms, peer = upstream
    got = await rooms.gw.client.get("/admin/tenants/clinic", headers=rooms.gw.admin())
    assert got.status_code == 200
    section = got.json()["settings"]["rooms"]
    assert section["baseUrl"].startswith(peer.url)
    assert "apiKey" not in section
    assert section["secretsSet"] == ["apiKey"]
    assert KEY not in got.text
    # an update without the key keeps it: Personeo still receives it
    updated = await rooms.gw.client.put(
        "/admin/tenants/clinic",
        json={"settings": {"rooms": {"baseUrl": peer.url, "personeoUrl": "https://chat.example"}}},
        headers=rooms.gw.admin(),
    )
    assert updated.status_code == 200, updated.text
    assert KEY not in updated.text
    await rooms.encounter("V100")
    await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert peer.requests[-1]["authorization"] == f"Bearer {KEY}"
    bad = await rooms.gw.client.put(
        "/admin/tenants/other",
        json={"settings": {"rooms": {"apiKey": "lonely"}}},
        headers=rooms.gw.admin(),
    )
    assert bad.status_code == 422
    assert bad.json()["code"] == "VALIDATION_FAILED"
