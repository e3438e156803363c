"""The archive store contract, the same on every store: the data dir, a shared ``file://``
directory and ``s3://`` (moto's S3 server): stage, commit, exists, ranged reads, files
shorter than indexed or missing, seekable opens for pydicom, memory flat on large files."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import stat
import tracemalloc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from novaza_gateway.config import Settings
from novaza_gateway.imaging.archive import s3 as s3_module
from novaza_gateway.imaging.archive import storage as storage_module
from novaza_gateway.imaging.archive.location import open_archive
from novaza_gateway.imaging.archive.s3 import S3Storage
from novaza_gateway.imaging.archive.storage import ArchiveFileTruncated, ArchiveStorage
from novaza_gateway.imaging.errors import ArchiveFileMissing
from tests.imaging.archive_stores import Store, moto_s3, store  # noqa: F401 (fixtures)

KEY = "tenant-1/1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"


@pytest.fixture
async def archive(store: Store, tmp_path: Path) -> AsyncIterator[ArchiveStorage]:  # noqa: F811
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, **store.settings)
    opened = open_archive(settings.imaging.archive, data_dir)
    assert opened.kind == ("s3" if store.kind == "s3" else "filesystem")
    try:
        yield opened
    finally:
        await opened.aclose()


async def put(archive: ArchiveStorage, key: str, data: bytes, pieces: int = 3) -> None:
    staged = archive.stage()
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        staged.write(data[start : start + step])
    assert staged.sha256 == hashlib.sha256(data).hexdigest() and staged.size == len(data)
    await archive.commit(staged, key)
    assert not staged.path.exists()  # committed: the staged copy is gone


async def chunks(archive: ArchiveStorage, key: str, *args: int | None) -> list[bytes]:
    return [chunk async for chunk in archive.read(key, *args)]


async def test_commit_then_read_whole_and_ranges(
    archive: ArchiveStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "CHUNK_BYTES", 1000)
    data = os.urandom(10_240)
    assert not await archive.exists(KEY)
    await put(archive, KEY, data)
    assert await archive.exists(KEY)
    assert not await archive.exists(KEY.replace("1.2.3.4.5", "9.9"))

    whole = await chunks(archive, KEY)
    assert b"".join(whole) == data and max(map(len, whole)) <= 1000
    assert b"".join(await chunks(archive, KEY, 1500, 2600)) == data[1500:4100]
    assert b"".join(await chunks(archive, KEY, 10_000)) == data[10_000:]
    assert b"".join(await chunks(archive, KEY, 10_239, 1)) == data[-1:]
    assert await chunks(archive, KEY, 0, 0) == []


async def test_a_reader_stopped_early_leaves_nothing_behind(
    archive: ArchiveStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "CHUNK_BYTES", 1000)
    await put(archive, KEY, os.urandom(10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = archive.read(KEY)
        assert len(await anext(stream)) == 1000  # the next chunk is now being read ahead
        await stream.aclose()
        await asyncio.sleep(0.1)
        gc.collect()
    assert b"".join(await chunks(archive, KEY, 0, 10)) != b""  # the store still serves


async def test_a_file_shorter_than_asked_for_raises_truncated(archive: ArchiveStorage) -> None:
    data = os.urandom(5000)
    await put(archive, KEY, data)
    with pytest.raises(ArchiveFileTruncated):
        await chunks(archive, KEY, 4000, 2000)
    with pytest.raises(ArchiveFileTruncated):
        await chunks(archive, KEY, 6000, 10)


async def test_missing_names_absent_and_short_files_without_reading_them(
    archive: ArchiveStorage,
) -> None:
    await put(archive, KEY, b"x" * 300)
    other = KEY.replace("1.2.3.4.5", "1.2.3.4.6")
    assert await archive.missing({}) == []
    assert await archive.missing({KEY: 300}) == []
    assert await archive.missing({KEY: 301, other: 1}) == [KEY, other]


async def test_reading_a_missing_file_is_archive_file_missing(
    archive: ArchiveStorage, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ArchiveFileMissing):
        await asyncio.to_thread(archive.open, KEY, 100)
    with pytest.raises(ArchiveFileMissing):
        await chunks(archive, KEY, 0, 100)
    logged = [r for r in caplog.records if r.getMessage() == "archive file missing"]
    assert logged and all(getattr(r, "sha256_prefix", "") == "0123456789abcdef" for r in logged)
    assert not any("1.2.3" in r.getMessage() or "1.2.3" in str(r.__dict__) for r in logged)


async def test_open_is_a_seekable_reader_for_pydicom(
    archive: ArchiveStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "OPEN_BLOCK_BYTES", 4096)
    data = os.urandom(100_000)
    await put(archive, KEY, data)

    def scan() -> list[bytes]:
        with archive.open(KEY, len(data)) as file:
            first = file.read(132)
            file.seek(50_000)
            middle = file.read(70_000)  # past one block, to the end
            file.seek(-10, os.SEEK_END)
            last = file.read()
            return [first, middle, last, file.read(5)]

    assert await asyncio.to_thread(scan) == [data[:132], data[50_000:], data[-10:], b""]


async def test_large_files_stream_with_flat_memory(
    archive: ArchiveStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 MiB through commit (multipart upload on S3, 8 MiB parts) and read back in 1 MiB
    chunks: memory never holds more than a few chunks."""
    monkeypatch.setattr(s3_module, "MULTIPART_BYTES", 8 * 1024 * 1024)
    block = os.urandom(1024 * 1024)
    staged = archive.stage()
    for _ in range(24):
        staged.write(block)
    tracemalloc.start()
    try:
        await archive.commit(staged, KEY)
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        size = 0
        digest = hashlib.sha256()
        async for chunk in archive.read(KEY):
            size += len(chunk)
            digest.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 24 * 1024 * 1024
    if isinstance(archive, S3Storage):  # went up as a multipart upload of three parts
        head = archive.client.head_object(Bucket=archive.bucket, Key=archive.object_key(KEY))
        assert head["ETag"].endswith('-3"'), head["ETag"]
    assert digest.hexdigest() == hashlib.sha256(block * 24).hexdigest()
    assert read_peak < 6 * 1024 * 1024, read_peak
    assert upload_peak < 24 * 1024 * 1024, upload_peak  # parts, never the whole file


async def test_directory_stores_keep_files_owner_only(
    archive: ArchiveStorage,
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    if store.kind == "s3":
        pytest.skip("object permissions are the bucket's policy")
    await put(archive, KEY, b"DICM")
    root = store.root or tmp_path / "data" / "imaging"
    archived = root / KEY
    assert stat.S_IMODE(archived.stat().st_mode) == 0o600
    for folder in [archived.parent, archived.parent.parent, root / "tenant-1"]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    staged = archive.stage()
    assert stat.S_IMODE(staged.path.stat().st_mode) == 0o600
    staged.discard()
