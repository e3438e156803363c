"""POST /med/desk/contacts/sync: batch upsert by externalId, partial failure, limits, audit."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from novaza_gateway.desk.models import DeskContact
from tests.desk.conftest import Desk, contact


def statuses(answer: dict[str, Any]) -> list[str]:
    return [result["status"] for result in answer["results"]]


def counts(answer: dict[str, Any]) -> tuple[int, int, int, int, int]:
    keys = ("created", "updated", "unchanged", "deleted", "failed")
    return tuple(answer[key] for key in keys)  # type: ignore[return-value]


async def test_repeated_syncs_create_update_leave_unchanged_and_delete(desk: Desk) -> None:
    first = await desk.sync([contact("c1"), contact("c2"), contact("c3")])
    assert counts(first) == (3, 0, 0, 0, 0)
    assert [r["version"] for r in first["results"]] == [1, 1, 1]
    ids = {r["externalId"]: r["contactId"] for r in first["results"]}

    again = await desk.sync([contact("c1"), contact("c2"), contact("c3")])
    assert counts(again) == (0, 0, 3, 0, 0)
    assert {r["externalId"]: r["contactId"] for r in again["results"]} == ids

    changed = await desk.sync(
        [contact("c1", title="Countess"), contact("c2"), contact("c3", deleted=True)]
    )
    assert statuses(changed) == ["updated", "unchanged", "deleted"]
    assert [r["version"] for r in changed["results"]] == [2, 1, 2]
    assert counts(changed) == (0, 1, 1, 1, 0)

    deleted_again = await desk.sync([{"externalId": "c3", "deleted": True}])
    assert statuses(deleted_again) == ["unchanged"]
    got = (await desk.get(ids["c3"])).json()
    assert got["deleted"] is True and got["deletedAt"] is not None and got["version"] == 2

    restored = await desk.sync([contact("c3")])
    assert statuses(restored) == ["updated"] and restored["results"][0]["version"] == 3
    assert (await desk.get(ids["c3"])).json()["deleted"] is False

    unknown = await desk.sync([{"externalId": "never-seen", "deleted": True}])
    assert statuses(unknown) == ["failed"]


async def test_normalizes_emails_phones_and_tags(desk: Desk) -> None:
    body = contact(
        "n1",
        emails=["  Ada@Example.ORG ", "ada@example.org", "second@x.io"],
        phones=["0044 20 7946 0000", "+1 (555) 010-9999"],
        tags=["b", "a", "b"],
        attributes={"plan": "gold", "score": 3},
        organization="Analytical Engines Ltd",
    )
    answer = await desk.sync([body])
    got = (await desk.get(answer["results"][0]["contactId"])).json()
    assert got["emails"] == ["ada@example.org", "second@x.io"]
    assert got["phones"] == ["+442079460000", "+15550109999"]
    assert got["tags"] == ["a", "b"]
    assert got["attributes"] == {"plan": "gold", "score": 3}
    assert got["name"] == {"given": "Ada", "family": "Lovelace n1", "display": "Ada Lovelace n1"}
    # The same contact written differently is the same content: unchanged.
    respelled = {**body, "emails": ["ADA@example.org", "second@X.io"], "tags": ["a", "b"]}
    assert statuses(await desk.sync([respelled])) == ["unchanged"]


async def test_a_bad_item_fails_alone(desk: Desk) -> None:
    answer = await desk.sync(
        [
            contact("ok-1"),
            contact("bad-email", emails=["not-an-email"]),
            contact("bad-phone", phones=["call me"]),
            {"externalId": "no-name"},
            "not an object",
            contact("ok-1"),  # the same externalId twice in one batch
            contact("ok-2"),
        ]
    )
    assert statuses(answer) == [
        "created",
        "failed",
        "failed",
        "failed",
        "failed",
        "failed",
        "created",
    ]
    assert counts(answer) == (2, 0, 0, 0, 5)
    bad_email = answer["results"][1]
    assert bad_email["externalId"] == "bad-email" and bad_email["contactId"] is None
    assert bad_email["errors"][0]["path"] == "emails"
    assert "not an email" in bad_email["errors"][0]["reason"]
    assert answer["results"][2]["errors"][0]["path"] == "phones"
    assert answer["results"][5]["errors"][0]["path"] == "externalId"
    async with desk.gw.app.state.db.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(DeskContact))
    assert stored == 2


async def test_a_malformed_body_or_too_many_contacts_is_refused(desk: Desk) -> None:
    for body in (
        {"contact": []},
        {"contacts": {"a": 1}},
        [1, 2],
        {"contacts": [], "mode": "merge"},
    ):
        response = await desk.post(body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "VALIDATION_FAILED"
    too_many = await desk.post({"contacts": [contact(f"x{n}") for n in range(1001)]})
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert too_many.json()["details"] == {"maxContacts": 1000, "received": 1001}
    async with desk.gw.app.state.db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(DeskContact)) == 0


async def test_patient_links_are_validated_and_audited(desk: Desk) -> None:
    mine = await desk.patient(desk.tenant_id, "MRN-1")
    theirs = await desk.patient(desk.other_id, "MRN-2")
    answer = await desk.sync(
        [
            contact("linked", patientId=mine),
            contact("unknown", patientId="0" * 32),
            contact("foreign", patientId=theirs),
            contact("plain"),
        ]
    )
    assert statuses(answer) == ["created", "failed", "failed", "created"]
    for failed in answer["results"][1:3]:
        assert failed["errors"][0]["path"] == "patientId"
    linked_id = answer["results"][0]["contactId"]
    assert (await desk.get(linked_id)).json()["patientId"] == mine

    events = await desk.audits()
    writes = [e for e in events if e.action == "desk.contact.create"]
    assert [(e.resource_id, e.patient_id, e.tenant_id) for e in writes] == [
        (linked_id, mine, desk.tenant_id)
    ]
    assert writes[0].actor == "user-1"
    reads = [e for e in events if e.action == "desk.contact.read"]
    assert [(e.resource_id, e.patient_id) for e in reads] == [(linked_id, mine)]

    # Unlinking a patient touches the patient's data: audited too; an unchanged sync is not.
    await desk.sync([contact("linked"), contact("plain")])
    updates = [e for e in await desk.audits() if e.action == "desk.contact.update"]
    assert [(e.resource_id, e.patient_id) for e in updates] == [(linked_id, mine)]


async def test_a_thousand_contacts_in_one_sync(desk: Desk) -> None:
    batch = [contact(f"bulk-{n:04d}", attributes={"n": n}) for n in range(1000)]
    started = time.perf_counter()
    answer = await desk.sync(batch)
    took = time.perf_counter() - started
    assert counts(answer) == (1000, 0, 0, 0, 0)
    assert len({r["contactId"] for r in answer["results"]}) == 1000
    batch[10] = contact("bulk-0010", title="changed")
    batch[999] = {"externalId": "bulk-0999", "deleted": True}
    second = await desk.sync(batch)
    assert counts(second) == (0, 1, 998, 1, 0)
    assert took < 10  # generous: the machine is shared; docs/desk.md has the real figure
