"""Proxy mode over a real gateway server (uvicorn thread) and a real Orthanc: 50 MB go up by
STOW and come back by WADO without the gateway holding them, and the standard DICOMweb
client works through the proxy as it does against the embedded archive."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import TENANT_SCOPES
from tests.imaging.dicom import make_instance, shipped, shipped_bytes, split_multipart, uid
from tests.imaging.orthanc import Orthanc, run_orthanc

INSTANCES = 25  # x 2 MiB
LIMIT = 16 * 1024 * 1024


def proxied_tenant(url: str, data_dir: Path, slug: str, orthanc: Orthanc) -> str:
    admin = devkeys.mint_token(data_dir, subject="admin", scopes=["platform:admin"], tenant=None)
    created = httpx.post(
        f"{url}/admin/tenants/",
        json={
            "slug": slug,
            "name": slug,
            "status": "active",
            "addons": ["medical_imaging"],
            "rateLimit": {"ratePerSecond": 1000, "burst": 1000},
            "settings": {"imaging": orthanc.settings()},
        },
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert created.status_code == 201, created.text
    return devkeys.mint_token(data_dir, subject="viewer", scopes=list(TENANT_SCOPES), tenant=slug)


def test_50_mb_through_the_proxy_with_flat_memory(server: tuple[str, Path], tmp_path: Path) -> None:
    url, data_dir = server
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        auth = {"Authorization": f"Bearer {proxied_tenant(url, data_dir, 'big', orthanc)}"}
        study, series = uid(), uid()
        boundary = "proxy-flat-memory"
        template_sop = "1.2.826.0.1.3680043.9.7.1.10000000000000000000"
        template = make_instance(
            study=study, series=series, sop=template_sop, rows=1024, columns=1024
        )

        def body() -> Iterator[bytes]:
            for i in range(INSTANCES):
                sop = f"{template_sop[:-20]}1{i + 1:019d}"
                data = template.replace(template_sop.encode(), sop.encode())
                yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                for start in range(0, len(data), 64 * 1024):
                    yield data[start : start + 64 * 1024]
                yield b"\r\n"
            yield f"--{boundary}--\r\n".encode()

        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        tracemalloc.start()
        try:
            stored = httpx.post(
                f"{url}/med/stow/studies",
                content=body(),
                headers={**auth, "Content-Type": ctype},
                timeout=120,
            )
            _, stow_peak = tracemalloc.get_traced_memory()
            assert stored.status_code == 200, stored.text[:500]
            assert len(stored.json()["00081199"]["Value"]) == INSTANCES
            tracemalloc.reset_peak()
            received = 0
            with httpx.stream(
                "GET", f"{url}/med/wado/studies/{study}", headers=auth, timeout=120
            ) as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_raw():
                    received += len(chunk)
            _, wado_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received > INSTANCES * 2 * 1024 * 1024
        assert stow_peak < LIMIT, f"STOW peak {stow_peak / 1e6:.1f} MB"
        assert wado_peak < LIMIT, f"WADO peak {wado_peak / 1e6:.1f} MB"
        print(f"proxy peaks: STOW {stow_peak / 1e6:.1f} MB, WADO {wado_peak / 1e6:.1f} MB")


def test_dicomweb_client_through_the_proxy(server: tuple[str, Path], tmp_path: Path) -> None:
    url, data_dir = server
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        token = proxied_tenant(url, data_dir, "dwc", orthanc)
        dw = DICOMwebClient(
            url,
            qido_url_prefix="med/qido",
            wado_url_prefix="med/wado",
            stow_url_prefix="med/stow",
            headers={"Authorization": f"Bearer {token}"},
        )
        ct, mr = (pydicom.dcmread(shipped(n)) for n in ("CT_small.dcm", "MR_small.dcm"))
        result = dw.store_instances([ct, mr])
        stored = {item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence}
        assert stored == {ct.SOPInstanceUID, mr.SOPInstanceUID}

        found = dw.search_for_studies(search_filters={"PatientID": ct.PatientID})
        assert [s["0020000D"]["Value"][0] for s in found] == [ct.StudyInstanceUID]
        series: list[dict[str, Any]] = dw.search_for_series(ct.StudyInstanceUID)
        assert series[0]["00081190"]["Value"][0].startswith(f"{url}/med/wado/studies/")
        # What comes back is byte-identical to what went up.
        raw = shipped_bytes("MR_small.dcm")
        instance = dw.retrieve_instance(
            mr.StudyInstanceUID, mr.SeriesInstanceUID, mr.SOPInstanceUID
        )
        assert instance.SOPInstanceUID == mr.SOPInstanceUID
        via = httpx.get(
            f"{url}/med/wado/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}"
            f"/instances/{mr.SOPInstanceUID}",
            headers={"Authorization": f"Bearer {token}"},
        )
        ((_, data),) = split_multipart(via.content, via.headers["content-type"])
        assert data == raw
        metadata = dw.retrieve_study_metadata(ct.StudyInstanceUID)
        assert metadata[0]["0020000D"]["Value"][0] == ct.StudyInstanceUID
