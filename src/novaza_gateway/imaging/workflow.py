"""The Scheduled Workflow's worklist (IHE SWF): the REST worklist and the link from a study
to the item it fulfils. QC confirmation is ``qc``, a patient's studies ``patient_studies``.
Every read of patient data is audited; services never commit."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import orders
from novaza_gateway.clinical.models import WorklistItem
from novaza_gateway.core import audit
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.pagination import Page, decode_cursor, encode_cursor
from novaza_gateway.imaging import worklist
from novaza_gateway.imaging.models import ImagingStudy
from novaza_gateway.imaging.schemas import (
    RequestedProcedureOut,
    ScheduledProcedureStepOut,
    WorklistItemOut,
    WorklistLinkOut,
    WorklistPatientOut,
)
from novaza_gateway.imaging.worklist import WorklistEntry, WorklistFilter

WORKLIST_PATH = "/med/imaging/worklist"


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
