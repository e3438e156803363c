"""POST /med/personeo/token: a Personeo access token for the caller, verifiable with the secret."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from novaza_gateway.core.db import Database
from novaza_gateway.rooms.area import RoomsArea
from novaza_gateway.rooms.errors import RoomsNotConfigured
from novaza_gateway.rooms.tokens import DEV_SECRET_FILE
from tests.conftest import gateway_settings, start_gateway
from tests.rooms.conftest import RoomsGateway, with_tenants

TOKEN = "/med/personeo/token"
ROOM = "/med/personeo/room"


def decode(token: str, secret: bytes | str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        audience="personeo",
        options={"require": ["exp", "iss", "sub", "jti", "aud"]},
    )
    return claims


async def test_token_claims_and_room_grant(rooms: RoomsGateway) -> None:
    patient = await rooms.encounter("V100")
    created = await rooms.gw.client.post(ROOM, json={"encounter": "V100"}, headers=rooms.auth())
    assert created.status_code == 201, created.text
    before = int(time.time())
    answer = await rooms.gw.client.post(TOKEN, json={"rooms": ["V100"]}, headers=rooms.auth())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {
        "accessToken",
        "tokenType",
        "expiresIn",
        "expiresAt",
        "identity",
        "personeoUrl",
    }
    assert body["tokenType"] == "Bearer"
    assert body["identity"] == "dr-who"
    assert body["expiresIn"] == 900
    assert body["personeoUrl"] is None  # neither the tenant nor the deployment names one
    secret = (rooms.gw.data_dir / DEV_SECRET_FILE).read_bytes().strip()
    claims = decode(body["accessToken"], secret)
    assert claims["iss"] == "novaza-gateway"
    assert claims["sub"] == "dr-who"
    assert claims["tenant_id"] == rooms.tenant_id
    assert claims["tenant"] == "clinic"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 900
    assert datetime.fromisoformat(body["expiresAt"]).timestamp() == claims["exp"]
    assert claims["rooms"] == [{"room": created.json()["id"], "encounter": "V100"}]
    # another audience, or another key, is refused
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(body["accessToken"], secret, algorithms=["HS256"], audience="other")
    with pytest.raises(jwt.InvalidSignatureError):
        decode(body["accessToken"], b"not-the-secret-not-the-secret-000")
    # the grant read a room that links a patient: audited, without the token
    granted = await rooms.audits("room.token_granted")
    assert [(a.patient_id, a.actor, a.tenant_id) for a in granted] == [
        (patient, "dr-who", rooms.tenant_id)
    ]
    assert granted[0].after is not None and granted[0].after["jti"] == claims["jti"]
    assert body["accessToken"] not in str(granted[0].after)
    # each token is its own
    again = await rooms.gw.client.post(TOKEN, json={}, headers=rooms.auth())
    second = decode(again.json()["accessToken"], secret)
    assert second["jti"] != claims["jti"]
    assert second["rooms"] == []


async def test_ttl_shorter_on_request_and_capped(rooms: RoomsGateway) -> None:
    secret = None
    for asked, expected in ((60, 60), (900, 900), (86400, 900)):
        answer = await rooms.gw.client.post(TOKEN, json={"ttlSeconds": asked}, headers=rooms.auth())
        assert answer.status_code == 200, answer.text
        secret = secret or (rooms.gw.data_dir / DEV_SECRET_FILE).read_bytes().strip()
        claims = decode(answer.json()["accessToken"], secret)
        assert answer.json()["expiresIn"] == expected
        assert claims["exp"] - claims["iat"] == expected
    too_short = await rooms.gw.client.post(TOKEN, json={"ttlSeconds": 5}, headers=rooms.auth())
    assert too_short.status_code == 422
    assert too_short.json()["code"] == "VALIDATION_FAILED"


async def test_grant_of_unknown_or_archived_room_is_refused(rooms: RoomsGateway) -> None:
    unknown = await rooms.gw.client.post(TOKEN, json={"rooms": ["NOPE"]}, headers=rooms.auth())
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "ROOM_NOT_FOUND"
    await rooms.encounter("V200")
    await rooms.gw.client.post(ROOM, json={"encounter": "V200"}, headers=rooms.auth())
    archived = await rooms.gw.client.delete(f"{ROOM}/V200", headers=rooms.auth())
    assert archived.status_code == 200
    refused = await rooms.gw.client.post(TOKEN, json={"rooms": ["V200"]}, headers=rooms.auth())
    assert refused.status_code == 409
    assert refused.json()["code"] == "ROOM_ARCHIVED"
    # another tenant's room is no room of this tenant
    await rooms.encounter("V300", tenant_id=rooms.other_id)
    theirs = await rooms.gw.client.post(
        ROOM, json={"encounter": "V300"}, headers=rooms.auth(tenant="other")
    )
    assert theirs.status_code == 201
    crossed = await rooms.gw.client.post(TOKEN, json={"rooms": ["V300"]}, headers=rooms.auth())
    assert crossed.status_code == 404
    assert await rooms.audits("room.token_granted") == []


async def test_scope_and_authentication(rooms: RoomsGateway) -> None:
    anonymous = await rooms.gw.client.post(TOKEN, json={})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "UNAUTHENTICATED"
    wrong_scope = await rooms.gw.client.post(TOKEN, json={}, headers=rooms.auth("ai:use"))
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["code"] == "FORBIDDEN"
    no_tenant = await rooms.gw.client.post(
        TOKEN, json={}, headers={"Authorization": f"Bearer {rooms.gw.token(None, 'rooms:write')}"}
    )
    assert no_tenant.status_code == 403
    for method, path in (("POST", ROOM), ("GET", f"{ROOM}/V1"), ("DELETE", f"{ROOM}/V1")):
        refused = await rooms.gw.client.request(
            method,
            path,
            json={"encounter": "V1"} if method == "POST" else None,
            headers=rooms.auth("patients:read"),
        )
        assert refused.status_code == 403, (method, path)


async def test_configured_secret_issuer_and_personeo_url(tmp_path: Path, sqlite_url: str) -> None:
    settings = gateway_settings(
        tmp_path / "data",
        sqlite_url,
        rooms_token_secret="configured-secret-of-enough-length-0123456789",
        rooms_token_issuer="https://gw.example.org",
        rooms_token_ttl_seconds=300,
        rooms_personeo_url="https://personeo.example.org",
    )
    async for gw in start_gateway(settings):
        rooms = await with_tenants(gw)
        answer = await gw.client.post(TOKEN, json={}, headers=rooms.auth())
        assert answer.status_code == 200, answer.text
        assert answer.json()["personeoUrl"] == "https://personeo.example.org"
        assert answer.json()["expiresIn"] == 300
        claims = decode(
            answer.json()["accessToken"], "configured-secret-of-enough-length-0123456789"
        )
        assert claims["iss"] == "https://gw.example.org"
        assert not (gw.data_dir / DEV_SECRET_FILE).exists()  # no dev secret when configured
        # the tenant's own Personeo URL wins over the deployment's
        await gw.client.put(
            "/admin/tenants/clinic",
            json={"settings": {"rooms": {"personeoUrl": "https://chat.clinic.example"}}},
            headers=gw.admin(),
        )
        mine = await gw.client.post(TOKEN, json={}, headers=rooms.auth())
        assert mine.json()["personeoUrl"] == "https://chat.clinic.example/"


class NoSettings:
    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        return None


async def test_production_without_a_secret_refuses_to_mint(tmp_path: Path) -> None:
    # Production settings without the secret do not load (tests/test_production_config.py);
    # the area refuses all the same, should its config come from elsewhere.
    settings = gateway_settings(tmp_path / "data", "sqlite:///unused.db")
    production = dataclasses.replace(settings.rooms, production=True)
    db = Database(create_async_engine("sqlite+aiosqlite://"))  # never connected
    async with httpx.AsyncClient() as http:
        area = RoomsArea(production, settings.data_dir, NoSettings(), http, db)
        with pytest.raises(RoomsNotConfigured):
            area.token_secret()
    assert not (settings.data_dir / DEV_SECRET_FILE).exists()
    dev = gateway_settings(tmp_path / "dev", "sqlite:///unused.db")
    async with httpx.AsyncClient() as http:
        first = RoomsArea(dev.rooms, dev.data_dir, NoSettings(), http, db).token_secret()
        second = RoomsArea(dev.rooms, dev.data_dir, NoSettings(), http, db).token_secret()
    assert first == second and len(first) >= 32  # generated once, kept in the data dir
    assert (dev.data_dir / DEV_SECRET_FILE).stat().st_mode & 0o077 == 0
