"""WADO-RS reads from the embedded archive. Audited in the request's transaction; the bytes
then stream from the store after the session is gone (the generators touch only storage).
Every file an answer needs is checked before the answer starts: a missing one is a clean
``ARCHIVE_FILE_MISSING`` envelope, never a 200 cut after its first part header.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core import audit
from novaza_gateway.imaging import patient_merges
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging.archive.storage import ArchiveStorage, missing_file
from novaza_gateway.imaging.dicomweb import wado
from novaza_gateway.imaging.dicomweb.attributes import JsonDataset, first_value, tags
from novaza_gateway.imaging.dicomweb.multipart import PART_SEPARATOR, closing, part_header
from novaza_gateway.imaging.errors import (
    FramesUnavailable,
    InstanceNotFound,
    SeriesNotFound,
    StudyNotFound,
)
from novaza_gateway.imaging.models import ImagingInstance, ImagingSeries, ImagingStudy

(BITS_ALLOCATED,) = tags("BitsAllocated")
METADATA_READS = 8  # instances whose headers are read at once (object stores: latency-bound)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Target:
    """What a WADO path names: a study, optionally narrowed to a series or one instance."""

    study: str
    series: str | None = None
    instance: str | None = None

    def level(self) -> str:
        return "instance" if self.instance else "series" if self.series else "study"


@dataclass(frozen=True, slots=True)
class Selection:
    study: ImagingStudy
    items: Sequence[tuple[ImagingSeries, ImagingInstance]]


async def select(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, target: Target, action: str
) -> Selection:
    """The instances a path names (404 outside the tenant), with the read audited."""
    study = await repo.get_study(session, tenant_id, target.study)
    if study is None:
        raise StudyNotFound()
    series_pk = None
    if target.series is not None:
        found = await repo.get_series(session, tenant_id, target.study, target.series)
        if found is None:
            raise SeriesNotFound()
        series_pk = found[1].id
    items = await repo.list_instances(
        session, tenant_id, study_pk=study.id, series_pk=series_pk, sop_uid=target.instance
    )
    if target.instance is not None and not items:
        raise InstanceNotFound()
    audit.record(
        session,
        actor,
        f"imaging.{action}",
        target.level(),
        target.instance or target.series or target.study,
        tenant_id=tenant_id,
        patient_id=study.patient_id or None,
        after={"study": study.study_uid, "instances": len(items)},
    )
    return Selection(study, items)


@dataclass(frozen=True, slots=True)
class FileRange:
    """Bytes of an archived file: ``size`` of them from ``offset``."""

    key: str
    offset: int
    size: int


class MultipartBody:
    """A ``multipart/related`` answer: its parts (bytes in hand, or archive file ranges
    streamed chunk by chunk) framed with ``boundary``.

    ``length`` is the exact size of the body, known before the first byte from the index's
    file sizes, so the answer carries ``Content-Length`` rather than chunked encoding (no
    per-chunk framing, and the client sees a short file as a truncated answer).
    """

    def __init__(
        self,
        storage: ArchiveStorage | None,  # None when every part is bytes in hand
        boundary: str,
        parts: Sequence[tuple[str, bytes | FileRange]],
    ) -> None:
        self.storage = storage
        self.parts = parts
        self.heads = [
            (PART_SEPARATOR if index else b"") + part_header(boundary, media)
            for index, (media, _) in enumerate(parts)
        ]
        self.tail = closing(boundary)
        self.length = sum(map(len, self.heads)) + len(self.tail)
        for _, content in parts:
            self.length += content.size if isinstance(content, FileRange) else len(content)

    async def check_files(self) -> None:
        """Before the answer starts: every file range this body streams is in the store."""
        needed: dict[str, int] = {}
        for _, content in self.parts:
            if isinstance(content, FileRange):
                end = content.offset + content.size
                needed[content.key] = max(end, needed.get(content.key, 0))
        if needed:
            assert self.storage is not None
            missing = await self.storage.missing(needed)
            if missing:
                raise missing_file(missing[0], count=len(missing))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for head, (_, content) in zip(self.heads, self.parts, strict=True):
            if isinstance(content, bytes):
                yield head + content
                continue
            assert self.storage is not None
            yield head
            async for chunk in self.storage.read(content.key, content.offset, content.size):
                yield chunk
        yield self.tail

    def headers(self) -> dict[str, str]:
        return {"content-length": str(self.length)}


def stream_instances(
    storage: ArchiveStorage, items: Sequence[ImagingInstance], boundary: str
) -> MultipartBody:
    """``multipart/related; type="application/dicom"``: each file as stored."""
    parts: list[tuple[str, bytes | FileRange]] = [
        (
            f"application/dicom; transfer-syntax={instance.transfer_syntax_uid}",
            FileRange(instance.storage_key, 0, instance.size_bytes),
        )
        for instance in items
    ]
    return MultipartBody(storage, boundary, parts)


def stream_frames(
    storage: ArchiveStorage, instance: ImagingInstance, frames: list[int], boundary: str
) -> MultipartBody:
    """Native frames as ``application/octet-stream`` parts, read at their file offsets."""
    assert instance.pixel_offset is not None and instance.frame_bytes is not None
    media = f"application/octet-stream; transfer-syntax={instance.transfer_syntax_uid}"
    size = instance.frame_bytes
    parts: list[tuple[str, bytes | FileRange]] = [
        (media, FileRange(instance.storage_key, instance.pixel_offset + (n - 1) * size, size))
        for n in frames
    ]
    return MultipartBody(storage, boundary, parts)


def is_native(instance: ImagingInstance) -> bool:
    return instance.pixel_offset is not None and instance.frame_bytes is not None


async def compressed_frames(
    storage: ArchiveStorage, instance: ImagingInstance, numbers: list[int]
) -> list[bytes]:
    """Frames of encapsulated pixel data, as stored (the compressed bitstreams)."""
    if instance.transfer_syntax_uid not in wado.BITSTREAM_TYPES:
        raise FramesUnavailable()
    return await _read(
        storage, instance, wado.encapsulated_frames, numbers, instance.number_of_frames
    )


def stream_parts(parts: list[bytes], media: str, boundary: str) -> MultipartBody:
    return MultipartBody(None, boundary, [(media, data) for data in parts])


async def metadata(
    session: AsyncSession,
    tenant_id: str,
    storage: ArchiveStorage,
    selection: Selection,
    base: str,
) -> list[JsonDataset]:
    """Each instance's DICOM JSON (from its file), with the Patient ID coerced to the
    survivor's when the study's patient was merged (ADT A40, ``patient_merges``)."""
    study_uid = selection.study.study_uid
    limiter = anyio.CapacityLimiter(METADATA_READS)
    reads = [
        _read(
            storage,
            instance,
            wado.instance_metadata,
            f"{base}/med/wado/studies/{study_uid}/series/{series.series_uid}"
            f"/instances/{instance.sop_instance_uid}",
            _pixel_vr(instance),
            limiter=limiter,
        )
        for series, instance in selection.items
    ]
    found = list(await asyncio.gather(*reads))
    stored = selection.study.patient_id
    coerced = await patient_merges.MergeLookup(session, tenant_id).coercions({stored})
    patient_merges.coerce(found, coerced)
    return found


NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def _pixel_vr(instance: ImagingInstance) -> str | None:
    """Pixel Data's VR from the index (no second read of the file): OW for native 16-bit."""
    if not instance.rows:
        return None
    bits = first_value(instance.attributes or {}, BITS_ALLOCATED)
    return "OW" if instance.transfer_syntax_uid in NATIVE and bits and int(bits) > 8 else "OB"


async def bulk(storage: ArchiveStorage, instance: ImagingInstance, path: str) -> bytes:
    return await _read(storage, instance, wado.bulk_value, path)


async def rendered(
    storage: ArchiveStorage, instance: ImagingInstance, frame: int, media: str, size: int | None
) -> bytes:
    if not 1 <= frame <= instance.number_of_frames:
        wado.parse_frames(str(frame), instance.number_of_frames)
    return await _read(storage, instance, wado.render, frame, media, size)


async def _read(
    storage: ArchiveStorage,
    instance: ImagingInstance,
    work: Callable[..., T],
    *args: object,
    limiter: anyio.CapacityLimiter | None = None,
) -> T:
    """``work(file, *args)`` in a worker thread, on the instance's file opened from the
    store (pydicom reads it there: a path's seeks, or ranged reads of an object)."""

    def run() -> T:
        with storage.open(instance.storage_key, instance.size_bytes) as file:
            return work(file, *args)

    return await anyio.to_thread.run_sync(run, limiter=limiter)
