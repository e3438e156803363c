"""Proxy mode in the Scheduled Workflow: QC confirmation and a patient's studies for studies
that live in the tenant's upstream PACS (a real Orthanc with its DICOMweb plugin), on SQLite
and PostgreSQL; the QC record is the gateway's own, merges resolve through ``clinical``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.imaging.dicom import make_instance, uid
from tests.imaging.orthanc import Orthanc, run_orthanc
from tests.imaging.workflow import audit_events, hl7, schedule, store, workflow_tenant

QC = "/med/imaging/qc-confirm"
MG_UID = "1.2.840.113619.2.55.3.9001"  # the study UID the worklist hands out for ACC9001


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path / "orthanc") as server:
        yield server


async def worklist_status(gw: Gateway, auth: dict[str, str], accession: str) -> str:
    response = await gw.client.get(
        "/med/imaging/worklist",
        params={"accessionNumber": accession, "status": "scheduled,in_progress,completed"},
        headers=auth,
    )
    (found,) = response.json()["data"]
    return str(found["status"])


async def patient_studies(
    gw: Gateway, auth: dict[str, str], patient: str, **params: Any
) -> dict[str, Any]:
    response = await gw.client.get(f"/med/patient/{patient}/studies", params=params, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def uids(body: dict[str, Any]) -> list[str]:
    return [s["studyInstanceUID"] for s in body["data"]]


async def test_qc_of_an_upstream_study(gateway: Gateway, orthanc: Orthanc) -> None:
    auth = await workflow_tenant(gateway, "ordered", **orthanc.settings())
    other = await workflow_tenant(gateway, "other")  # embedded, same study UID stored later
    await schedule(gateway, auth)
    study = uid()
    part = make_instance(study=study, patient_id="100234", accession="ACC7001")
    await store(gateway, auth, part)  # into Orthanc: the gateway's index never sees it
    assert await worklist_status(gateway, auth, "ACC7001") == "scheduled"
    before = (await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert (before["qcStatus"], before["qc"]) == ("pending", None)

    body = {"studyInstanceUID": study, "result": "passed", "notes": "motion-free"}
    first = await gateway.client.post(QC, json=body, headers={**auth, "X-Request-Id": "pqc-1"})
    assert first.status_code == 200, first.text
    answer = first.json()
    assert (answer["studyInstanceUID"], answer["qcStatus"]) == (study, "passed")
    assert (answer["qc"]["result"], answer["qc"]["confirmedBy"]) == ("passed", "user-1")
    assert answer["qc"]["notes"] == "motion-free"
    assert answer["worklistItem"]["accessionNumber"] == "ACC7001"
    assert answer["worklistItem"]["status"] == "completed"
    assert await worklist_status(gateway, auth, "ACC7001") == "completed"

    again = await gateway.client.post(QC, json=body | {"notes": "again"}, headers=auth)
    assert again.status_code == 200, again.text
    assert again.json()["qc"] == answer["qc"]  # idempotent: the first confirmation stands
    conflict = await gateway.client.post(QC, json=body | {"result": "failed"}, headers=auth)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "QC_CONFLICT")
    assert conflict.json()["details"]["qcStatus"] == "passed"
    missing = await gateway.client.post(QC, json=body | {"studyInstanceUID": uid()}, headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "STUDY_NOT_FOUND")

    summary = (await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert (summary["qcStatus"], summary["qc"]) == ("passed", answer["qc"])
    assert summary["worklistItem"]["status"] == "completed"
    listed = await patient_studies(gateway, auth, "100234")
    assert [(s["studyInstanceUID"], s["qcStatus"]) for s in listed["data"]] == [(study, "passed")]

    events = [
        e for e in await audit_events(gateway, "imaging.qc_confirm") if e.outcome == "success"
    ]
    assert [(e.after or {}).get("repeat") for e in events] == [False, True]
    assert (events[0].caller_request_id, events[0].resource_id, events[0].patient_id) == (
        "pqc-1",
        study,
        "100234",
    )
    assert events[0].after is not None and events[0].after["mode"] == "proxy"
    assert events[0].tenant_id == gateway.tenants["ordered"]["id"]
    completed = await audit_events(gateway, "order.completed")
    assert [e.resource_id for e in completed] == ["ACC7001"]

    # Another tenant neither sees nor confirms it; its own copy of the UID has its own QC.
    for answer_other in (
        await gateway.client.post(QC, json=body, headers=other),
        await gateway.client.get(f"/med/imaging/study/{study}", headers=other),
    ):
        assert (answer_other.status_code, answer_other.json()["code"]) == (404, "STUDY_NOT_FOUND")
    await store(gateway, other, part)
    theirs = (await gateway.client.get(f"/med/imaging/study/{study}", headers=other)).json()
    assert (theirs["qcStatus"], theirs["qc"]) == ("pending", None)
    failed = await gateway.client.post(QC, json=body | {"result": "failed"}, headers=other)
    assert (failed.status_code, failed.json()["qcStatus"]) == (200, "failed")
    mine = (await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert mine["qcStatus"] == "passed"


async def test_a_store_through_the_proxy_starts_the_item_handed_that_study_uid(
    gateway: Gateway, orthanc: Orthanc
) -> None:
    auth = await workflow_tenant(gateway, "ordered", **orthanc.settings())
    other = await workflow_tenant(gateway, "other")  # embedded, same orders, nothing stored
    await schedule(gateway, auth)
    await schedule(gateway, other)
    first = make_instance(study=MG_UID, patient_id="100234", accession="")
    await store(gateway, auth, first)  # into Orthanc, through the gateway
    assert await worklist_status(gateway, auth, "ACC9001") == "in_progress"
    assert await worklist_status(gateway, auth, "ACC7001") == "scheduled"
    assert await worklist_status(gateway, other, "ACC9001") == "scheduled"
    await store(gateway, auth, make_instance(study=MG_UID, instance_number=2))
    (event,) = await audit_events(gateway, "worklist.item.in_progress")
    assert (event.resource_id, event.tenant_id) == ("ACC9001", gateway.tenants["ordered"]["id"])
    assert event.after == {
        "status": "in_progress",
        "studyInstanceUID": MG_UID,
        "matchedBy": "studyInstanceUID",
    }
    passed = await gateway.client.post(
        QC, json={"studyInstanceUID": MG_UID, "result": "passed"}, headers=auth
    )
    assert passed.status_code == 200, passed.text
    assert passed.json()["worklistItem"]["status"] == "completed"


async def test_qc_when_the_upstream_is_down(gateway: Gateway, orthanc: Orthanc) -> None:
    auth = await workflow_tenant(gateway, "down", **orthanc.settings())
    orthanc.stop()
    answer = await gateway.client.post(
        QC, json={"studyInstanceUID": uid(), "result": "passed"}, headers=auth
    )
    assert (answer.status_code, answer.json()["code"]) == (502, "UPSTREAM_UNAVAILABLE")
    assert answer.json()["details"]["reason"] == "connect_failed"
    listed = await gateway.client.get("/med/patient/100234/studies", headers=auth)
    assert (listed.status_code, listed.json()["code"]) == (502, "UPSTREAM_UNAVAILABLE")


async def test_patient_studies_from_the_upstream_follow_a_merge(
    gateway: Gateway, orthanc: Orthanc
) -> None:
    auth = await workflow_tenant(gateway, "proxied", **orthanc.settings())
    embedded = await workflow_tenant(gateway, "embedded")
    await hl7(gateway, auth, "adt", "adt_a01_v251_epic.hl7", "adt_a04_v251_duplicate_record.hl7")
    old, older, dup, other = uid(), uid(), uid(), uid()
    parts = [
        make_instance(study=old, patient_id="100234", study_date="20250101", modality="CT"),
        make_instance(study=older, patient_id="100234", study_date="20240101"),
        make_instance(study=dup, patient_id="100999", study_date="20260309", study_time="120000"),
        make_instance(study=other, patient_id="555", study_date="20260309"),  # someone else
    ]
    await store(gateway, auth, *parts)
    await store(gateway, embedded, *parts)
    assert uids(await patient_studies(gateway, auth, "100234")) == [old, older]
    assert uids(await patient_studies(gateway, auth, "100999")) == [dup]
    # a Patient ID only the archive knows answers as in embedded mode, field for field
    assert await patient_studies(gateway, auth, "555") == await patient_studies(
        gateway, embedded, "555"
    )

    await hl7(gateway, auth, "adt", "adt_a40_v251.hl7")  # 100999 merges into 100234
    merged = [dup, old, older]  # newest first
    assert uids(await patient_studies(gateway, auth, "100234")) == merged
    assert uids(await patient_studies(gateway, auth, "100999")) == merged
    body = await patient_studies(gateway, auth, "100234", limit=2)
    assert uids(body) == [dup, old] and body["nextCursor"]
    rest = await patient_studies(gateway, auth, "100234", limit=2, cursor=body["nextCursor"])
    assert (uids(rest), rest["nextCursor"]) == ([older], None)
    assert body["data"][0] == {
        "studyInstanceUID": dup,
        "patientID": "100999",
        "accessionNumber": "ACC-1",
        "studyDate": "2026-03-09",
        "studyTime": "12:00:00",
        "description": "Generated study",
        "modalities": ["OT"],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "qcStatus": "pending",
    }
    await gateway.client.get(
        "/med/patient/100999/studies", headers={**auth, "X-Request-Id": "pps-1"}
    )
    event = next(
        e
        for e in await audit_events(gateway, "imaging.patient_studies")
        if e.caller_request_id == "pps-1"
    )
    assert (event.resource_id, event.outcome) == ("100999", "success")
    assert event.after == {"results": 3, "studies": merged, "mode": "proxy"}
    assert event.patient_id and len(event.patient_id) == 32  # the survivor's gateway id
    assert uids(await patient_studies(gateway, auth, event.patient_id)) == merged

    missing = await gateway.client.get("/med/patient/nobody/studies", headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "PATIENT_NOT_FOUND")
    # the embedded tenant had no A40 (nor any registration): its identifiers stay apart
    assert uids(await patient_studies(gateway, embedded, "100234")) == [old, older]
    assert uids(await patient_studies(gateway, embedded, "100999")) == [dup]
    theirs = await gateway.client.get(f"/med/patient/{event.patient_id}/studies", headers=embedded)
    assert (theirs.status_code, theirs.json()["code"]) == (404, "PATIENT_NOT_FOUND")
