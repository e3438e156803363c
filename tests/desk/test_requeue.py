"""POST /med/desk/contacts/requeue: failed pushes go back to the outbox and reach the real
HTTP Desk started by the fixtures; embedded tenants are refused; tenant-scoped."""

from __future__ import annotations

from typing import Any

import httpx

from tests.desk.conftest import (
    API_KEY,
    READ,
    WRITE,
    Desk,
    FakeDesk,
    contact,
    outbox,
    sync_status,
)

REQUEUE = "/med/desk/contacts/requeue"


async def requeue(desk: Desk, body: Any = None, tenant: str | None = None) -> httpx.Response:
    headers = desk.auth(WRITE, tenant)
    if body is None:
        return await desk.gw.client.post(REQUEUE, headers=headers)
    return await desk.gw.client.post(REQUEUE, json=body, headers=headers)


async def failed(desk: Desk, fake_desk: FakeDesk, *contacts: dict[str, Any]) -> list[str]:
    """Sync ``contacts`` while the Desk refuses them: they end ``failed``."""
    fake_desk.script.append(400)
    answer = await desk.sync(list(contacts))
    ids = [r["contactId"] for r in answer["results"]]
    for contact_id in ids:
        assert await sync_status(desk, contact_id, "failed") == "failed"
    return ids


async def test_a_failed_push_is_requeued_and_delivered(upstream: Desk, fake_desk: FakeDesk) -> None:
    patient = await upstream.patient(upstream.tenant_id, "MRN-7")
    [linked, plain] = await failed(upstream, fake_desk, contact("q1", patientId=patient),
                                   contact("q2"))  # fmt: skip
    assert len(fake_desk.requests) == 1

    answer = await requeue(upstream)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"requeued": 2, "skipped": 0}
    for contact_id in (linked, plain):
        assert await sync_status(upstream, contact_id, "synced") == "synced"
    assert len(fake_desk.requests) == 2
    headers, body = fake_desk.requests[-1]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert [(c["externalId"], c["version"]) for c in body["contacts"]] == [("q1", 1), ("q2", 1)]
    rows = await outbox(upstream)
    assert sorted((r.status, r.attempts) for r in rows) == [
        ("dead", 1), ("dead", 1), ("delivered", 1), ("delivered", 1),
    ]  # fmt: skip
    requeued = [e for e in await upstream.audits() if e.action == "desk.contact.requeue"]
    assert [(e.resource_id, e.patient_id, e.actor, e.after) for e in requeued] == [
        (linked, patient, "user-1", {"version": 1})
    ]
    again = await requeue(upstream)  # nothing is failed any more
    assert again.json() == {"requeued": 0, "skipped": 0}
    assert len(await outbox(upstream)) == 4


async def test_named_contacts_only_and_the_rest_skipped(
    upstream: Desk, fake_desk: FakeDesk
) -> None:
    first, second = await failed(upstream, fake_desk, contact("n1"), contact("n2"))
    delivered = (await upstream.sync([contact("n3")]))["results"][0]["contactId"]
    assert await sync_status(upstream, delivered, "synced") == "synced"
    fake_desk.script.append(503)  # the re-queued push is retried, so it stays pending a while

    named = [first, "ext:n1", delivered, "ext:nobody", "not-an-id", first]
    answer = await requeue(upstream, {"contactIds": named})
    assert answer.status_code == 202
    assert answer.json() == {"requeued": 1, "skipped": 3}  # n3 synced, two unknown
    got = (await upstream.get(first)).json()
    assert got["syncStatus"] == "pending" and got["version"] == 1
    assert (await upstream.get(second)).json()["syncStatus"] == "failed"
    assert await sync_status(upstream, first, "synced") == "synced"
    assert [c["externalId"] for c in fake_desk.requests[-1][1]["contacts"]] == ["n1"]

    rest = await requeue(upstream, {"contactIds": []})  # empty: every failed contact
    assert rest.json() == {"requeued": 1, "skipped": 0}
    assert await sync_status(upstream, second, "synced") == "synced"


async def test_requeue_is_tenant_scoped(upstream: Desk, fake_desk: FakeDesk) -> None:
    [mine] = await failed(upstream, fake_desk, contact("s1"))
    await upstream.gw.create_tenant(
        "third",
        rateLimit={"ratePerSecond": 1000, "burst": 1000},
        settings={"desk": {"baseUrl": fake_desk.url}},
    )
    theirs = await requeue(upstream, {"contactIds": [mine, "ext:s1"]}, tenant="third")
    assert theirs.json() == {"requeued": 0, "skipped": 2}
    everything = await requeue(upstream, tenant="third")
    assert everything.json() == {"requeued": 0, "skipped": 0}
    assert (await upstream.get(mine)).json()["syncStatus"] == "failed"


async def test_an_embedded_tenant_has_nothing_to_requeue(desk: Desk) -> None:
    await desk.sync([contact("m1")])
    refused = await requeue(desk)
    assert refused.status_code == 409
    assert refused.json()["code"] == "DESK_NOT_UPSTREAM"
    assert (await desk.get("ext:m1")).json()["syncStatus"] is None


async def test_requeue_needs_desk_write_and_a_valid_body(upstream: Desk) -> None:
    client = upstream.gw.client
    denied = await client.post(REQUEUE, headers=upstream.auth(READ))
    assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"
    too_many = await requeue(upstream, {"contactIds": [f"id{n}" for n in range(1001)]})
    assert too_many.status_code == 422 and too_many.json()["code"] == "VALIDATION_FAILED"
    unknown = await requeue(upstream, {"contactIds": [], "everything": True})
    assert unknown.status_code == 422
    empty_id = await requeue(upstream, {"contactIds": [""]})
    assert empty_id.status_code == 422
    doc = (await client.get("/openapi.json")).json()["paths"][REQUEUE]["post"]
    assert doc["x-novaza-policy"]["scopes"] == ["desk:write"]
    assert "DESK_NOT_UPSTREAM" in doc["responses"]["409"]["description"]
    assert "202" in doc["responses"]
