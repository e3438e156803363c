"""The standard Python DICOMweb client against a real gateway server over TCP.

``dicomweb-client`` stores, searches and retrieves through ``/med/stow``, ``/med/qido`` and
``/med/wado``; what it retrieves is byte-identical to what was stored.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient

from tests.imaging.conftest import tenant
from tests.imaging.dicom import make_instance, shipped, shipped_bytes, uid


def client(url: str, token: str) -> DICOMwebClient:
    return DICOMwebClient(
        url,
        qido_url_prefix="med/qido",
        wado_url_prefix="med/wado",
        stow_url_prefix="med/stow",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_store_search_retrieve_round_trip(server: tuple[str, Path]) -> None:
    url, data_dir = server
    dw = client(url, tenant(url, data_dir, "dw-site"))
    ct, mr = (pydicom.dcmread(shipped(n)) for n in ("CT_small.dcm", "MR_small.dcm"))
    study, series_uid = uid(), uid()
    generated = [
        pydicom.dcmread(
            pydicom.filebase.DicomBytesIO(
                make_instance(study=study, series=series_uid, instance_number=i)
            )
        )
        for i in (1, 2)
    ]
    result = dw.store_instances([ct, mr, *generated])
    stored = {item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence}
    assert stored == {ct.SOPInstanceUID, mr.SOPInstanceUID, *(g.SOPInstanceUID for g in generated)}

    # The client's own multipart encoder, carrying a shipped file's exact bytes.
    raw = shipped_bytes("rtplan.dcm")
    rtplan = pydicom.dcmread(shipped("rtplan.dcm"))
    dw._http_post_multipart_application_dicom(f"{url}/med/stow/studies", [raw])

    studies = dw.search_for_studies(search_filters={"PatientID": ct.PatientID})
    assert [s["0020000D"]["Value"][0] for s in studies] == [ct.StudyInstanceUID]
    fuzzy = dw.search_for_studies(search_filters={"PatientName": "doe"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [study]
    series = dw.search_for_series(study)
    assert len(series) == 1
    assert (
        series[0]["00081190"]["Value"][0] == f"{url}/med/wado/studies/{study}/series/{series_uid}"
    )
    instances = dw.search_for_instances(study, fields=["all"])
    assert sorted(i["00200013"]["Value"][0] for i in instances) == [1, 2]
    paged = dw.search_for_studies(limit=2, offset=0)
    assert len(paged) == 2

    retrieved = dw.retrieve_study(study)
    assert sorted(d.SOPInstanceUID for d in retrieved) == sorted(
        g.SOPInstanceUID for g in generated
    )
    got_ct = dw.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert got_ct.PixelData == ct.PixelData

    # Byte identity, decoded by the client's own multipart reader.
    instance_url = (
        f"{url}/med/wado/studies/{rtplan.StudyInstanceUID}/series/"
        f"{rtplan.SeriesInstanceUID}/instances/{rtplan.SOPInstanceUID}"
    )
    response = dw._http_get(
        instance_url, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert list(dw._decode_multipart_message(response, stream=False)) == [raw]
    response = dw._http_get(
        f"{url}/med/wado/studies/{ct.StudyInstanceUID}", headers={"Accept": "multipart/related"}
    )
    (ct_bytes,) = dw._decode_multipart_message(response, stream=True)
    archived = next((data_dir / "imaging").rglob(f"{ct.SOPInstanceUID}.*.dcm")).read_bytes()
    assert ct_bytes == archived

    metadata = dw.retrieve_study_metadata(ct.StudyInstanceUID)
    assert metadata[0]["00080018"]["Value"] == [ct.SOPInstanceUID]
    frames = dw.retrieve_instance_frames(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, frame_numbers=[1]
    )
    assert frames == [ct.PixelData]
    jpeg = dw.retrieve_instance_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=("image/jpeg",)
    )
    assert jpeg[:2] == b"\xff\xd8"
