"""Upstream mode: changed contacts are pushed to the tenant's Desk from the outbox, over TCP
to a real HTTP server started here, with retries; the API key is write-only."""

from __future__ import annotations

from tests.desk.conftest import API_KEY, READ, Desk, FakeDesk, contact, outbox, sync_status


async def test_changed_contacts_are_pushed_and_retried_after_a_failure(
    upstream: Desk, fake_desk: FakeDesk
) -> None:
    fake_desk.script = [503]
    patient = await upstream.patient(upstream.tenant_id, "MRN-9")
    answer = await upstream.sync([contact("u1", patientId=patient), contact("u2")])
    ids = [r["contactId"] for r in answer["results"]]
    assert await sync_status(upstream, ids[0], "pending", 0) == "pending"
    for contact_id in ids:
        assert await sync_status(upstream, contact_id, "synced") == "synced"
    assert len(fake_desk.requests) == 2  # the 503, then the retry that was accepted
    for headers, body in fake_desk.requests:
        assert headers["authorization"] == f"Bearer {API_KEY}"
        assert [(c["externalId"], c["version"]) for c in body["contacts"]] == [
            ("u1", 1),
            ("u2", 1),
        ]
    assert fake_desk.requests[0][1]["contacts"][0]["patientId"] == patient
    rows = await outbox(upstream)
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 2), ("delivered", 2)]
    pushed = [e for e in await upstream.audits() if e.action == "desk.contact.push"]
    assert [(e.resource_id, e.patient_id, e.actor) for e in pushed] == [
        (ids[0], patient, "desk-outbox")
    ]

    # An unchanged contact is not pushed again; a changed one is, as its next version.
    unchanged = await upstream.sync([contact("u1", patientId=patient), contact("u2", title="Dr")])
    assert [r["status"] for r in unchanged["results"]] == ["unchanged", "updated"]
    assert await sync_status(upstream, ids[1], "synced") == "synced"
    assert len(fake_desk.requests) == 3
    last = fake_desk.requests[-1][1]["contacts"]
    assert [(c["externalId"], c["version"], c["title"]) for c in last] == [("u2", 2, "Dr")]


async def test_a_refused_push_is_failed_at_once(upstream: Desk, fake_desk: FakeDesk) -> None:
    fake_desk.script = [400]
    answer = await upstream.sync([contact("r1")])
    contact_id = answer["results"][0]["contactId"]
    assert await sync_status(upstream, contact_id, "failed") == "failed"
    assert [(r.status, r.attempts, r.last_error) for r in await outbox(upstream)] == [
        ("dead", 1, "HTTP 400")
    ]
    assert len(fake_desk.requests) == 1


async def test_the_api_key_is_never_returned(upstream: Desk, fake_desk: FakeDesk) -> None:
    got = await upstream.gw.client.get("/admin/tenants/clinic", headers=upstream.gw.admin())
    section = got.json()["settings"]["desk"]
    assert section == {"baseUrl": fake_desk.url, "secretsSet": ["apiKey"]}
    assert API_KEY not in got.text
    listed = await upstream.gw.client.get("/admin/tenants/", headers=upstream.gw.admin())
    assert API_KEY not in listed.text
    contacts = await upstream.gw.client.get("/med/desk/contacts", headers=upstream.auth(READ))
    assert contacts.is_success and API_KEY not in contacts.text
