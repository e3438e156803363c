"""QIDO-RS matching over the index, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.imaging.dicomweb.qido import FuzzyName, Range, Wildcard, parse
from novaza_gateway.imaging.errors import InvalidQuery
from tests.conftest import Gateway
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, uid

STUDIES: list[dict[str, Any]] = [
    dict(patient_id="P1", patient_name="Müller^José", study_date="20240105",
         study_time="101500", accession="A-100", modality="CT", description="CT Head",
         referring="Welby^Marcus"),
    dict(patient_id="P2", patient_name="MULLER^Anna", study_date="20240210",
         study_time="083000", accession="A-200", modality="MR", description="MR Knee",
         referring="House^Gregory"),
    dict(patient_id="P3", patient_name="Doe^John", study_date="20231231",
         study_time="235959", accession="B-300", modality="CT", description="ct chest",
         referring="Welby^Marcus"),
]  # fmt: skip


async def seed(gw: Gateway, slug: str) -> tuple[dict[str, str], list[str]]:
    auth = await imaging_tenant(gw, slug)
    uids, parts = [], []
    for fields in STUDIES:
        study = uid()
        uids.append(study)
        parts.append(make_instance(study=study, **fields))
    # The second study gets a second series of another modality.
    parts.append(make_instance(study=uids[1], modality="SR", instance_number=2))
    body, ctype = multipart(parts)
    response = await gw.client.post(STOW, content=body, headers={**auth, "Content-Type": ctype})
    assert response.status_code == 200, response.text
    return auth, uids


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    return [r[tag]["Value"][0] if "Value" in r.get(tag, {}) else None for r in results]


STUDY_UID, PATIENT_ID, ACCESSION = "0020000D", "00100020", "00080050"


async def test_study_matching(gateway: Gateway) -> None:
    auth, uids = await seed(gateway, "qido-a")

    async def ids(**params: str) -> list[str]:
        response = await gateway.client.get("/med/qido/studies", params=params, headers=auth)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/dicom+json"
        return sorted(values(response.json(), PATIENT_ID))

    assert await ids() == ["P1", "P2", "P3"]
    assert await ids(PatientID="P2") == ["P2"]
    assert await ids(**{"00100020": "P3"}) == ["P3"]
    assert await ids(PatientName="Doe^John") == ["P3"]
    assert await ids(PatientName="doe^john") == []  # exact matching is case-sensitive
    assert await ids(PatientName="M*ller*") == ["P1"]  # case-sensitive: not 'MULLER'
    assert await ids(PatientName="MUL*") == ["P2"]
    assert await ids(PatientName="D?e*") == ["P3"]
    assert await ids(PatientName="muller", fuzzymatching="true") == ["P1", "P2"]
    assert await ids(PatientName="jose", fuzzymatching="true") == ["P1"]
    assert await ids(PatientName="mül*", fuzzymatching="true") == ["P1", "P2"]
    assert await ids(StudyDate="20240105") == ["P1"]
    assert await ids(StudyDate="20240101-20240301") == ["P1", "P2"]
    assert await ids(StudyDate="20240106-") == ["P2"]
    assert await ids(StudyDate="-20240105") == ["P1", "P3"]
    assert await ids(StudyTime="0800-1100") == ["P1", "P2"]
    assert await ids(StudyTime="23") == ["P3"]
    assert await ids(AccessionNumber="A-*") == ["P1", "P2"]
    assert await ids(AccessionNumber="B-300") == ["P3"]
    assert await ids(ModalitiesInStudy="SR") == ["P2"]
    assert await ids(ModalitiesInStudy="MR,CT") == ["P1", "P2", "P3"]
    assert await ids(Modality="CT") == ["P1", "P3"]
    assert await ids(StudyInstanceUID=f"{uids[0]},{uids[2]}") == ["P1", "P3"]
    assert await ids(StudyInstanceUID=f"{uids[1]}\\{uids[2]}") == ["P2", "P3"]
    assert await ids(ReferringPhysicianName="Welby^Marcus") == ["P1", "P3"]
    assert await ids(ReferringPhysicianName="house", fuzzymatching="true") == ["P2"]
    assert await ids(StudyDescription="CT*") == ["P1"]
    assert await ids(StudyDescription="*Kn?e") == ["P2"]
    assert await ids(PatientID="P1", StudyDate="20240210") == []


async def test_study_attributes_defaults_includefield_and_counts(gateway: Gateway) -> None:
    auth, uids = await seed(gateway, "qido-b")
    response = await gateway.client.get(
        "/med/qido/studies", params={"StudyInstanceUID": uids[1]}, headers=auth
    )
    (study,) = response.json()
    assert study["00080061"] == {"vr": "CS", "Value": ["MR", "SR"]}  # ModalitiesInStudy
    assert study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert study["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "MULLER^Anna"}]}
    assert study["00081190"]["Value"][0].endswith(f"/med/wado/studies/{uids[1]}")
    assert "00081030" not in study  # StudyDescription is not a default
    named = await gateway.client.get(
        "/med/qido/studies",
        params=[("StudyInstanceUID", uids[1]), ("includefield", "StudyDescription,00101010")],
        headers=auth,
    )
    assert named.json()[0]["00081030"]["Value"] == ["MR Knee"]
    everything = await gateway.client.get(
        "/med/qido/studies",
        params={"StudyInstanceUID": uids[1], "includefield": "all"},
        headers=auth,
    )
    assert everything.json()[0]["00081030"]["Value"] == ["MR Knee"]
    assert everything.json()[0]["00100030"]["Value"] == ["19700101"]  # PatientBirthDate
    universal = await gateway.client.get(
        "/med/qido/studies", params={"StudyDescription": ""}, headers=auth
    )
    assert len(universal.json()) == 3 and all("00081030" in s for s in universal.json())


async def test_series_and_instance_levels(gateway: Gateway) -> None:
    auth, uids = await seed(gateway, "qido-c")
    series = await gateway.client.get(f"/med/qido/studies/{uids[1]}/series", headers=auth)
    assert sorted(values(series.json(), "00080060")) == ["MR", "SR"]
    only_sr = await gateway.client.get(
        f"/med/qido/studies/{uids[1]}/series", params={"Modality": "SR"}, headers=auth
    )
    (sr,) = only_sr.json()
    series_uid = sr["0020000E"]["Value"][0]
    assert sr["00201209"]["Value"] == [1]  # NumberOfSeriesRelatedInstances
    instances = await gateway.client.get(
        f"/med/qido/studies/{uids[1]}/series/{series_uid}/instances", headers=auth
    )
    (instance,) = instances.json()
    assert instance["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.7"]
    assert instance["00280010"]["Value"] == [8]  # Rows
    assert instance["00081190"]["Value"][0].endswith(
        f"/series/{series_uid}/instances/{instance['00080018']['Value'][0]}"
    )
    all_ct = await gateway.client.get("/med/qido/series", params={"Modality": "CT"}, headers=auth)
    assert sorted(values(all_ct.json(), STUDY_UID)) == sorted([uids[0], uids[2]])
    by_patient = await gateway.client.get(
        "/med/qido/instances", params={"PatientID": "P2"}, headers=auth
    )
    assert len(by_patient.json()) == 2
    missing = await gateway.client.get(f"/med/qido/studies/{uid()}/series", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["code"] == "STUDY_NOT_FOUND"


async def test_limit_offset_and_warning(gw: Gateway) -> None:
    auth, _ = await seed(gw, "qido-d")
    first = await gw.client.get("/med/qido/studies", params={"limit": "2"}, headers=auth)
    assert len(first.json()) == 2
    assert first.headers["warning"].startswith("299 ")
    rest = await gw.client.get(
        "/med/qido/studies", params={"limit": "2", "offset": "2"}, headers=auth
    )
    assert len(rest.json()) == 1
    assert "warning" not in rest.headers
    ordered = values(first.json(), PATIENT_ID) + values(rest.json(), PATIENT_ID)
    assert ordered == ["P2", "P1", "P3"]  # newest study first
    bad = await gw.client.get("/med/qido/studies", params={"Bogus": "x"}, headers=auth)
    assert bad.status_code == 422
    assert bad.json()["code"] == "VALIDATION_FAILED"
    async with gw.app.state.db.sessionmaker() as session:
        events = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.action.like("imaging.search%"))
                    .order_by(AuditEvent.at)
                )
            )
            .scalars()
            .all()
        )
    assert [(e.action, e.outcome) for e in events] == [
        ("imaging.search.study", "success"),
        ("imaging.search.study", "success"),
        ("imaging.search_studies", "validation_failed"),
    ]
    assert events[0].actor == "user-1"
    assert events[0].after is not None and events[0].after["results"] == 2


def test_parse_is_pure_and_typed() -> None:
    query = parse(
        "study",
        [
            ("PatientName", "mü*"),
            ("fuzzymatching", "true"),
            ("StudyDate", "20240101-"),
            ("StudyTime", "10"),
            ("AccessionNumber", "A?1"),
            ("limit", "5000"),
        ],
    )
    conditions = {c.keyword: c.condition for c in query.criteria}
    assert conditions["PatientName"] == FuzzyName("MU*")
    assert conditions["StudyDate"] == Range("20240101", None)
    assert conditions["StudyTime"] == Range("100000.000000", "105959.999999")
    assert conditions["AccessionNumber"] == Wildcard("A?1")
    assert query.limit == 1000
    for bad in [
        ("StudyDate", "2024"),
        ("StudyDate", "-"),
        ("limit", "-1"),
        ("SOPInstanceUID", "1"),
    ]:
        with pytest.raises(InvalidQuery):
            parse("study", [bad])
