"""A study's first instance in the embedded archive starts its scheduled worklist item."""

from __future__ import annotations

from pathlib import Path

from novaza_gateway.core.audit import Actor
from novaza_gateway.imaging import ingest
from tests.conftest import Gateway
from tests.imaging.dicom import make_instance, uid
from tests.imaging.workflow import audit_events, hl7, schedule, store, workflow_tenant

STARTED = "worklist.item.in_progress"
MG_UID = "1.2.840.113619.2.55.3.9001"  # the study UID the worklist hands out for ACC9001
ALL = "scheduled,in_progress,completed,canceled,discontinued"


async def statuses(gw: Gateway, auth: dict[str, str]) -> dict[str, str]:
    response = await gw.client.get("/med/imaging/worklist", params={"status": ALL}, headers=auth)
    assert response.status_code == 200, response.text
    return {i["accessionNumber"]: i["status"] for i in response.json()["data"]}


async def test_matched_by_study_uid_once_then_qc_completes(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    first = make_instance(study=MG_UID, patient_id="100234", accession="")
    await store(gateway, auth, first)
    assert (await statuses(gateway, auth))["ACC9001"] == "in_progress"
    assert (await statuses(gateway, auth))["ACC7001"] == "scheduled"
    # more of the same study, and the same instance again: nothing more happens
    await store(gateway, auth, first, make_instance(study=MG_UID, instance_number=2))
    (event,) = await audit_events(gateway, STARTED)
    assert (event.actor, event.resource_type, event.resource_id) == (
        "user-1",
        "worklist_item",
        "ACC9001",
    )
    assert event.tenant_id == gateway.tenants["stmarys"]["id"]
    assert event.patient_id is not None
    assert event.before == {"status": "scheduled"}
    assert event.after == {
        "status": "in_progress",
        "studyInstanceUID": MG_UID,
        "matchedBy": "studyInstanceUID",
    }
    passed = await gateway.client.post(
        "/med/imaging/qc-confirm",
        json={"studyInstanceUID": MG_UID, "result": "passed"},
        headers=auth,
    )
    assert passed.json()["worklistItem"]["status"] == "completed"
    assert (await statuses(gateway, auth))["ACC9001"] == "completed"


async def test_matched_by_accession_and_restore_does_not_reaudit(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    study = uid()
    instance = make_instance(study=study, patient_id="100234", accession="ACC7001")
    await store(gateway, auth, instance)
    assert await statuses(gateway, auth) == {
        "ACC7001": "in_progress",
        "ACC7002": "scheduled",
        "ACC8001": "scheduled",
        "ACC9001": "scheduled",
    }
    await store(gateway, auth, instance)
    await store(gateway, auth, make_instance(study=study, accession="ACC7001", instance_number=2))
    (event,) = await audit_events(gateway, STARTED)
    assert event.resource_id == "ACC7001"
    assert (event.after or {})["matchedBy"] == "accessionNumber"


async def test_no_match_or_two_items_change_nothing(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    before = await statuses(gateway, auth)
    await store(gateway, auth, make_instance(study=uid(), accession="NO-ORDER"))
    await store(gateway, auth, make_instance(study=uid(), accession=""))
    # the UID names one item (ACC9001), the accession another (ACC7001): ambiguous
    await store(gateway, auth, make_instance(study=MG_UID, accession="ACC7001"))
    assert await statuses(gateway, auth) == before
    assert set(before.values()) == {"scheduled"}
    assert await audit_events(gateway, STARTED) == []


async def test_completed_and_canceled_items_stay(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    await hl7(gateway, auth, "adt", "adt_a04_v23_meditech.hl7")
    await hl7(gateway, auth, "orm", "orm_o01_nw_v23_meditech.hl7", "orm_o01_ca_v23.hl7")
    first = uid()
    await store(gateway, auth, make_instance(study=first, accession="ACC7001"))
    await gateway.client.post(
        "/med/imaging/qc-confirm",
        json={"studyInstanceUID": first, "result": "passed"},
        headers=auth,
    )
    assert (await statuses(gateway, auth))["ACC7001"] == "completed"
    assert (await statuses(gateway, auth))["RVACC3301"] == "canceled"
    await store(gateway, auth, make_instance(study=uid(), accession="ACC7001"))
    await store(gateway, auth, make_instance(study=uid(), accession="RVACC3301"))
    after = await statuses(gateway, auth)
    assert (after["ACC7001"], after["RVACC3301"]) == ("completed", "canceled")
    assert [e.resource_id for e in await audit_events(gateway, STARTED)] == ["ACC7001"]


async def test_another_tenants_item_with_the_same_accession_is_untouched(
    gateway: Gateway,
) -> None:
    owner = await workflow_tenant(gateway, "owner")
    other = await workflow_tenant(gateway, "other")
    await schedule(gateway, owner)
    await schedule(gateway, other)
    await store(gateway, owner, make_instance(study=uid(), accession="ACC7001"))
    await store(gateway, owner, make_instance(study=MG_UID, accession=""))
    mine, theirs = await statuses(gateway, owner), await statuses(gateway, other)
    assert (mine["ACC7001"], mine["ACC9001"]) == ("in_progress", "in_progress")
    assert set(theirs.values()) == {"scheduled"}
    events = await audit_events(gateway, STARTED)
    assert {e.tenant_id for e in events} == {gateway.tenants["owner"]["id"]}


async def test_dicom_import_starts_the_item(gateway: Gateway, tmp_path: Path) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    folder = tmp_path / "incoming"
    folder.mkdir()
    study = uid()
    for i in (1, 2):
        (folder / f"{i}.dcm").write_bytes(
            make_instance(study=study, accession="ACC8001", instance_number=i)
        )
    tenant_id = gateway.tenants["stmarys"]["id"]
    actor = Actor("cli:operator", tenant_id)
    async with gateway.app.state.db.session_scope() as session:
        report = await ingest.import_paths(
            session,
            gateway.app.state.imaging.storage,
            actor,
            tenant_id,
            [folder],
            base_url="http://test",
        )
    assert (len(report.stored), len(report.failed)) == (2, 0)
    assert (await statuses(gateway, auth))["ACC8001"] == "in_progress"
    (event,) = await audit_events(gateway, STARTED)
    assert (event.actor, event.resource_id) == ("cli:operator", "ACC8001")
