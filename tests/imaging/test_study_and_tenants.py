"""Study summaries, and tenant isolation across every imaging endpoint."""

from __future__ import annotations

import io

import pydicom
from sqlalchemy import select

from novaza_gateway.core.audit import AuditEvent
from tests.conftest import Gateway
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, split_multipart, uid


async def store(gw: Gateway, auth: dict[str, str], parts: list[bytes]) -> None:
    body, ctype = multipart(parts)
    response = await gw.client.post(STOW, content=body, headers={**auth, "Content-Type": ctype})
    assert response.status_code == 200, response.text


async def test_study_summary(gateway: Gateway) -> None:
    auth = await imaging_tenant(gateway, "summary")
    study, ct_series = uid(), uid()
    await store(
        gateway,
        auth,
        [
            make_instance(study=study, series=ct_series, modality="CT", instance_number=1),
            make_instance(study=study, series=ct_series, modality="CT", instance_number=2),
            make_instance(study=study, modality="SR", instance_number=3),
        ],
    )
    response = await gateway.client.get(
        f"/med/imaging/study/{study}", headers={**auth, "X-Request-Id": "req-sum-1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["studyInstanceUID"] == study
    assert body["patient"] == {
        "id": "PAT-1",
        "name": "Doe^John",
        "birthDate": "1970-01-01",
        "sex": "O",
    }
    assert (body["accessionNumber"], body["studyDate"], body["studyTime"]) == (
        "ACC-1",
        "2024-01-05",
        "10:15:00",
    )
    assert body["modalities"] == ["CT", "SR"]
    assert (body["numberOfSeries"], body["numberOfInstances"]) == (2, 3)
    assert sorted((s["modality"], s["numberOfInstances"]) for s in body["series"]) == [
        ("CT", 2),
        ("SR", 1),
    ]
    assert body["qcStatus"] == "pending"
    assert body["referringPhysician"] == "Welby^Marcus"
    missing = await gateway.client.get(f"/med/imaging/study/{uid()}", headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "STUDY_NOT_FOUND")
    async with gateway.app.state.db.sessionmaker() as session:
        event = (
            await session.execute(
                select(AuditEvent).where(
                    AuditEvent.action == "imaging.study_summary", AuditEvent.outcome == "success"
                )
            )
        ).scalar_one()
    assert (event.actor, event.patient_id, event.resource_id, event.caller_request_id) == (
        "user-1",
        "PAT-1",
        study,
        "req-sum-1",
    )
    assert event.tenant_id == gateway.tenants["summary"]["id"]


async def test_same_uids_in_two_tenants_stay_apart(gateway: Gateway) -> None:
    a = await imaging_tenant(gateway, "tenant-a")
    b = await imaging_tenant(gateway, "tenant-b")
    study, series, sop = uid(), uid(), uid()
    file_a = make_instance(
        study=study, series=series, sop=sop, patient_name="Alpha^A", patient_id="PA"
    )
    file_b = make_instance(
        study=study, series=series, sop=sop, patient_name="Beta^B", patient_id="PB"
    )
    await store(gateway, a, [file_a])
    await store(gateway, b, [file_b])
    for auth, data, pid in [(a, file_a, "PA"), (b, file_b, "PB")]:
        found = await gateway.client.get("/med/qido/studies", headers=auth)
        assert [s["00100020"]["Value"][0] for s in found.json()] == [pid]
        got = await gateway.client.get(f"/med/wado/studies/{study}", headers=auth)
        assert [d for _, d in split_multipart(got.content, got.headers["content-type"])] == [data]
        summary = await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)
        assert summary.json()["patient"]["id"] == pid
    # A signed URL minted by tenant A reads A's copy only.
    signed = await gateway.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": study}, headers=a
    )
    token = signed.json()["token"]
    got = await gateway.client.get(f"/med/wado/studies/{study}", params={"token": token})
    (part,) = split_multipart(got.content, got.headers["content-type"])
    assert pydicom.dcmread(io.BytesIO(part[1])).PatientID == "PA"


async def test_every_endpoint_answers_404_for_another_tenants_ids(gw: Gateway) -> None:
    owner = await imaging_tenant(gw, "owner")
    other = await imaging_tenant(gw, "other")
    study, series, sop = uid(), uid(), uid()
    await store(gw, owner, [make_instance(study=study, series=series, sop=sop, frames=2)])
    instance = f"/med/wado/studies/{study}/series/{series}/instances/{sop}"
    paths = [
        f"/med/wado/studies/{study}",
        f"/med/wado/studies/{study}/metadata",
        f"/med/wado/studies/{study}/series/{series}",
        f"/med/wado/studies/{study}/series/{series}/metadata",
        instance,
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/frames/1/rendered",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
        f"{instance}/bulkdata/7FE00010",
        f"/med/qido/studies/{study}/series",
        f"/med/qido/studies/{study}/instances",
        f"/med/qido/studies/{study}/series/{series}/instances",
        f"/med/imaging/study/{study}",
    ]
    for path in paths:
        mine = await gw.client.get(path, headers=owner)
        assert mine.status_code == 200, (path, mine.text)
        theirs = await gw.client.get(path, headers=other)
        assert theirs.status_code == 404, (path, theirs.text)
    for path in ["/med/qido/studies", "/med/qido/series", "/med/qido/instances"]:
        empty = await gw.client.get(path, params={"StudyInstanceUID": study}, headers=other)
        assert empty.json() == []
    minted = await gw.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": study}, headers=other
    )
    assert minted.status_code == 404
    # A token of the owner for this study, presented as the other tenant's JWT: not a grant.
    token = (
        await gw.client.post(
            "/med/imaging/signed-url", json={"studyInstanceUID": study}, headers=owner
        )
    ).json()["token"]
    crossed = await gw.client.get(
        f"/med/wado/studies/{study}", params={"token": token}, headers={"X-Tenant-ID": "other"}
    )
    assert crossed.status_code == 403  # X-Tenant-ID needs tenant:override


async def test_refused_reads_are_audited_with_their_outcome(gw: Gateway) -> None:
    owner = await imaging_tenant(gw, "audited-owner")
    prober = await imaging_tenant(gw, "audited-prober")
    study = uid()
    await store(gw, owner, [make_instance(study=study)])
    for path in [f"/med/wado/studies/{study}", f"/med/imaging/study/{study}"]:
        response = await gw.client.get(path, headers={**prober, "X-Request-Id": "probe-1"})
        assert response.status_code == 404
    bad_query = await gw.client.get("/med/qido/studies", params={"Nope": "1"}, headers=prober)
    assert bad_query.status_code == 422
    async with gw.app.state.db.sessionmaker() as session:
        events = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(
                        AuditEvent.tenant_id == gw.tenants["audited-prober"]["id"],
                        AuditEvent.action.like("imaging.%"),
                    )
                    .order_by(AuditEvent.at)
                )
            )
            .scalars()
            .all()
        )
    assert [(e.action, e.resource_id, e.outcome) for e in events] == [
        ("imaging.retrieve_study", study, "study_not_found"),
        ("imaging.study_summary", study, "study_not_found"),
        ("imaging.search_studies", None, "validation_failed"),
    ]
    assert {e.actor for e in events} == {"user-1"}
    assert events[0].caller_request_id == "probe-1"
