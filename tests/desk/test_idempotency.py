"""POST /med/desk/contacts/sync with Idempotency-Key, through the app on both stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from novaza_gateway.core.db import utcnow
from novaza_gateway.core.errors import UpstreamUnavailable
from novaza_gateway.core.idempotency import KEYS, sha256
from novaza_gateway.desk import service
from novaza_gateway.desk.models import DeskContact
from tests.conftest import gateway_settings, start_gateway
from tests.desk.conftest import SYNC, WRITE, Desk, contact, with_tenants


async def keyed(desk: Desk, body: Any, key: str, tenant: str | None = None) -> httpx.Response:
    headers = {**desk.auth(WRITE, tenant), "Idempotency-Key": key}
    return await desk.gw.client.post(SYNC, json=body, headers=headers)


async def count(desk: Desk, table: Any) -> int:
    async with desk.gw.app.state.db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_a_replay_is_the_first_answer_byte_for_byte_and_runs_nothing(desk: Desk) -> None:
    patient = await desk.patient(desk.tenant_id, "MRN-1")
    body = {"contacts": [contact("i1", patientId=patient), contact("i2"), {"externalId": "x"}]}
    first = await keyed(desk, body, "sync-0001")
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    assert first.json()["created"] == 2 and first.json()["failed"] == 1
    audits = len(await desk.audits())

    again = await keyed(desk, body, "sync-0001")
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # "created", not "unchanged": nothing ran
    assert again.headers["content-type"] == first.headers["content-type"]
    assert len(await desk.audits()) == audits == 1
    assert await count(desk, DeskContact.__table__) == 2
    assert await count(desk, KEYS) == 1

    unkeyed = await desk.sync(body["contacts"])  # without the key it runs: unchanged
    assert unkeyed["unchanged"] == 2 and await count(desk, KEYS) == 1


async def test_the_same_key_with_another_body_is_refused(desk: Desk) -> None:
    assert (await keyed(desk, {"contacts": [contact("r1")]}, "k")).status_code == 200
    refused = await keyed(desk, {"contacts": [contact("r1", title="Dr")]}, "k")
    assert refused.status_code == 422
    assert refused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert "k" not in refused.json()["message"].split()
    got = (await desk.get("ext:r1")).json()
    assert got["version"] == 1 and got["title"] is None


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\tkey"])
async def test_malformed_keys_are_validation_errors(desk_lite: Desk, key: str) -> None:
    headers: dict[str, Any] = {**desk_lite.auth(WRITE), "Idempotency-Key": key.encode("latin-1")}
    answer = await desk_lite.gw.client.post(SYNC, json={"contacts": []}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "VALIDATION_FAILED"
    assert answer.json()["details"]["errors"][0]["path"] == "header.Idempotency-Key"
    assert await count(desk_lite, KEYS) == 0


async def test_a_255_character_printable_key_is_taken(desk_lite: Desk) -> None:
    key = "~ !" + "k" * 252
    assert (await keyed(desk_lite, {"contacts": [contact("l1")]}, key)).status_code == 200
    again = await keyed(desk_lite, {"contacts": [contact("l1")]}, key)
    assert again.headers["idempotent-replayed"] == "true"


async def test_two_concurrent_requests_with_one_key_run_once(desk: Desk) -> None:
    patient = await desk.patient(desk.tenant_id, "MRN-2")
    body = {"contacts": [contact(f"c{n}", patientId=patient) for n in range(50)]}
    one, two = await asyncio.gather(keyed(desk, body, "race"), keyed(desk, body, "race"))
    assert (one.status_code, two.status_code) == (200, 200), (one.text, two.text)
    replayed = [r.headers.get("idempotent-replayed") for r in (one, two)]
    assert sorted(replayed, key=str) == [None, "true"]
    assert one.content == two.content and one.json()["created"] == 50
    assert await count(desk, DeskContact.__table__) == 50
    assert len(await desk.audits("desk.contact.create")) == 50


async def test_a_5xx_answer_is_not_kept_and_the_retry_runs(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service._sync
    calls: list[int] = []

    async def flaky(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            await real(*args)  # writes, then fails: all of it rolls back
            raise UpstreamUnavailable(status=503)
        return await real(*args)

    monkeypatch.setattr(service, "_sync", flaky)
    body = {"contacts": [contact("f1")]}
    failed = await keyed(desk, body, "retry-me")
    assert failed.status_code == 503 and failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert await count(desk, KEYS) == 0 and await count(desk, DeskContact.__table__) == 0
    retried = await keyed(desk, body, "retry-me")
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert retried.json()["created"] == 1 and len(calls) == 2


async def test_an_expired_key_runs_again(desk: Desk) -> None:
    body = {"contacts": [contact("e1")]}
    assert (await keyed(desk, body, "old")).json()["created"] == 1
    async with desk.gw.app.state.db.session_scope() as session:
        await session.execute(update(KEYS).values(expires_at=utcnow() - timedelta(seconds=1)))
    again = await keyed(desk, body, "old")
    assert "idempotent-replayed" not in again.headers
    assert again.json()["unchanged"] == 1  # it ran: the contact is now unchanged
    assert await count(desk, KEYS) == 1


async def test_the_same_key_in_two_tenants_is_two_keys(desk: Desk) -> None:
    body = {"contacts": [contact("t1")]}
    mine = await keyed(desk, body, "shared-key")
    theirs = await keyed(desk, body, "shared-key", tenant="other")
    assert mine.json()["created"] == theirs.json()["created"] == 1
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["results"][0]["contactId"] != theirs.json()["results"][0]["contactId"]
    async with desk.gw.app.state.db.sessionmaker() as session:
        tenants = (await session.execute(select(KEYS.c.tenant_id))).scalars().all()
    assert sorted(tenants) == sorted([desk.tenant_id, desk.other_id])
    # and another tenant's stored answer is never replayed to this one
    other_body = await keyed(desk, {"contacts": [contact("t2")]}, "shared-key", tenant="other")
    assert other_body.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_the_ttl_setting_and_requests_without_the_header(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = gateway_settings(tmp_path / "data", sqlite_url, idempotency_ttl_seconds=120)
    async for gw in start_gateway(settings):
        desk = await with_tenants(gw)
        await desk.sync([contact("n1")])
        assert await count(desk, KEYS) == 0  # no header, no row
        await keyed(desk, {"contacts": [contact("n2")]}, "ttl")
        async with gw.app.state.db.sessionmaker() as session:
            row = (await session.execute(select(KEYS))).one()
        assert row.expires_at - row.created_at == timedelta(seconds=120)
        assert row.key_hash == sha256(b"ttl")


async def test_openapi_documents_the_header_and_codes(desk_lite: Desk) -> None:
    doc = (await desk_lite.gw.client.get("/openapi.json")).json()
    sync = doc["paths"][SYNC]["post"]
    header = [p for p in sync["parameters"] if p["name"] == "Idempotency-Key"]
    assert header and header[0]["in"] == "header" and not header[0].get("required")
    assert "IDEMPOTENCY_KEY_REUSED" in sync["responses"]["422"]["description"]
    assert "IDEMPOTENCY_KEY_IN_USE" in sync["responses"]["409"]["description"]
    ok = sync["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/SyncOut"}
