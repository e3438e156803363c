"""ADT A40 in the embedded archive: after a merge sent through ``POST /med/hl7/adt``, QIDO
finds the merged record's studies under the survivor's Patient ID and reports them with it
(patient ID coercion, as dcm4chee does on a merge); WADO metadata too. On SQLite and
PostgreSQL; other tenants and patients never part of a merge are untouched."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gateway
from tests.imaging.dicom import make_instance, uid
from tests.imaging.workflow import audit_events, hl7, store, workflow_tenant

PATIENT_ID = "00100020"
STUDY_UID = "0020000D"


def first(dataset: dict[str, Any], tag: str) -> Any:
    return dataset[tag]["Value"][0]


async def qido(gw: Gateway, auth: dict[str, str], path: str, **params: str) -> dict[str, str]:
    """study UID -> reported Patient ID of each match."""
    response = await gw.client.get(f"/med/qido/{path}", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return {first(d, STUDY_UID): first(d, PATIENT_ID) for d in response.json()}


async def test_qido_after_a_merge_finds_and_coerces_the_old_identifiers_studies(
    gateway: Gateway,
) -> None:
    auth = await workflow_tenant(gateway)
    other = await workflow_tenant(gateway, "other")  # same identifiers, no merge
    await hl7(gateway, auth, "adt", "adt_a01_v251_epic.hl7", "adt_a04_v251_duplicate_record.hl7")
    own, dup, someone = uid(), uid(), uid()
    dup_series, dup_sop = uid(), uid()
    await store(
        gateway,
        auth,
        make_instance(study=own, patient_id="100234", study_date="20250101"),
        make_instance(study=dup, series=dup_series, sop=dup_sop, patient_id="100999"),
        make_instance(study=someone, patient_id="555"),
    )
    theirs = uid()
    await store(gateway, other, make_instance(study=theirs, patient_id="100999"))

    # 100234 has two identifiers (MR and SS) but was never part of a merge: nothing widens.
    assert await qido(gateway, auth, "studies", PatientID="100234") == {own: "100234"}
    assert await qido(gateway, auth, "studies", PatientID="100999") == {dup: "100999"}

    await hl7(gateway, auth, "adt", "adt_a40_v251.hl7")  # 100999 merges into 100234
    merged = {own: "100234", dup: "100234"}
    assert await qido(gateway, auth, "studies", PatientID="100234") == merged
    assert await qido(gateway, auth, "studies", PatientID="100999") == merged  # resolves too
    assert await qido(gateway, auth, "studies") == {**merged, someone: "555"}  # coerced anyway
    assert await qido(gateway, auth, "studies", PatientID="1002*") == {own: "100234"}  # literal
    assert await qido(gateway, auth, "series", PatientID="100234") == merged
    assert await qido(gateway, auth, "instances", PatientID="100234") == merged
    within = await gateway.client.get(f"/med/qido/studies/{dup}/series", headers=auth)
    assert [first(d, "0020000E") for d in within.json()] == [dup_series]

    await gateway.client.get(
        "/med/qido/studies",
        params={"PatientID": "100234"},
        headers={**auth, "X-Request-Id": "mq-1"},
    )
    (event,) = [
        e
        for e in await audit_events(gateway, "imaging.search.study")
        if e.caller_request_id == "mq-1"
    ]
    assert event.patient_id == "100234"  # one patient, under the survivor's ID
    assert event.after == {"results": 2, "studies": sorted(merged)}

    metadata = await gateway.client.get(f"/med/wado/studies/{dup}/metadata", headers=auth)
    assert metadata.status_code == 200, metadata.text
    (instance,) = metadata.json()
    assert first(instance, PATIENT_ID) == "100234"
    assert first(instance, "00080018") == dup_sop
    summary = (await gateway.client.get(f"/med/imaging/study/{dup}", headers=auth)).json()
    assert summary["patient"]["id"] == "100999"  # the summary reports the study as stored

    # The other tenant: no merge there, and none of the first tenant's studies.
    assert await qido(gateway, other, "studies", PatientID="100234") == {}
    assert await qido(gateway, other, "studies", PatientID="100999") == {theirs: "100999"}
    assert await qido(gateway, other, "studies") == {theirs: "100999"}
    assert await qido(gateway, auth, "studies", StudyInstanceUID=theirs) == {}
    other_meta = await gateway.client.get(f"/med/wado/studies/{theirs}/metadata", headers=other)
    assert first(other_meta.json()[0], PATIENT_ID) == "100999"
    refused = await gateway.client.get(f"/med/wado/studies/{dup}/metadata", headers=other)
    assert (refused.status_code, refused.json()["code"]) == (404, "STUDY_NOT_FOUND")
