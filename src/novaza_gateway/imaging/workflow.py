"""The Scheduled Workflow endpoints (IHE SWF): the worklist, QC confirmation, a patient's
studies. Every read of patient data is audited; services never commit."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import orders
from novaza_gateway.clinical import repository as clinical
from novaza_gateway.clinical.errors import InvalidTransition
from novaza_gateway.clinical.models import WorklistItem
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.pagination import Page, decode_cursor, encode_cursor
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging import worklist
from novaza_gateway.imaging.errors import PatientNotFound, QcConflict, StudyNotFound
from novaza_gateway.imaging.models import ImagingStudy
from novaza_gateway.imaging.schemas import (
    PatientStudyOut,
    QcConfirmOut,
    QcConfirmRequest,
    QcOut,
    RequestedProcedureOut,
    ScheduledProcedureStepOut,
    WorklistItemOut,
    WorklistLinkOut,
    WorklistPatientOut,
)
from novaza_gateway.imaging.worklist import WorklistEntry, WorklistFilter

WORKLIST_PATH = "/med/imaging/worklist"
# QC passed: the procedure step is done. QC failed: acquired, to be repeated: it stays open.
QC_STEP_STATUS = {"passed": orders.COMPLETED, "failed": orders.IN_PROGRESS}


# ----------------------------------------------------------------------------- worklist


async def worklist_page(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    wanted: WorklistFilter,
    *,
    cursor: str | None,
    limit: int,
) -> Page[WorklistItemOut]:
    after = _worklist_position(cursor) if cursor else None
    found = await worklist.find(session, tenant_id, wanted, after=after, limit=limit + 1)
    entries = found[:limit]  # the one past the page only says whether another page exists
    worklist.record_read(session, actor, tenant_id, entries, channel="rest")
    next_cursor = None
    if len(found) > limit:
        last = entries[-1]
        assert last.scheduled_start is not None  # set when the order is placed
        next_cursor = encode_cursor(last.scheduled_start.isoformat(), last.id)
    return Page[WorklistItemOut](data=[item_out(e) for e in entries], next_cursor=next_cursor)


def _worklist_position(cursor: str) -> tuple[datetime, str]:
    start, item_id = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(str(start)), str(item_id)
    except ValueError:
        raise ValidationFailed.field("cursor", "not a cursor this API issued") from None


def item_out(entry: WorklistEntry) -> WorklistItemOut:
    patient = entry.patient
    return WorklistItemOut(
        id=entry.id,
        accession_number=entry.accession_number,
        study_instance_uid=entry.study_instance_uid,
        status=entry.status,
        patient=WorklistPatientOut(
            id=patient.id,
            patient_id=patient.identifier,
            issuer_of_patient_id=patient.issuer,
            name=patient.dicom_name,
            birth_date=patient.birth_date.isoformat() if patient.birth_date else None,
            sex=patient.sex,
        ),
        requested_procedure=RequestedProcedureOut(
            id=entry.requested_procedure_id,
            code=entry.requested_procedure_code,
            coding_scheme=entry.requested_procedure_scheme,
            description=entry.requested_procedure_description,
        ),
        scheduled_procedure_step=ScheduledProcedureStepOut(
            id=entry.scheduled_procedure_step_id,
            modality=entry.modality,
            station_ae_title=entry.station_ae_title,
            start_date_time=entry.scheduled_start,
            description=entry.description,
        ),
        placer_order_number=entry.placer_order_number,
        filler_order_number=entry.filler_order_number,
        ordering_provider=entry.ordering_provider,
        reason=entry.reason,
    )


def worklist_link(item: WorklistItem) -> WorklistLinkOut:
    query = urlencode(
        {"accessionNumber": item.accession_number, "status": ",".join(orders.WORKLIST_STATUSES)}
    )
    return WorklistLinkOut(
        id=item.id,
        accession_number=item.accession_number,
        status=item.status,
        scheduled_start=item.scheduled_start,
        href=f"{WORKLIST_PATH}?{query}",
    )


async def study_worklist_link(
    session: AsyncSession, tenant_id: str, study: ImagingStudy
) -> WorklistLinkOut | None:
    item = await worklist.item_for_study(
        session, tenant_id, study.study_uid, study.accession_number
    )
    return worklist_link(item) if item is not None else None


def qc_out(study: ImagingStudy) -> QcOut | None:
    if study.qc_confirmed_at is None:
        return None
    return QcOut(
        result=study.qc_status,
        confirmed_by=study.qc_confirmed_by or "",
        confirmed_at=study.qc_confirmed_at,
        notes=study.qc_notes,
    )


# ----------------------------------------------------------------------------- QC


async def confirm_qc(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, body: QcConfirmRequest
) -> QcConfirmOut:
    """Record the QC result once; the same result again answers the first confirmation,
    another result is 409. The study's worklist item moves on (completed when passed)."""
    study = await repo.get_study(session, tenant_id, body.study_instance_uid)
    if study is None:
        raise StudyNotFound()
    first = await repo.confirm_qc(
        session,
        tenant_id,
        study.id,
        result=body.result,
        confirmed_by=actor.subject,
        confirmed_at=utcnow(),
        notes=body.notes,
    )
    await session.refresh(study)
    if not first and study.qc_status != body.result:
        raise QcConflict(
            details={"qcStatus": study.qc_status, "confirmedAt": _iso(study.qc_confirmed_at)}
        )
    item = await worklist.item_for_study(
        session, tenant_id, study.study_uid, study.accession_number
    )
    if item is not None and first:
        item = await _advance(session, actor, tenant_id, item, QC_STEP_STATUS[body.result])
    audit.record(
        session,
        actor,
        "imaging.qc_confirm",
        "study",
        study.study_uid,
        tenant_id=tenant_id,
        patient_id=study.patient_id or None,
        before={"qcStatus": "pending"} if first else {"qcStatus": study.qc_status},
        after={
            "qcStatus": study.qc_status,
            "repeat": not first,
            "worklistItem": item.accession_number if item is not None else None,
        },
    )
    qc = qc_out(study)
    assert qc is not None
    return QcConfirmOut(
        study_instance_uid=study.study_uid,
        qc_status=study.qc_status,
        qc=qc,
        worklist_item=worklist_link(item) if item is not None else None,
    )


async def _advance(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, item: WorklistItem, status: str
) -> WorklistItem:
    """Move the item if its state allows; a canceled or already completed item stays as is
    (the QC result stands either way)."""
    try:  # the transition is checked before anything changes
        return await orders.set_status_by_accession(
            session, actor, tenant_id, item.accession_number, status
        )
    except InvalidTransition:
        return item


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ----------------------------------------------------------------------------- patient studies


async def patient_studies(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    patient_key: str,
    *,
    cursor: str | None,
    limit: int,
) -> Page[PatientStudyOut]:
    """A patient's studies, newest first. ``patient_key`` is the gateway's patient id or
    a patient identifier; merged patients resolve to the survivor, whose identifiers
    (its own and those of every patient merged into it) name its studies."""
    patient_ids = await worklist.resolve_patient_ids(session, tenant_id, patient_key)
    if patient_ids:
        identifiers = await clinical.identifiers_of_patients(session, tenant_id, patient_ids)
        dicom_ids = sorted({ident.value for ident in identifiers})
    elif await repo.has_patient(session, tenant_id, patient_key):  # known to the archive only
        dicom_ids = [patient_key]
    else:
        raise PatientNotFound()
    after = None
    if cursor:
        day, time, pk = decode_cursor(cursor, 3)
        after = (str(day), str(time), str(pk))
    studies = await repo.studies_of_patients(
        session, tenant_id, dicom_ids, after=after, limit=limit + 1
    )
    page = list(studies[:limit])
    audit.record(
        session,
        actor,
        "imaging.patient_studies",
        "patient",
        patient_key,
        tenant_id=tenant_id,
        patient_id=patient_ids[0] if len(patient_ids) == 1 else patient_key,
        after={"results": len(page), "studies": [s.study_uid for s in page]},
    )
    next_cursor = None
    if len(studies) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last.study_date, last.study_time, last.id)
    return Page[PatientStudyOut](data=[_study_out(s) for s in page], next_cursor=next_cursor)


def _study_out(study: ImagingStudy) -> PatientStudyOut:
    day, time = study.study_date, study.study_time
    return PatientStudyOut(
        study_instance_uid=study.study_uid,
        patient_id=study.patient_id,
        accession_number=study.accession_number,
        study_date=f"{day[:4]}-{day[4:6]}-{day[6:8]}" if len(day) == 8 else None,
        study_time=f"{time[:2]}:{time[2:4]}:{time[4:6]}" if len(time) >= 6 else None,
        description=study.study_description,
        modalities=[m for m in study.modalities.split("|") if m],
        number_of_series=study.num_series,
        number_of_instances=study.num_instances,
        qc_status=study.qc_status,
    )
