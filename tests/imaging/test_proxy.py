"""Proxy mode against a real Orthanc with its DICOMweb plugin (started per test).

The same QIDO searches through the gateway and straight to Orthanc give the same results
(Orthanc's URLs rewritten to the gateway's); WADO answers are byte-identical (multipart
boundaries aside, which each answer draws afresh); STOW goes through. Failures of the
upstream answer ``UPSTREAM_UNAVAILABLE``; two tenants never share an upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from novaza_gateway.core.audit import AuditEvent
from tests.conftest import Gateway, free_port
from tests.imaging.conftest import imaging_tenant
from tests.imaging.dicom import (
    make_instance,
    multipart,
    shipped,
    shipped_bytes,
    split_multipart,
    uid,
)
from tests.imaging.orthanc import Orthanc, run_orthanc

GATEWAY_WADO = "http://gateway/med/wado"
FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG-lossy.dcm")
DICOM_JSON = {"Accept": "application/dicom+json"}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path / "orthanc") as server:
        yield server


async def proxy_tenant(gw: Gateway, slug: str, orthanc: Orthanc, **imaging: str) -> dict[str, str]:
    return await imaging_tenant(gw, slug, settings={"imaging": orthanc.settings(**imaging)})


async def stow(gw: Gateway, auth: dict[str, str], files: list[bytes], path: str = "") -> Any:
    body, ctype = multipart(files)
    answer = await gw.client.post(
        f"/med/stow/studies{path}", content=body, headers={**auth, "Content-Type": ctype}
    )
    assert answer.status_code == 200, answer.text
    return answer


def as_gateway(orthanc: Orthanc, text: str) -> Any:
    """Orthanc's answer as the gateway should pass it on: its URLs pointing at the gateway,
    its ``.../bulk/TAG`` BulkDataURIs as ``.../bulkdata/bulk/TAG``."""
    text = text.replace(orthanc.dicomweb, GATEWAY_WADO)
    return json.loads(text.replace("/bulk/", "/bulkdata/bulk/"))


def same_multipart(via: Any, direct: Any) -> None:
    """Byte-identical bodies once each answer's own boundary is set aside."""
    via_boundary = via.headers["content-type"].split("boundary=")[1].strip('"')
    direct_boundary = direct.headers["content-type"].split("boundary=")[1].strip('"')
    assert via.headers["content-type"].replace(via_boundary, "B") == direct.headers[
        "content-type"
    ].replace(direct_boundary, "B")
    assert via.content.replace(via_boundary.encode(), b"B") == direct.content.replace(
        direct_boundary.encode(), b"B"
    )


async def test_store_search_and_retrieve_match_orthanc_direct(
    gw: Gateway, orthanc: Orthanc
) -> None:
    auth = await proxy_tenant(gw, "proxied", orthanc)
    stored = await stow(gw, auth, [shipped_bytes(name) for name in FILES])
    refs = stored.json()["00081199"]["Value"]
    assert len(refs) == len(FILES)
    assert all(r["00081190"]["Value"][0].startswith(GATEWAY_WADO + "/studies/") for r in refs)
    assert orthanc.url not in stored.text
    ct, mr = (pydicom.dcmread(shipped(name)) for name in ("CT_small.dcm", "MR_small.dcm"))

    direct = orthanc.client()
    searches = [
        "/studies",
        "/studies?PatientID=1CT1",
        "/studies?ModalitiesInStudy=MR",
        "/studies?PatientName=*CT*&includefield=all",
        "/studies?StudyDate=20040101-20041231",
        "/series?Modality=CT",
        "/instances?includefield=all",
        f"/studies/{ct.StudyInstanceUID}/series",
        f"/studies/{mr.StudyInstanceUID}/instances",
        f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances",
        "/studies?PatientID=nobody",
    ]
    for query in searches:
        via = await gw.client.get("/med/qido" + query, headers=auth)
        straight = direct.get(query, headers=DICOM_JSON)
        assert via.status_code == straight.status_code == 200, (query, via.text)
        assert via.headers["content-type"] == "application/dicom+json"
        assert via.json() == as_gateway(orthanc, straight.text), query
        assert "keep-alive" not in via.headers and "connection" not in via.headers
    assert len((await gw.client.get("/med/qido/studies", headers=auth)).json()) == len(FILES)

    mr_instance = (
        f"/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}"
        f"/instances/{mr.SOPInstanceUID}"
    )
    ct_instance = (
        f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
        f"/instances/{ct.SOPInstanceUID}"
    )
    for path in (
        f"/studies/{ct.StudyInstanceUID}",
        f"/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}",
        mr_instance,
        f"{mr_instance}/frames/1",
    ):
        via = await gw.client.get("/med/wado" + path, headers=auth)
        straight = direct.get(path)
        assert via.status_code == straight.status_code == 200, (path, via.text)
        same_multipart(via, straight)
        assert "keep-alive" not in via.headers and "www-authenticate" not in via.headers
    # The instance as stored, byte for byte.
    whole = await gw.client.get(f"/med/wado{mr_instance}", headers=auth)
    ((_, data),) = split_multipart(whole.content, whole.headers["content-type"])
    assert data == shipped_bytes("MR_small.dcm")

    rendered = await gw.client.get(f"/med/wado{mr_instance}/rendered", headers=auth)
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "image/jpeg"
    assert rendered.content == direct.get(f"{mr_instance}/rendered").content

    for path in (f"/studies/{ct.StudyInstanceUID}/metadata", f"{ct_instance}/metadata"):
        via = await gw.client.get("/med/wado" + path, headers=auth)
        assert via.status_code == 200
        assert via.json() == as_gateway(orthanc, direct.get(path).text), path
        assert orthanc.url not in via.text

    # A BulkDataURI the gateway handed out reads the same bytes as Orthanc's own.
    metadata = (await gw.client.get(f"/med/wado{ct_instance}/metadata", headers=auth)).json()
    bulk_uri = metadata[0]["7FE00010"]["BulkDataURI"]
    assert bulk_uri == f"{GATEWAY_WADO}{ct_instance}/bulkdata/bulk/7fe00010"
    via = await gw.client.get(bulk_uri.removeprefix("http://gateway"), headers=auth)
    assert via.status_code == 200
    same_multipart(via, direct.get(f"{ct_instance}/bulk/7fe00010"))


async def test_qido_pages_are_capped_with_the_warning_as_embedded(
    gw: Gateway, orthanc: Orthanc
) -> None:
    auth = await proxy_tenant(gw, "paged", orthanc)
    await stow(gw, auth, [shipped_bytes(name) for name in FILES])
    page = await gw.client.get("/med/qido/studies?limit=2", headers=auth)
    assert page.status_code == 200
    assert page.headers["warning"].startswith("299 ")
    straight = orthanc.client().get("/studies?limit=2", headers=DICOM_JSON)
    assert page.json() == as_gateway(orthanc, straight.text)
    whole = await gw.client.get(f"/med/qido/studies?limit={len(FILES)}", headers=auth)
    assert len(whole.json()) == len(FILES) and "warning" not in whole.headers


async def test_reads_are_audited_with_patient_and_study(gw: Gateway, orthanc: Orthanc) -> None:
    auth = await proxy_tenant(gw, "audited", orthanc)
    study = uid()
    await stow(gw, auth, [make_instance(study=study, patient_id="PX-7")])
    # A fresh gateway process would not know the patient: it asks the upstream once.
    gw.app.state.imaging_proxy.patients = type(gw.app.state.imaging_proxy.patients)()
    headers = {**auth, "X-Request-Id": "proxy-audit-1"}
    assert (await gw.client.get(f"/med/wado/studies/{study}", headers=headers)).status_code == 200
    assert (
        await gw.client.get("/med/qido/studies?PatientID=PX-7", headers=auth)
    ).status_code == 200
    missing = await gw.client.get(f"/med/wado/studies/{uid()}", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "STUDY_NOT_FOUND"

    tenant_id = gw.tenants["audited"]["id"]
    async with gw.app.state.db.session_scope() as session:
        events = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.tenant_id == tenant_id)
                    .order_by(AuditEvent.at)
                )
            )
            .scalars()
            .all()
        )
    by_action = {e.action: e for e in events}
    assert by_action["imaging.store"].resource_id == study
    assert by_action["imaging.store"].patient_id == "PX-7"
    retrieve = by_action["imaging.retrieve"]
    assert (retrieve.patient_id, retrieve.resource_id, retrieve.actor) == ("PX-7", study, "user-1")
    assert retrieve.caller_request_id == "proxy-audit-1" and retrieve.after["mode"] == "proxy"
    search = by_action["imaging.search.study"]
    assert search.patient_id == "PX-7" and search.after["studies"] == [study]
    refused = by_action["imaging.retrieve_study"]
    assert refused.outcome == "study_not_found"


async def test_signed_url_reads_go_upstream_without_the_token(
    gw: Gateway, orthanc: Orthanc
) -> None:
    await proxy_tenant(gw, "viewer", orthanc)
    ct = pydicom.dcmread(shipped("CT_small.dcm"))
    await stow(
        gw, gw.auth("viewer"), [shipped_bytes("CT_small.dcm"), shipped_bytes("MR_small.dcm")]
    )
    signer = gw.app.state.imaging.signer
    grant = signer.sign(gw.tenants["viewer"]["id"], ct.StudyInstanceUID, 300, "user-1")
    token = signer.token(grant)
    # Orthanc would refuse an unknown 'token' matching key: the gateway keeps it to itself.
    search = await gw.client.get(
        f"/med/qido/studies?StudyInstanceUID={ct.StudyInstanceUID}&token={token}"
    )
    assert search.status_code == 200 and len(search.json()) == 1
    study = await gw.client.get(f"/med/wado/studies/{ct.StudyInstanceUID}?token={token}")
    assert study.status_code == 200
    mr = pydicom.dcmread(shipped("MR_small.dcm"))
    other = await gw.client.get(f"/med/wado/studies/{mr.StudyInstanceUID}?token={token}")
    assert other.status_code == 403


async def test_the_route_guard_is_the_same_in_proxy_mode(gw: Gateway, orthanc: Orthanc) -> None:
    await gw.create_tenant("no-addon", addons=["emr"], settings={"imaging": orthanc.settings()})
    refused = await gw.client.get("/med/qido/studies", headers=gw.auth("no-addon"))
    assert refused.status_code == 403 and refused.json()["code"] == "ADDON_REQUIRED"
    # Refused by the guard before the upstream is consulted (this one does not even exist).
    nowhere = {"mode": "proxy", "upstreamUrl": f"http://127.0.0.1:{free_port()}/dicom-web"}
    await imaging_tenant(gw, "scoped", settings={"imaging": nowhere})
    weak = gw.auth("scoped", scopes="imaging:read")
    body, ctype = multipart([shipped_bytes("CT_small.dcm")])
    stored = await gw.client.post(
        "/med/stow/studies", content=body, headers={**weak, "Content-Type": ctype}
    )
    assert stored.status_code == 403 and stored.json()["code"] == "FORBIDDEN"
    anonymous = await gw.client.get("/med/qido/studies")
    assert anonymous.status_code == 401
