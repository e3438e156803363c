"""ADT A40 in proxy mode (ADR 0036), against a real Orthanc with its DICOMweb plugin: after a
merge sent through ``POST /med/hl7/adt``, QIDO through the gateway finds the merged record's
studies (filed upstream under the old Patient ID) by either ID and reports them with the
survivor's, across ``limit``/``offset``; WADO metadata too, while the instance bytes stay as
stored. The answers equal the embedded archive's for the same instances and merge; another
tenant (its own Orthanc, the same identifiers, no merge) sees no change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from novaza_gateway.imaging.proxy_merges import (
    PatientIdCoercer,
    exact_patient_id,
    identifier_query,
)
from tests.conftest import Gateway
from tests.imaging.dicom import make_instance, split_multipart, uid
from tests.imaging.orthanc import Orthanc, run_orthanc
from tests.imaging.workflow import audit_events, hl7, store, workflow_tenant

PATIENT_ID, STUDY_UID, SERIES_UID, SOP_UID = "00100020", "0020000D", "0020000E", "00080018"
SURVIVOR, MERGED = "100234", "100999"  # adt_a40_v251.hl7 merges 100999 into 100234
GATEWAY_WADO = "http://gateway/med/wado"
DICOM_JSON = {"Accept": "application/dicom+json"}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path / "orthanc") as server:
        yield server


class Studies:
    """The instances every test stores: the survivor's two studies, the merged record's one
    (two instances), someone else's one; study dates make a newest-first order."""

    def __init__(self) -> None:
        self.new_recent, self.old, self.new_early, self.someone = uid(), uid(), uid(), uid()
        self.old_series, self.old_sops = uid(), [uid(), uid()]
        self.parts = [
            make_instance(study=self.new_recent, patient_id=SURVIVOR, study_date="20250301"),
            *(
                make_instance(
                    study=self.old,
                    series=self.old_series,
                    sop=sop,
                    patient_id=MERGED,
                    study_date="20250101",
                    instance_number=n,
                    patient_name="OBrien^Maggie",
                )
                for n, sop in enumerate(self.old_sops, 1)
            ),
            make_instance(study=self.new_early, patient_id=SURVIVOR, study_date="20240101"),
            make_instance(study=self.someone, patient_id="555", study_date="20250601"),
        ]

    @property
    def merged_order(self) -> list[str]:
        return [self.new_recent, self.old, self.new_early]


async def patients(gw: Gateway, auth: dict[str, str]) -> None:
    """The survivor (MR 100234, SS 998877665) and the duplicate record (MR 100999)."""
    await hl7(gw, auth, "adt", "adt_a01_v251_epic.hl7", "adt_a04_v251_duplicate_record.hl7")


async def merge(gw: Gateway, auth: dict[str, str]) -> None:
    await hl7(gw, auth, "adt", "adt_a40_v251.hl7")


async def qido(gw: Gateway, auth: dict[str, str], path: str, **params: str) -> Any:
    response = await gw.client.get(f"/med/qido/{path}", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response


def reported(response: Any, tag: str = STUDY_UID) -> list[tuple[str, str]]:
    """(UID at ``tag``, reported Patient ID) of each result, in the answer's order."""
    return [(d[tag]["Value"][0], d[PATIENT_ID]["Value"][0]) for d in response.json()]


def as_gateway(orthanc: Orthanc, text: str) -> Any:
    return json.loads(
        text.replace(orthanc.dicomweb, GATEWAY_WADO).replace("/bulk/", "/bulkdata/bulk/")
    )


async def proxied(
    gw: Gateway, orthanc: Orthanc, slug: str = "merging"
) -> tuple[dict[str, str], Studies]:
    auth = await workflow_tenant(gw, slug, **orthanc.settings())
    await patients(gw, auth)
    studies = Studies()
    await store(gw, auth, *studies.parts)  # into Orthanc, under the Patient IDs as stored
    return auth, studies


async def test_qido_finds_the_merged_records_studies_by_either_id_as_embedded_does(
    gateway: Gateway, orthanc: Orthanc
) -> None:
    auth, studies = await proxied(gateway, orthanc)
    embedded = await workflow_tenant(gateway, "embedded")  # the same instances and messages
    await patients(gateway, embedded)
    await store(gateway, embedded, *studies.parts)

    before = await qido(gateway, auth, "studies", PatientID=MERGED)
    assert reported(before) == [(studies.old, MERGED)]
    unmerged = await qido(gateway, auth, "studies", PatientID=SURVIVOR)  # Orthanc's order
    assert sorted(reported(unmerged)) == sorted(
        [(studies.new_recent, SURVIVOR), (studies.new_early, SURVIVOR)]
    )

    await merge(gateway, auth)
    await merge(gateway, embedded)
    everything = [(s, SURVIVOR) for s in studies.merged_order]
    for asked in (MERGED, SURVIVOR, "998877665"):  # either MRN, or the survivor's SSN
        found = await qido(gateway, auth, "studies", PatientID=asked)
        assert reported(found) == everything, asked
        assert "warning" not in found.headers
        same = await qido(gateway, embedded, "studies", PatientID=asked)
        assert reported(same) == everything, asked
    assert reported(await qido(gateway, auth, "studies", **{"00100020": MERGED})) == everything

    # Other attributes as Orthanc has them: only (0010,0020) differs from a direct search.
    via = (await qido(gateway, auth, "studies", PatientID=MERGED, includefield="all")).json()
    direct = orthanc.client().get(
        "/studies", params={"PatientID": MERGED, "includefield": "all"}, headers=DICOM_JSON
    )
    (old,) = as_gateway(orthanc, direct.text)
    assert old[PATIENT_ID]["Value"] == [MERGED]
    assert via[1] == {**old, PATIENT_ID: {**old[PATIENT_ID], "Value": [SURVIVOR]}}
    assert via[1]["00100010"]["Value"][0]["Alphabetic"] == "OBrien^Maggie"  # as stored

    # Series and instances of the merged patient, in the embedded archive's order.
    series = await qido(gateway, auth, "series", PatientID=MERGED, includefield="00100020")
    assert sorted(reported(series, STUDY_UID)) == sorted(everything)
    assert reported(series, STUDY_UID) == reported(
        await qido(gateway, embedded, "series", PatientID=MERGED, includefield="00100020"),
        STUDY_UID,
    )
    instances = await qido(gateway, auth, "instances", PatientID=SURVIVOR, includefield="00100020")
    assert len(instances.json()) == 4
    assert {p for _, p in reported(instances, SOP_UID)} == {SURVIVOR}
    assert set(studies.old_sops) <= {sop for sop, _ in reported(instances, SOP_UID)}
    assert reported(instances, SOP_UID) == reported(
        await qido(gateway, embedded, "instances", PatientID=MERGED, includefield="00100020"),
        SOP_UID,
    )
    whole = await qido(gateway, auth, "studies")  # no PatientID asked: coerced all the same
    assert dict(reported(whole)) == {**dict(everything), studies.someone: "555"}
    wildcard = await gateway.client.get("/med/qido/studies?PatientID=1009*", headers=auth)
    assert reported(wildcard) == [
        (studies.old, SURVIVOR)  # a wildcard matches the stored ID literally, reported coerced
    ]
    assert dict(reported(whole)) == dict(reported(await qido(gateway, embedded, "studies")))

    await gateway.client.get(
        "/med/qido/studies", params={"PatientID": MERGED}, headers={**auth, "X-Request-Id": "pm-1"}
    )
    (event,) = [
        e
        for e in await audit_events(gateway, "imaging.search.study")
        if e.caller_request_id == "pm-1"
    ]
    assert event.patient_id == SURVIVOR  # one patient once the merge is resolved
    assert event.after == {"results": 3, "studies": sorted(studies.merged_order), "mode": "proxy"}


async def test_limit_and_offset_page_through_the_merged_answer(
    gw: Gateway, orthanc: Orthanc
) -> None:
    auth, studies = await proxied(gw, orthanc)
    await merge(gw, auth)
    order = studies.merged_order
    pages = {
        (2, 0): (order[:2], True),
        (1, 1): (order[1:2], True),
        (2, 1): (order[1:], False),
        (2, 2): (order[2:], False),
        (5, 3): ([], False),
        (3, 0): (order, False),
    }
    for (limit, offset), (want, more) in pages.items():
        for asked in (MERGED, SURVIVOR):
            page = await qido(
                gw, auth, "studies", PatientID=asked, limit=str(limit), offset=str(offset)
            )
            assert [s for s, _ in reported(page)] == want, (limit, offset, asked)
            assert ("warning" in page.headers) is more, (limit, offset, asked)
            if more:
                assert page.headers["warning"].startswith("299 novaza:")
    bad = await gw.client.get(
        "/med/qido/studies", params={"PatientID": MERGED, "offset": "x"}, headers=auth
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "VALIDATION_FAILED")


async def test_wado_metadata_reports_the_survivor_and_instances_stay_as_stored(
    gw: Gateway, orthanc: Orthanc
) -> None:
    auth, studies = await proxied(gw, orthanc)
    old = f"/studies/{studies.old}"
    direct = orthanc.client()
    straight = as_gateway(orthanc, direct.get(f"{old}/metadata", headers=DICOM_JSON).text)
    assert {d[PATIENT_ID]["Value"][0] for d in straight} == {MERGED}
    unmerged = await gw.client.get(f"/med/wado{old}/metadata", headers=auth)
    assert unmerged.json() == straight  # before the merge: Orthanc's answer, URLs rewritten

    await merge(gw, auth)
    for path in (
        old,
        f"{old}/series/{studies.old_series}",
        f"{old}/series/{studies.old_series}/instances/{studies.old_sops[1]}",
    ):
        via = await gw.client.get(f"/med/wado{path}/metadata", headers=auth)
        assert via.status_code == 200, via.text
        assert via.headers["content-type"].startswith("application/dicom+json")
        answer, want = (
            via.json(),
            as_gateway(orthanc, direct.get(f"{path}/metadata", headers=DICOM_JSON).text),
        )
        assert [d[PATIENT_ID]["Value"] for d in answer] == [[SURVIVOR]] * len(want), path
        for item in want:
            item[PATIENT_ID] = {**item[PATIENT_ID], "Value": [SURVIVOR]}
        assert answer == want, path  # nothing else differs
    survivor = await gw.client.get(f"/med/wado/studies/{studies.new_recent}/metadata", headers=auth)
    assert survivor.json()[0][PATIENT_ID]["Value"] == [SURVIVOR]
    someone = await gw.client.get(f"/med/wado/studies/{studies.someone}/metadata", headers=auth)
    assert someone.json()[0][PATIENT_ID]["Value"] == ["555"]

    retrieved = await gw.client.get(f"/med/wado{old}", headers=auth)
    assert retrieved.status_code == 200
    parts = split_multipart(retrieved.content, retrieved.headers["content-type"])
    assert sorted(data for _, data in parts) == sorted(studies.parts[1:3])  # bytes as stored
    (event, *_) = [
        e for e in await audit_events(gw, "imaging.metadata") if e.resource_id == studies.old
    ]
    assert event.patient_id == MERGED  # as embedded: a retrieve names the study as stored


async def test_another_tenant_with_the_same_identifiers_sees_no_merge(
    gw: Gateway, orthanc: Orthanc, tmp_path: Path
) -> None:
    auth, studies = await proxied(gw, orthanc)
    with run_orthanc(tmp_path / "other-orthanc", name="other") as theirs:
        other, same = await proxied(gw, theirs, "other")
        await merge(gw, auth)  # the first tenant merges; the other tenant does not
        assert len(reported(await qido(gw, auth, "studies", PatientID=MERGED))) == 3
        assert reported(await qido(gw, other, "studies", PatientID=MERGED)) == [(same.old, MERGED)]
        unmerged = await qido(gw, other, "studies", PatientID=SURVIVOR)
        assert sorted(reported(unmerged)) == sorted(
            [(same.new_recent, SURVIVOR), (same.new_early, SURVIVOR)]
        )
        whole = dict(reported(await qido(gw, other, "studies")))
        assert whole[same.old] == MERGED and studies.old not in whole
        metadata = await gw.client.get(f"/med/wado/studies/{same.old}/metadata", headers=other)
        assert {d[PATIENT_ID]["Value"][0] for d in metadata.json()} == {MERGED}
        refused = await gw.client.get(f"/med/wado/studies/{studies.old}/metadata", headers=other)
        assert refused.status_code == 404


def test_query_rewriting_keeps_the_callers_encoding() -> None:
    asked = "PatientID=100999&includefield=00100010&StudyDate=2024*&limit=5&offset=2&token=t"
    assert exact_patient_id(asked) == "100999"
    assert exact_patient_id("00100020=A%20B") == "A B"
    for literal in ("PatientID=10*", "PatientID=", "PatientID=a%5Cb", "PatientID=a&PatientID=b"):
        assert exact_patient_id(literal) is None, literal
    assert identifier_query(asked, "A&B", offset=1000, limit=1000) == (
        "includefield=00100010&StudyDate=2024*&PatientID=A%26B&limit=1000&offset=1000"
    )


@pytest.mark.parametrize("step", [1, 3, 17, 4096, 1 << 30])
def test_metadata_coercion_is_the_same_whatever_the_chunking(step: int) -> None:
    datasets = [
        {
            "00080018": {"vr": "UI", "Value": [f"1.2.{n}"]},
            "00081115": {"vr": "SQ", "Value": [{PATIENT_ID: {"vr": "LO", "Value": [MERGED]}}]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": 'O"Brien{[\\'}]},
            PATIENT_ID: {"vr": "LO", "Value": [patient]},
            "00100021": {"vr": "LO", "Value": [MERGED]},
        }
        for n, patient in enumerate([MERGED, "555", MERGED])
    ]
    for body in (orjson.dumps(datasets), json.dumps(datasets, indent=3).encode()):
        coercer = PatientIdCoercer({MERGED: SURVIVOR})
        chunks = [body[i : i + step] for i in range(0, len(body), step)]
        out = b"".join(coercer.feed(chunk) for chunk in chunks) + coercer.flush()
        got = json.loads(out)
        assert [d[PATIENT_ID]["Value"][0] for d in got] == [SURVIVOR, "555", SURVIVOR]
        for before, after in zip(datasets, got, strict=True):
            assert {k: v for k, v in after.items() if k != PATIENT_ID} == {
                k: v for k, v in before.items() if k != PATIENT_ID
            }  # the sequence item's (0010,0020) and the look-alike value stay
