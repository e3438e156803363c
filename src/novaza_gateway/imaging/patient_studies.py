"""A patient's studies (``GET /med/patient/{id}/studies``, add-on ``emr``), newest first.

The key is the gateway's patient id or a patient identifier; it resolves through the shared
``clinical`` package to the surviving patient (ADT A40), whose identifiers — its own and those
merged into it — are the DICOM Patient IDs its studies carry. An embedded tenant's studies
come from its index; a proxy-mode tenant's from its upstream PACS (a QIDO per identifier,
``proxy_queries.studies_of_patient``). QC statuses come from the gateway's ``imaging_qc``
either way. Every read is audited; services never commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import repository as clinical
from novaza_gateway.core import audit
from novaza_gateway.core.pagination import Page, decode_cursor, encode_cursor
from novaza_gateway.imaging import proxy_queries, worklist
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging.errors import PatientNotFound
from novaza_gateway.imaging.models import ImagingStudy
from novaza_gateway.imaging.proxy_queries import UpstreamPatientStudy
from novaza_gateway.imaging.qc import PENDING
from novaza_gateway.imaging.schemas import PatientStudyOut

if TYPE_CHECKING:
    from novaza_gateway.imaging.proxy import ImagingProxy
    from novaza_gateway.imaging.upstream import Upstream


async def patient_studies(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    patient_key: str,
    *,
    cursor: str | None,
    limit: int,
    proxy: ImagingProxy | None = None,
) -> Page[PatientStudyOut]:
    """A patient's studies, newest first (study date, time, then a tie-breaker), in pages."""
    upstream = await proxy_queries.upstream_of(proxy, tenant_id)
    patient_ids = await worklist.resolve_patient_ids(session, tenant_id, patient_key)
    dicom_ids: list[str] = []
    if patient_ids:
        identifiers = await clinical.identifiers_of_patients(session, tenant_id, patient_ids)
        dicom_ids = sorted({ident.value for ident in identifiers})
    after = _position(cursor) if cursor else None
    extra: dict[str, object] = {}
    if upstream is not None:
        assert proxy is not None
        asked = dicom_ids if patient_ids else [patient_key]
        page, next_cursor = await _upstream_page(
            session, proxy, upstream, tenant_id, asked, after, limit
        )
        if not patient_ids and not page and after is None:
            raise PatientNotFound()  # neither registered nor known upstream
        extra["mode"] = "proxy"
    else:
        if not patient_ids:
            if not await repo.has_patient(session, tenant_id, patient_key):
                raise PatientNotFound()
            dicom_ids = [patient_key]  # a Patient ID only the archive knows
        page, next_cursor = await _index_page(session, tenant_id, dicom_ids, after, limit)
    audit.record(
        session,
        actor,
        "imaging.patient_studies",
        "patient",
        patient_key,
        tenant_id=tenant_id,
        patient_id=patient_ids[0] if len(patient_ids) == 1 else patient_key,
        after={
            "results": len(page),
            "studies": [s.study_instance_uid for s in page],
            **extra,
        },
    )
    return Page[PatientStudyOut](data=page, next_cursor=next_cursor)


def _position(cursor: str) -> tuple[str, str, str]:
    day, time, key = decode_cursor(cursor, 3)
    return str(day), str(time), str(key)


async def _index_page(
    session: AsyncSession,
    tenant_id: str,
    dicom_ids: list[str],
    after: tuple[str, str, str] | None,
    limit: int,
) -> tuple[list[PatientStudyOut], str | None]:
    studies = await repo.studies_of_patients(
        session, tenant_id, dicom_ids, after=after, limit=limit + 1
    )
    page = list(studies[:limit])
    results = await repo.qc_results(session, tenant_id, [s.study_uid for s in page])
    next_cursor = None
    if len(studies) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last.study_date, last.study_time, last.id)
    return [_indexed_out(s, results.get(s.study_uid, PENDING)) for s in page], next_cursor


async def _upstream_page(
    session: AsyncSession,
    proxy: ImagingProxy,
    upstream: Upstream,
    tenant_id: str,
    dicom_ids: list[str],
    after: tuple[str, str, str] | None,
    limit: int,
) -> tuple[list[PatientStudyOut], str | None]:
    """QIDO has no order: the patient's studies are listed whole (per identifier, in
    upstream pages), sorted newest first here, and cut at the cursor (date, time, UID)."""
    found = await proxy_queries.studies_of_patient(proxy, upstream, dicom_ids)
    ordered = sorted(found, key=_sort_key, reverse=True)
    if after is not None:
        ordered = [s for s in ordered if _sort_key(s) < after]
    page = ordered[:limit]
    results = await repo.qc_results(session, tenant_id, [s.study_uid for s in page])
    next_cursor = None
    if len(ordered) > limit:
        next_cursor = encode_cursor(*_sort_key(page[-1]))
    return [_upstream_out(s, results.get(s.study_uid, PENDING)) for s in page], next_cursor


def _sort_key(study: UpstreamPatientStudy) -> tuple[str, str, str]:
    return study.study_date, study.study_time, study.study_uid


def _date(day: str) -> str | None:
    return f"{day[:4]}-{day[4:6]}-{day[6:8]}" if len(day) == 8 else None


def _time(time: str) -> str | None:
    return f"{time[:2]}:{time[2:4]}:{time[4:6]}" if len(time) >= 6 else None


def _indexed_out(study: ImagingStudy, qc_status: str) -> PatientStudyOut:
    return PatientStudyOut(
        study_instance_uid=study.study_uid,
        patient_id=study.patient_id,
        accession_number=study.accession_number,
        study_date=_date(study.study_date),
        study_time=_time(study.study_time),
        description=study.study_description,
        modalities=[m for m in study.modalities.split("|") if m],
        number_of_series=study.num_series,
        number_of_instances=study.num_instances,
        qc_status=qc_status,
    )


def _upstream_out(study: UpstreamPatientStudy, qc_status: str) -> PatientStudyOut:
    return PatientStudyOut(
        study_instance_uid=study.study_uid,
        patient_id=study.patient_id,
        accession_number=study.accession_number,
        study_date=_date(study.study_date),
        study_time=_time(study.study_time),
        description=study.description,
        modalities=study.modalities,
        number_of_series=study.number_of_series,
        number_of_instances=study.number_of_instances,
        qc_status=qc_status,
    )
