"""GET /med/patient/{patientID}/studies: newest first, pages, merged patients, tenants."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from novaza_gateway.clinical.models import Patient
from tests.conftest import Gateway
from tests.imaging.dicom import make_instance, uid
from tests.imaging.workflow import audit_events, hl7, store, workflow_tenant


def path(patient: str) -> str:
    return f"/med/patient/{patient}/studies"


async def studies(gw: Gateway, auth: dict[str, str], patient: str, **params: Any) -> list[str]:
    response = await gw.client.get(path(patient), params=params, headers=auth)
    assert response.status_code == 200, response.text
    return [s["studyInstanceUID"] for s in response.json()["data"]]


async def test_merged_patient_shows_studies_of_both_identifiers(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await hl7(gateway, auth, "adt", "adt_a01_v251_epic.hl7", "adt_a04_v251_duplicate_record.hl7")
    old, older, dup = uid(), uid(), uid()
    await store(
        gateway,
        auth,
        make_instance(study=old, patient_id="100234", study_date="20250101", modality="CT"),
        make_instance(study=older, patient_id="100234", study_date="20240101"),
        make_instance(study=dup, patient_id="100999", study_date="20260309", study_time="120000"),
        make_instance(study=uid(), patient_id="555", study_date="20260309"),  # someone else
    )
    assert await studies(gateway, auth, "100234") == [old, older]
    assert await studies(gateway, auth, "100999") == [dup]
    worklist = await gateway.client.get(
        "/med/imaging/worklist", params={"patientID": "100999"}, headers=auth
    )
    assert worklist.json()["data"] == []
    # A40: 100999 (the duplicate record) merges into 100234
    await hl7(gateway, auth, "adt", "adt_a40_v251.hl7")
    merged = [dup, old, older]  # newest first
    assert await studies(gateway, auth, "100234") == merged
    assert await studies(gateway, auth, "100999") == merged  # the old identifier resolves
    response = await gateway.client.get(path("100234"), headers={**auth, "X-Request-Id": "ps-1"})
    first = response.json()["data"][0]
    assert first == {
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
    events = [e for e in await audit_events(gateway, "imaging.patient_studies")]
    event = next(e for e in events if e.caller_request_id == "ps-1")
    assert (event.actor, event.resource_id, event.outcome) == ("user-1", "100234", "success")
    assert event.after == {"results": 3, "studies": merged}
    survivor = event.patient_id
    assert survivor and len(survivor) == 32  # the gateway's patient id
    assert await studies(gateway, auth, survivor) == merged
    # the merged record's own gateway id resolves to the survivor too
    async with gateway.app.state.db.sessionmaker() as session:
        merged_away = (
            await session.execute(select(Patient.id).where(Patient.merged_into_id == survivor))
        ).scalar_one()
    assert await studies(gateway, auth, merged_away) == merged


async def test_pages_newest_first(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    dates = ["20240101", "20260102", "20250101", "20260102", "20230101"]
    made = [(d, uid()) for d in dates]
    await store(gateway, auth, *(make_instance(study=s, study_date=d) for d, s in made))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await gateway.client.get(path("PAT-1"), params=params, headers=auth)).json()
        seen += [s["studyInstanceUID"] for s in body["data"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    date_of = {study: day for day, study in made}
    assert [date_of[s] for s in seen] == sorted(dates, reverse=True)


async def test_unknown_and_other_tenants_patients_are_404(gateway: Gateway) -> None:
    owner = await workflow_tenant(gateway, "owner")
    other = await workflow_tenant(gateway, "other")
    await hl7(gateway, owner, "adt", "adt_a01_v251_epic.hl7")
    await store(gateway, owner, make_instance(study=uid(), patient_id="100234"))
    mine = await gateway.client.get(path("100234"), headers=owner)
    assert len(mine.json()["data"]) == 1
    async with gateway.app.state.db.sessionmaker() as session:
        patient_id = (await session.execute(select(Patient.id))).scalar_one()
    for key in ("100234", patient_id, "nobody"):
        theirs = await gateway.client.get(path(key), headers=other)
        assert (theirs.status_code, theirs.json()["code"]) == (404, "PATIENT_NOT_FOUND"), key
    refused = [
        e for e in await audit_events(gateway, "imaging.patient_studies") if e.outcome != "success"
    ]
    assert [(e.tenant_id, e.patient_id, e.outcome) for e in refused] == [
        (gateway.tenants["other"]["id"], key, "patient_not_found")
        for key in ("100234", patient_id, "nobody")
    ]


async def test_needs_emr_and_patients_read(gw: Gateway) -> None:
    await workflow_tenant(gw, "imaging-only", addons=("medical_imaging",))
    refused = await gw.client.get(path("100234"), headers=gw.auth("imaging-only"))
    assert (refused.status_code, refused.json()["code"]) == (403, "ADDON_REQUIRED")
    assert refused.json()["details"]["addon"] == "emr"
    await workflow_tenant(gw, "emr")
    reader = gw.auth("emr", scopes="imaging:read")
    no_scope = await gw.client.get(path("100234"), headers=reader)
    assert (no_scope.status_code, no_scope.json()["code"]) == (403, "FORBIDDEN")
