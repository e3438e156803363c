"""Two replicas, one archive: a study stored through one gateway is searched and retrieved
through a second one, with its own data dir, sharing the database and ``NOVAZA_ARCHIVE_URL``
(a ``file://`` directory, or ``s3://`` on moto's S3 server); on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.imaging.archive_stores import Store, moto_s3, shared_store  # noqa: F401 (fixtures)
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, shipped_bytes, split_multipart, uid

WADO = "/med/wado/studies"


@pytest.fixture
async def replicas(
    tmp_path: Path,
    db_url: str,
    shared_store: Store,  # noqa: F811
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    settings = [
        gateway_settings(tmp_path / name, db_url, **shared_store.settings)
        for name in ("data", "data-b")
    ]
    async for first in start_gateway(settings[0]):
        async for second in start_gateway(settings[1]):
            yield first, second


async def test_a_study_stored_on_one_replica_is_served_by_another(
    replicas: tuple[Gateway, Gateway],
    shared_store: Store,  # noqa: F811
) -> None:
    first, second = replicas
    await imaging_tenant(first, "site")
    study, series = uid(), uid()
    native = [
        make_instance(study=study, series=series, rows=64, columns=48, frames=2, instance_number=i)
        for i in (1, 2)
    ]
    lossy = shipped_bytes("JPEG-lossy.dcm")
    lossy_ds = pydicom.dcmread(io.BytesIO(lossy))
    body, ctype = multipart(native)
    stored = await first.client.post(
        STOW, content=body, headers={**first.auth("site"), "Content-Type": ctype}
    )
    assert stored.status_code == 200, stored.text
    body, ctype = multipart([lossy])
    stored = await first.client.post(
        STOW, content=body, headers={**first.auth("site"), "Content-Type": ctype}
    )
    assert stored.status_code == 200, stored.text

    # Nothing on the first replica's own disk: the files are in the shared store.
    assert not list((first.data_dir / "imaging").rglob("*.dcm"))
    archived = shared_store.files(first.data_dir)
    assert sorted(archived.values()) == sorted([*native, lossy])
    assert all(key.count("/") == 3 and key.endswith(".dcm") for key in archived)

    auth = second.auth("site")
    found = await second.client.get(f"/med/qido/studies?StudyInstanceUID={study}", headers=auth)
    assert found.status_code == 200 and len(found.json()) == 1

    whole = await second.client.get(f"{WADO}/{study}/series/{series}", headers=auth)
    assert whole.status_code == 200
    assert int(whole.headers["content-length"]) == len(whole.content)
    parts = split_multipart(whole.content, whole.headers["content-type"])
    assert sorted(data for _, data in parts) == sorted(native)

    sop = pydicom.dcmread(io.BytesIO(native[1])).SOPInstanceUID
    instance = f"{WADO}/{study}/series/{series}/instances/{sop}"
    one = await second.client.get(instance, headers=auth)
    assert one.status_code == 200
    ((_, data),) = split_multipart(one.content, one.headers["content-type"])
    assert data == native[1]

    metadata = await second.client.get(f"{WADO}/{study}/metadata", headers=auth)
    assert metadata.status_code == 200, metadata.text
    assert sorted(item["00080018"]["Value"][0] for item in metadata.json()) == sorted(
        pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID for f in native
    )

    frames = await second.client.get(f"{instance}/frames/2", headers=auth)
    assert frames.status_code == 200
    ((_, pixels),) = split_multipart(frames.content, frames.headers["content-type"])
    full = pydicom.dcmread(io.BytesIO(native[1])).PixelData
    assert pixels == full[len(full) // 2 :]

    rendered = await second.client.get(
        f"{instance}/rendered", headers={**auth, "Accept": "image/png"}
    )
    assert rendered.status_code == 200
    assert Image.open(io.BytesIO(rendered.content)).size == (48, 64)
    thumbnail = await second.client.get(f"{instance}/thumbnail?size=16", headers=auth)
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"

    lossy_path = (
        f"{WADO}/{lossy_ds.StudyInstanceUID}/series/{lossy_ds.SeriesInstanceUID}"
        f"/instances/{lossy_ds.SOPInstanceUID}"
    )
    compressed = await second.client.get(f"{lossy_path}/frames/1", headers=auth)
    assert compressed.status_code == 200, compressed.text
    ((headers, bitstream),) = split_multipart(
        compressed.content, compressed.headers["content-type"]
    )
    assert headers["content-type"].startswith("image/jpeg") and bitstream[:2] == b"\xff\xd8"
    bulk = await second.client.get(f"{lossy_path}/bulkdata/7FE00010", headers=auth)
    assert bulk.status_code == 200
