"""Proxy mode outside DICOMweb: signed URLs and study summaries for studies that live
upstream (a real Orthanc), 404s named by level, and an upstream that is down.

The summary of a proxied study is compared with the embedded archive's summary of the same
instances: the gateway answers the same whichever side holds the study.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, free_port
from tests.imaging.conftest import imaging_tenant
from tests.imaging.dicom import make_instance, uid
from tests.imaging.orthanc import Orthanc, run_orthanc
from tests.imaging.workflow import audit_events, schedule, store, workflow_tenant


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path / "orthanc") as server:
        yield server


def instances(study: str, **attributes: Any) -> list[bytes]:
    ct = uid()
    return [
        make_instance(study=study, series=ct, modality="CT", instance_number=1, **attributes),
        make_instance(study=study, series=ct, modality="CT", instance_number=2, **attributes),
        make_instance(study=study, modality="SR", instance_number=3, **attributes),
    ]


async def signed_url(gw: Gateway, auth: dict[str, str], study: str) -> Any:
    return await gw.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": study}, headers=auth
    )


async def test_signed_url_for_an_upstream_study_reads_it_through_the_proxy(
    gw: Gateway, orthanc: Orthanc
) -> None:
    auth = await imaging_tenant(gw, "signer", settings={"imaging": orthanc.settings()})
    study = uid()
    await store(gw, auth, *instances(study, patient_id="PX-9"))

    issued = await signed_url(gw, {**auth, "X-Request-Id": "sign-1"}, study)
    assert issued.status_code == 200, issued.text
    url = issued.json()["url"]
    assert url.startswith(f"http://gateway/med/wado/studies/{study}?token=")
    retrieved = await gw.client.get(url.removeprefix("http://gateway"))  # no other credential
    assert retrieved.status_code == 200, retrieved.text
    assert retrieved.headers["content-type"].startswith("multipart/related")
    search = await gw.client.get(
        f"/med/qido/studies/{study}/series",
        headers={"Authorization": f"Bearer {issued.json()['token']}"},
    )
    assert search.status_code == 200 and len(search.json()) == 2

    missing = await signed_url(gw, auth, uid())
    assert (missing.status_code, missing.json()["code"]) == (404, "STUDY_NOT_FOUND")

    (event,) = [e for e in await audit_events(gw, "imaging.signed_url") if e.outcome == "success"]
    assert (event.resource_id, event.patient_id, event.caller_request_id) == (
        study,
        "PX-9",
        "sign-1",
    )
    assert event.after is not None and event.after["mode"] == "proxy"
    assert event.tenant_id == gw.tenants["signer"]["id"]
    refused = [e for e in await audit_events(gw, "imaging.create_signed_url")]
    assert [e.outcome for e in refused] == ["study_not_found"]


async def test_the_summary_of_an_upstream_study_is_the_embedded_summary(
    gw: Gateway, orthanc: Orthanc
) -> None:
    proxied = await imaging_tenant(gw, "upstream", settings={"imaging": orthanc.settings()})
    embedded = await imaging_tenant(gw, "embedded")
    study = uid()
    parts = instances(study, patient_id="PX-1", patient_name="Doe^Jane", accession="ACC-77")
    await store(gw, proxied, *parts)
    await store(gw, embedded, *parts)

    via_proxy = await gw.client.get(
        f"/med/imaging/study/{study}", headers={**proxied, "X-Request-Id": "sum-1"}
    )
    assert via_proxy.status_code == 200, via_proxy.text
    local = await gw.client.get(f"/med/imaging/study/{study}", headers=embedded)
    assert local.status_code == 200, local.text
    assert via_proxy.json() == local.json()
    body = via_proxy.json()
    assert body["patient"] == {
        "id": "PX-1",
        "name": "Doe^Jane",
        "birthDate": "1970-01-01",
        "sex": "O",
    }
    assert (body["numberOfSeries"], body["numberOfInstances"], body["modalities"]) == (
        2, 3, ["CT", "SR"],
    )  # fmt: skip
    assert (body["qcStatus"], body["qc"], body["worklistItem"]) == ("pending", None, None)
    assert orthanc.url not in via_proxy.text

    missing = await gw.client.get(f"/med/imaging/study/{uid()}", headers=proxied)
    assert (missing.status_code, missing.json()["code"]) == (404, "STUDY_NOT_FOUND")
    for malformed in ("1.2.3%3Fx", "1.2.x"):  # not UIDs: refused before the upstream is asked
        refused = await gw.client.get(f"/med/imaging/study/{malformed}", headers=proxied)
        assert (refused.status_code, refused.json()["code"]) == (400, "INVALID_UID")

    events = [
        e
        for e in await audit_events(gw, "imaging.study_summary")
        if e.tenant_id == gw.tenants["upstream"]["id"] and e.outcome == "success"
    ]
    assert [(e.resource_id, e.patient_id, e.caller_request_id) for e in events] == [
        (study, "PX-1", "sum-1")
    ]
    assert events[0].after == {"mode": "proxy"}


async def test_the_summary_merges_the_gateways_worklist_item(gw: Gateway, orthanc: Orthanc) -> None:
    settings: dict[str, Any] = orthanc.settings()
    auth = await workflow_tenant(gw, "ordered", **settings)
    await schedule(gw, auth)
    study = uid()
    await store(gw, auth, make_instance(study=study, patient_id="100234", accession="ACC7001"))
    body = (await gw.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert body["accessionNumber"] == "ACC7001"
    item = body["worklistItem"]
    assert item["accessionNumber"] == "ACC7001" and item["status"] == "scheduled"
    assert item["href"].startswith("/med/imaging/worklist?accessionNumber=ACC7001")


async def test_tenants_stay_apart(gw: Gateway, orthanc: Orthanc) -> None:
    owner = await imaging_tenant(gw, "owner", settings={"imaging": orthanc.settings()})
    other = await imaging_tenant(gw, "other")  # embedded: does not see the owner's archive
    study = uid()
    await store(gw, owner, make_instance(study=study))
    assert (await signed_url(gw, owner, study)).status_code == 200
    for answer in (
        await signed_url(gw, other, study),
        await gw.client.get(f"/med/imaging/study/{study}", headers=other),
    ):
        assert (answer.status_code, answer.json()["code"]) == (404, "STUDY_NOT_FOUND")


async def test_upstream_404s_are_named_by_level(gw: Gateway, orthanc: Orthanc) -> None:
    auth = await imaging_tenant(gw, "levels", settings={"imaging": orthanc.settings()})
    study, series, sop = uid(), uid(), uid()
    await store(gw, auth, make_instance(study=study, series=series, sop=sop))
    for path, code in (
        (f"/med/wado/studies/{uid()}", "STUDY_NOT_FOUND"),
        (f"/med/wado/studies/{uid()}/metadata", "STUDY_NOT_FOUND"),
        (f"/med/wado/studies/{study}/series/{uid()}", "SERIES_NOT_FOUND"),
        (f"/med/wado/studies/{study}/series/{series}/instances/{uid()}", "INSTANCE_NOT_FOUND"),
    ):
        answer = await gw.client.get(path, headers=auth)
        assert (answer.status_code, answer.json()["code"]) == (404, code), path
        assert orthanc.url not in answer.text


async def test_an_upstream_that_is_down_answers_the_envelope(gw: Gateway, tmp_path: Path) -> None:
    port = free_port()
    section = {"mode": "proxy", "upstreamUrl": f"http://127.0.0.1:{port}/dicom-web"}
    auth = await imaging_tenant(gw, "down", settings={"imaging": section})
    study = uid()
    for answer in (
        await signed_url(gw, auth, study),
        await gw.client.get(f"/med/imaging/study/{study}", headers=auth),
    ):
        assert answer.status_code == 502, answer.text
        body = answer.json()
        assert set(body) <= {"code", "message", "details"}
        assert (body["code"], body["details"]["reason"]) == (
            "UPSTREAM_UNAVAILABLE",
            "connect_failed",
        )
        assert str(port) not in answer.text and "Traceback" not in answer.text
    refused = await audit_events(gw, "imaging.study_summary")
    assert [e.outcome for e in refused] == ["upstream_unavailable"]


async def test_a_stopped_orthanc_mid_session(gw: Gateway, tmp_path: Path) -> None:
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        auth = await imaging_tenant(gw, "stops", settings={"imaging": orthanc.settings()})
        study = uid()
        await store(gw, auth, make_instance(study=study))
        assert (await gw.client.get(f"/med/imaging/study/{study}", headers=auth)).status_code == 200
        orthanc.stop()
        answer = await gw.client.get(f"/med/imaging/study/{study}", headers=auth)
        assert answer.status_code == 502 and answer.json()["code"] == "UPSTREAM_UNAVAILABLE"
        assert orthanc.url not in answer.text
