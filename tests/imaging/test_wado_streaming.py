"""How WADO-RS streams: exact Content-Length, chunk boundaries, early stops, short files.

Over a real uvicorn server (the ``server`` fixture) where the wire matters; the archive's
reader directly for the ranges it serves.
"""

from __future__ import annotations

import asyncio
import gc
import io
import warnings
from pathlib import Path

import httpx
import pydicom
import pytest

from novaza_gateway.imaging.archive import storage as storage_module
from novaza_gateway.imaging.archive.filesystem import FileSystemStorage
from novaza_gateway.imaging.archive.storage import ArchiveFileTruncated
from tests.imaging.conftest import STOW, tenant
from tests.imaging.dicom import make_instance, multipart, split_multipart, uid

WADO = "/med/wado/studies"


def stow(url: str, auth: dict[str, str], parts: list[bytes]) -> None:
    body, ctype = multipart(parts)
    response = httpx.post(
        f"{url}{STOW}", content=body, headers={**auth, "Content-Type": ctype}, timeout=60
    )
    assert response.status_code == 200, response.text


def test_retrieve_announces_its_length_and_streams_files_across_chunks(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, data_dir = server
    monkeypatch.setattr(storage_module, "CHUNK_BYTES", 64 * 1024)  # many chunks per file
    auth = {"Authorization": f"Bearer {tenant(url, data_dir, 'stream-a')}"}
    study, series = uid(), uid()
    files = [
        make_instance(study=study, series=series, rows=300, columns=257, instance_number=i)
        for i in (1, 2, 3)
    ]
    stow(url, auth, files)

    with httpx.stream("GET", f"{url}{WADO}/{study}", headers=auth, timeout=60) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert "transfer-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(raw)
    parts = split_multipart(raw, response.headers["content-type"])
    assert sorted(data for _, data in parts) == sorted(files)

    sop = pydicom.dcmread(io.BytesIO(files[1]), stop_before_pixels=True).SOPInstanceUID
    frames = httpx.get(
        f"{url}{WADO}/{study}/series/{series}/instances/{sop}/frames/1", headers=auth
    )
    assert frames.status_code == 200
    assert int(frames.headers["content-length"]) == len(frames.content)
    ((_, pixels),) = split_multipart(frames.content, frames.headers["content-type"])
    assert pixels == pydicom.dcmread(io.BytesIO(files[1])).PixelData


def test_an_archive_file_shorter_than_indexed_is_refused_before_the_answer_starts(
    server: tuple[str, Path],
) -> None:
    """The length would be announced: a short file is found before the first byte and
    answered with an envelope, never a 200 that breaks or quietly carries less."""
    url, data_dir = server
    auth = {"Authorization": f"Bearer {tenant(url, data_dir, 'stream-b')}"}
    study = uid()
    stow(url, auth, [make_instance(study=study, rows=200, columns=200)])
    (archived,) = (data_dir / "imaging").rglob("*.dcm")
    archived.write_bytes(archived.read_bytes()[:-1000])

    response = httpx.get(f"{url}{WADO}/{study}", headers=auth, timeout=30)
    assert response.status_code == 500
    assert response.json()["code"] == "ARCHIVE_FILE_MISSING"
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # the server goes on


async def test_reader_serves_ranges_and_stops_early_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "CHUNK_BYTES", 1000)
    archive = FileSystemStorage(tmp_path)
    data = bytes(range(256)) * 40  # 10,240 bytes: ten full chunks and a short one
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f.dcm").write_bytes(data)

    async def read(offset: int = 0, length: int | None = None) -> list[bytes]:
        return [chunk async for chunk in archive.read("t/f.dcm", offset, length)]

    whole = await read()
    assert b"".join(whole) == data and [len(c) for c in whole] == [1000] * 10 + [240]
    assert b"".join(await read(1500, 2600)) == data[1500:4100]
    assert b"".join(await read(10_000)) == data[10_000:]
    assert await read(0, 0) == []
    with pytest.raises(ArchiveFileTruncated):
        await read(10_000, 500)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = archive.read("t/f.dcm")
        assert len(await anext(stream)) == 1000  # the next chunk is now being read ahead
        await stream.aclose()
        await asyncio.sleep(0.05)
        gc.collect()
