"""Storing instances: STOW-RS bodies and files from disk, through one path.

Per file: stage (streamed to a temp file, hashed), inspect (header only, in a thread),
commit the file to the archive store (a few at once, before any write to the database: no
transaction is open while files are fsynced or uploaded), then index it inside a savepoint.
A part that fails is
reported with its reason and rolls back only its own savepoint; the request's transaction
(committed by the session dependency) holds every stored instance or none of them. A new
study's first instance also starts the scheduled worklist item it fulfils, in that savepoint.
Re-storing an instance is idempotent: the same bytes answer success without a second
write; different bytes under a known SOP Instance UID are refused as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import orders
from novaza_gateway.core import audit
from novaza_gateway.core.db import after_commit
from novaza_gateway.core.metering import STORED_INSTANCES, UsageRecorder
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging.archive.staging import StagedFile
from novaza_gateway.imaging.archive.storage import ArchiveStorage
from novaza_gateway.imaging.dicomweb.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)
from novaza_gateway.imaging.dicomweb.stow import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
    PROCESSING_FAILURE,
    Failed,
    InstanceInfo,
    Stored,
    Unstorable,
    inspect,
)
from novaza_gateway.imaging.errors import MalformedMultipart, NotMultipart

log = logging.getLogger("novaza.imaging.ingest")

DICOM = "application/dicom"
# Each unique-key conflict means a concurrent request committed the row we wanted: retrying
# finds it. Racing stores into one new study and series converge within a few attempts.
STORE_ATTEMPTS = 5
COMMITS_AT_ONCE = 4  # files going into the store at once: S3 uploads overlap


@dataclass(slots=True)
class IngestReport:
    stored: list[Stored] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    studies: dict[str, str] = field(default_factory=dict)  # study UID -> patient id
    written: int = 0  # instances new to the archive (the rest were already there)


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/med/wado/studies/{study}/series/{series}/instances/{sop}"


def storage_key(tenant_id: str, info: InstanceInfo, sha256: str) -> str:
    # UIDs are digits and dots (checked in inspect); the hash keeps two different files
    # claiming one SOP Instance UID from ever overwriting each other on disk.
    return (
        f"{tenant_id}/{info.study_uid}/{info.series_uid}/{info.sop_instance_uid}.{sha256[:16]}.dcm"
    )


@dataclass(slots=True)
class Received:
    """A staged file whose header has been read: ready to commit, then to index."""

    staged: StagedFile
    info: InstanceInfo
    key: str = ""  # its key in the archive store, once it is there


async def receive(
    staged: StagedFile, report: IngestReport, expected_study: str | None = None
) -> Received | None:
    """fsync and inspect a staged file (in a thread); failures go to the report."""
    try:
        await anyio.to_thread.run_sync(staged.close)
        info = await anyio.to_thread.run_sync(inspect, staged.path)
    except Unstorable as exc:
        staged.discard()
        log.info("part not stored", extra={"reason": str(exc)})
        report.failed.append(Failed("", "", exc.reason))
        return None
    if expected_study is not None and info.study_uid != expected_study:
        staged.discard()
        report.failed.append(Failed(info.sop_class_uid, info.sop_instance_uid, DOES_NOT_MATCH))
        return None
    return Received(staged, info)


async def index_all(
    session: AsyncSession,
    storage: ArchiveStorage,
    actor: audit.Actor,
    tenant_id: str,
    received: list[Received],
    *,
    base_url: str,
    report: IngestReport,
) -> None:
    """Index received files in one short burst, after the whole body has arrived and the
    files are in the store: no transaction stays open while a slow client uploads, nor while
    the files go into the store."""
    if not received:
        return
    await commit_files(storage, tenant_id, received)
    await repo.claim_write(session, tenant_id)
    for item in received:
        try:
            await _index_one(session, actor, tenant_id, item, base_url=base_url, report=report)
        finally:
            if item.staged.path.exists():
                item.staged.discard()


async def commit_files(storage: ArchiveStorage, tenant_id: str, received: list[Received]) -> None:
    """Each file into the store, ``COMMITS_AT_ONCE`` at a time (uploads overlap). A key the
    store already has holds the same bytes (keys carry the content hash): not written again,
    so re-storing an instance writes nothing. Every commit ends before the first error is
    raised: none is left reading a staged file the caller then removes."""

    async def commit(item: Received) -> None:
        key = storage_key(tenant_id, item.info, item.staged.sha256)
        async with limiter:
            if await storage.exists(key):
                item.staged.discard()
            else:
                await storage.commit(item.staged, key)
        item.key = key

    limiter = asyncio.Semaphore(COMMITS_AT_ONCE)
    outcomes = await asyncio.gather(*map(commit, received), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _index_one(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    item: Received,
    *,
    base_url: str,
    report: IngestReport,
) -> None:
    info = item.info
    outcome = PROCESSING_FAILURE
    for attempt in range(STORE_ATTEMPTS):
        try:
            async with session.begin_nested():
                outcome = await _index(session, actor, tenant_id, item, report)
            break
        except IntegrityError:  # a concurrent store of the same study, series or instance
            log.info("store raced; retrying", extra={"attempt": attempt})
    if outcome:
        report.failed.append(Failed(info.sop_class_uid, info.sop_instance_uid, outcome))
        return
    url = instance_url(base_url, info.study_uid, info.series_uid, info.sop_instance_uid)
    report.stored.append(Stored(info.sop_class_uid, info.sop_instance_uid, url))
    report.studies.setdefault(info.study_uid, info.patient_id)


async def _index(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    item: Received,
    report: IngestReport,
) -> int:
    """0 when indexed (or already there, byte-identical); else a failure reason. A file
    refused here (``0x0111``, ``0xA900``) stays in the store unreferenced, as a crash
    between commit and index would leave it."""
    info, staged = item.info, item.staged
    existing = await repo.get_instance_by_uid(session, tenant_id, info.sop_instance_uid)
    if existing is not None:
        return 0 if existing.sha256 == staged.sha256 else DUPLICATE_SOP_INSTANCE
    known = await repo.get_study(session, tenant_id, info.study_uid)
    study = known if known is not None else await repo.get_or_create_study(session, tenant_id, info)
    series, new_series = await repo.get_or_create_series(session, tenant_id, study, info)
    if series.study_pk != study.id:
        return DOES_NOT_MATCH  # the series UID is already filed under another study
    if not item.key:
        return PROCESSING_FAILURE  # not in the store: never indexed
    await repo.add_instance(
        session,
        tenant_id,
        study,
        series,
        new_series,
        info,
        size=staged.size,
        sha256=staged.sha256,
        storage_key=item.key,
    )
    report.written += 1
    if known is None:
        await _start_worklist_item(session, actor, tenant_id, info)
    return 0


async def _start_worklist_item(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, info: InstanceInfo
) -> None:
    """The scheduled item this new study fulfils goes in progress; whatever goes wrong
    there rolls back only its own savepoint and never fails the store."""
    try:
        async with session.begin_nested():
            await orders.start_on_receipt(
                session, actor, tenant_id, info.study_uid, info.accession_number
            )
    except SQLAlchemyError as exc:  # its text carries the bound values: accession, study UID
        log.warning("worklist item not started", extra={"error": type(exc).__name__})


async def store_stream(
    session: AsyncSession,
    storage: ArchiveStorage,
    actor: audit.Actor,
    tenant_id: str,
    *,
    content_type: str,
    body: AsyncIterator[bytes],
    base_url: str,
    study_uid: str | None = None,
) -> IngestReport:
    """A STOW-RS request body, parsed as it streams in: each part goes straight to disk."""
    media_type, params = parse_content_type(content_type)
    if media_type != "multipart/related" or not params.get("boundary"):
        raise NotMultipart()
    root_type = params.get("type", DICOM).lower()
    if root_type != DICOM:
        raise NotMultipart(f"Only type={DICOM} parts are accepted, not {root_type}.")
    report = IngestReport()
    try:
        reader = MultipartReader(params["boundary"])
    except MultipartError as exc:
        raise MalformedMultipart(str(exc)) from None
    staged: StagedFile | None = None
    received: list[Received] = []
    try:
        async for chunk in body:
            for event in reader.feed(chunk):
                if isinstance(event, PartStart):
                    part_type = (event.content_type or DICOM).split(";")[0].strip().lower()
                    if part_type == DICOM:
                        staged = storage.stage()
                    else:
                        report.failed.append(Failed("", "", CANNOT_UNDERSTAND))
                elif isinstance(event, PartData) and staged is not None:
                    staged.write(event.data)
                elif isinstance(event, PartEnd) and staged is not None:
                    current, staged = staged, None
                    item = await receive(current, report, study_uid)
                    if item is not None:
                        received.append(item)
        reader.finish()
        await index_all(
            session, storage, actor, tenant_id, received, base_url=base_url, report=report
        )
    except MultipartError as exc:
        raise MalformedMultipart(str(exc)) from None
    finally:
        for leftover in [staged, *(r.staged for r in received)]:
            if leftover is not None and leftover.path.exists():
                leftover.discard()
    audit_stores(session, actor, tenant_id, report)
    return report


async def import_paths(
    session: AsyncSession,
    storage: ArchiveStorage,
    actor: audit.Actor,
    tenant_id: str,
    paths: list[Path],
    *,
    base_url: str,
) -> IngestReport:
    """``novaza dicom import``: files, and folders walked recursively."""
    report = IngestReport()
    for batch in _batches(_walk(paths), IMPORT_BATCH):
        received: list[Received] = []
        for path in batch:
            staged = storage.stage()
            try:
                async with await anyio.open_file(path, "rb") as source:
                    while chunk := await source.read(256 * 1024):
                        staged.write(chunk)
            except OSError:
                staged.discard()
                report.failed.append(Failed("", "", CANNOT_UNDERSTAND))
                continue
            item = await receive(staged, report)
            if item is not None:
                received.append(item)
        await index_all(
            session, storage, actor, tenant_id, received, base_url=base_url, report=report
        )
    audit_stores(session, actor, tenant_id, report)
    return report


IMPORT_BATCH = 200


def _batches(paths: list[Path], size: int) -> list[list[Path]]:
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def _walk(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file())
        else:
            found.append(path)
    return found


def audit_stores(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, report: IngestReport
) -> None:
    for study_uid, patient_id in report.studies.items():
        audit.record(
            session,
            actor,
            "imaging.store",
            "study",
            study_uid,
            tenant_id=tenant_id,
            patient_id=patient_id or None,
            after={"stored": len(report.stored), "failed": len(report.failed)},
        )


def meter_stored(
    session: AsyncSession, usage: UsageRecorder, tenant_id: str, report: IngestReport
) -> None:
    """Bill each stored instance once its row is committed; a re-stored SOP Instance UID is
    the same event (keyed by it), so retries and re-sends are not counted twice."""
    uids = [stored.sop_instance_uid for stored in report.stored]

    async def record() -> None:
        for uid in uids:
            usage.record(tenant_id, STORED_INSTANCES, source="stow", event_id=uid)

    after_commit(session, record)
