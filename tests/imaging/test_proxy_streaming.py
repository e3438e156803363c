"""Proxy mode over a real gateway server (uvicorn thread) and a real Orthanc: 50 MB go up by
STOW and come back by WADO without the gateway holding them, and the standard DICOMweb
client works through the proxy as it does against the embedded archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import TENANT_SCOPES
from tests.imaging.conftest import stow_then_wado_peaks
from tests.imaging.dicom import (
    shipped,
    shipped_bytes,
    split_multipart,
)
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
        stow_peak, wado_peak, received = stow_then_wado_peaks(
            url, auth, INSTANCES, "proxy-flat-memory"
        )
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
