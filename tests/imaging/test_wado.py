"""WADO-RS from the embedded archive: instances, metadata, bulk data, frames, rendering."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from tests.conftest import Gateway
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import (
    make_instance,
    multipart,
    shipped,
    shipped_bytes,
    split_multipart,
    uid,
)

WADO = "/med/wado/studies"
OCTETS = "application/octet-stream"


async def store(gw: Gateway, auth: dict[str, str], parts: list[bytes]) -> None:
    body, ctype = multipart(parts)
    response = await gw.client.post(STOW, content=body, headers={**auth, "Content-Type": ctype})
    assert response.status_code == 200, response.text


def keys(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


async def test_retrieve_study_series_instance_byte_identical(gateway: Gateway) -> None:
    auth = await imaging_tenant(gateway, "wado-a")
    study, series = uid(), uid()
    files = [make_instance(study=study, series=series, instance_number=i) for i in (1, 2)]
    files.append(make_instance(study=study, modality="SR", instance_number=3))
    await store(gateway, auth, files)

    response = await gateway.client.get(f"{WADO}/{study}", headers=auth)
    assert response.status_code == 200
    ctype = response.headers["content-type"]
    assert ctype.startswith('multipart/related; type="application/dicom"; boundary=')
    parts = split_multipart(response.content, ctype)
    assert sorted(data for _, data in parts) == sorted(files)
    assert all(
        h["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        for h, _ in parts
    )

    in_series = await gateway.client.get(f"{WADO}/{study}/series/{series}", headers=auth)
    assert sorted(
        d for _, d in split_multipart(in_series.content, in_series.headers["content-type"])
    ) == sorted(files[:2])

    _, _, sop = keys(files[1])
    one = await gateway.client.get(f"{WADO}/{study}/series/{series}/instances/{sop}", headers=auth)
    assert [d for _, d in split_multipart(one.content, one.headers["content-type"])] == [files[1]]

    for path, code in [
        (f"{WADO}/{uid()}", "STUDY_NOT_FOUND"),
        (f"{WADO}/{study}/series/{uid()}", "SERIES_NOT_FOUND"),
        (f"{WADO}/{study}/series/{series}/instances/{uid()}", "INSTANCE_NOT_FOUND"),
    ]:
        missing = await gateway.client.get(path, headers=auth)
        assert (missing.status_code, missing.json()["code"]) == (404, code)
    refused = await gateway.client.get(
        f"{WADO}/{study}", headers={**auth, "Accept": "application/json"}
    )
    assert refused.status_code == 406


async def test_metadata_with_bulkdata_uris_that_resolve(gw: Gateway) -> None:
    auth = await imaging_tenant(gw, "wado-b")
    ct = shipped_bytes("CT_small.dcm")
    await store(gw, auth, [ct])
    study, series, sop = keys(ct)
    response = await gw.client.get(f"{WADO}/{study}/metadata", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    (meta,) = response.json()
    assert meta["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1"
    pixel_uri = meta["7FE00010"]["BulkDataURI"]
    assert meta["7FE00010"]["vr"] == "OW"
    private_uri = meta["00431029"]["BulkDataURI"]  # a large private OB value
    original = pydicom.dcmread(shipped("CT_small.dcm"))
    for uri, expected in [
        (pixel_uri, original.PixelData),
        (private_uri, original[0x00431029].value),
    ]:
        path = uri.split("://", 1)[1].split("/", 1)[1]
        bulk = await gw.client.get(f"/{path}", headers=auth)
        assert bulk.status_code == 200, bulk.text
        (part,) = split_multipart(bulk.content, bulk.headers["content-type"])
        assert part[1] == expected
    series_meta = await gw.client.get(f"{WADO}/{study}/series/{series}/metadata", headers=auth)
    instance_meta = await gw.client.get(
        f"{WADO}/{study}/series/{series}/instances/{sop}/metadata", headers=auth
    )
    assert series_meta.json() == instance_meta.json() == [meta]


async def test_frames_native_and_compressed_as_stored(gw: Gateway) -> None:
    auth = await imaging_tenant(gw, "wado-c")
    study, series = uid(), uid()
    multi = make_instance(study=study, series=series, frames=3, rows=4, columns=5)
    lossy = shipped_bytes("JPEG-lossy.dcm")
    await store(gw, auth, [multi, lossy])
    _, _, sop = keys(multi)
    pixels = pydicom.dcmread(io.BytesIO(multi)).PixelData
    frame_bytes = 4 * 5 * 2
    url = f"{WADO}/{study}/series/{series}/instances/{sop}/frames/1,3"
    response = await gw.client.get(url, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    parts = [d for _, d in split_multipart(response.content, response.headers["content-type"])]
    assert parts == [pixels[:frame_bytes], pixels[2 * frame_bytes : 3 * frame_bytes]]
    beyond = await gw.client.get(url.replace("1,3", "4"), headers=auth)
    assert (beyond.status_code, beyond.json()["code"]) == (404, "FRAME_NOT_FOUND")
    lstudy, lseries, lsop = keys(lossy)
    frame_url = f"{WADO}/{lstudy}/series/{lseries}/instances/{lsop}/frames/1"
    (expected,) = generate_frames(pydicom.dcmread(io.BytesIO(lossy)).PixelData, number_of_frames=1)
    ts = "1.2.840.10008.1.2.4.51"
    for accept, part_type in [
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', OCTETS),
        ('multipart/related; type="image/jpeg"', "image/jpeg"),
    ]:
        compressed = await gw.client.get(frame_url, headers={**auth, "Accept": accept})
        assert compressed.status_code == 200, compressed.text
        ((headers, data),) = split_multipart(compressed.content, compressed.headers["content-type"])
        assert headers["content-type"] == f"{part_type}; transfer-syntax={ts}"
        assert data == expected and data[:2] == b"\xff\xd8"
    # Decompressing is not offered: octet-stream in the default transfer syntax is 406.
    refused = await gw.client.get(
        frame_url, headers={**auth, "Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert (refused.status_code, refused.json()["code"]) == (406, "FRAMES_UNAVAILABLE")


@pytest.mark.parametrize(
    ("name", "mode"),
    [("CT_small.dcm", "L"), ("MR_small.dcm", "L"), ("SC_rgb_small_odd.dcm", "RGB")],
)
async def test_rendered_and_thumbnail(gw: Gateway, name: str, mode: str) -> None:
    auth = await imaging_tenant(gw, "wado-d")
    data = shipped_bytes(name)
    await store(gw, auth, [data])
    study, series, sop = keys(data)
    base = f"{WADO}/{study}/series/{series}/instances/{sop}"
    original = pydicom.dcmread(io.BytesIO(data))
    jpeg = await gw.client.get(f"{base}/rendered", headers=auth)
    assert jpeg.status_code == 200, jpeg.text
    assert jpeg.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(jpeg.content))
    assert (image.format, image.mode, image.size) == (
        "JPEG",
        mode,
        (original.Columns, original.Rows),
    )
    png = await gw.client.get(f"{base}/frames/1/rendered", headers={**auth, "Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    decoded = np.asarray(Image.open(io.BytesIO(png.content)))
    assert decoded.shape[:2] == (original.Rows, original.Columns)
    assert decoded.max() > decoded.min()  # not a blank image
    thumb = await gw.client.get(f"{base}/thumbnail", params={"size": "32"}, headers=auth)
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 32
