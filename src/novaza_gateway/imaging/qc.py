"""QC confirmation (IHE SWF): one record per (tenant, study), whichever mode holds the study.

An embedded tenant's study must be in its index; a proxy-mode tenant's study must be in its
upstream PACS (one study-level QIDO through the tenant's pooled client, before any database
work). The record itself lives in the gateway's ``imaging_qc`` table either way (ADR 0035),
so the study summary shows it in both modes. Services never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import orders
from novaza_gateway.clinical.errors import InvalidTransition
from novaza_gateway.clinical.models import WorklistItem
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.imaging import proxy_queries, workflow, worklist
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging.errors import QcConflict, StudyNotFound
from novaza_gateway.imaging.models import ImagingQc
from novaza_gateway.imaging.schemas import QcConfirmOut, QcConfirmRequest, QcOut

if TYPE_CHECKING:
    from novaza_gateway.imaging.proxy import ImagingProxy

PENDING = "pending"
# QC passed: the procedure step is done. QC failed: acquired, to be repeated: it stays open.
QC_STEP_STATUS = {"passed": orders.COMPLETED, "failed": orders.IN_PROGRESS}


@dataclass(frozen=True, slots=True)
class QcSubject:
    """The study being confirmed, as its holder (index or upstream) describes it."""

    study_uid: str
    patient_id: str
    accession_number: str
    mode: str  # "embedded" or "proxy"


def qc_out(record: ImagingQc | None) -> QcOut | None:
    if record is None:
        return None
    return QcOut(
        result=record.result,
        confirmed_by=record.confirmed_by,
        confirmed_at=record.confirmed_at,
        notes=record.notes,
    )


def qc_status(record: ImagingQc | None) -> str:
    return record.result if record is not None else PENDING


async def find_subject(
    session: AsyncSession, tenant_id: str, study_uid: str, proxy: ImagingProxy | None
) -> QcSubject:
    """The study from the tenant's upstream (proxy mode) or index; 404 when it has none."""
    upstream = await proxy_queries.upstream_of(proxy, tenant_id)
    if upstream is not None:
        assert proxy is not None
        found = await proxy_queries.find_study(proxy, upstream, study_uid)
        if found is None:
            raise StudyNotFound()
        return QcSubject(
            study_uid,
            proxy_queries.patient_id_of(found) or "",
            proxy_queries.accession_of(found),
            "proxy",
        )
    study = await repo.get_study(session, tenant_id, study_uid)
    if study is None:
        raise StudyNotFound()
    return QcSubject(study.study_uid, study.patient_id, study.accession_number, "embedded")


async def confirm_qc(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    body: QcConfirmRequest,
    *,
    proxy: ImagingProxy | None = None,
) -> QcConfirmOut:
    """Record the QC result once; the same result again answers the first confirmation,
    another result is 409. The study's worklist item moves on (completed when passed)."""
    subject = await find_subject(session, tenant_id, body.study_instance_uid, proxy)
    first = await repo.confirm_qc(
        session,
        tenant_id,
        subject.study_uid,
        result=body.result,
        confirmed_by=actor.subject,
        confirmed_at=utcnow(),
        notes=body.notes,
        patient_id=subject.patient_id,
        accession_number=subject.accession_number,
    )
    record = await repo.get_qc(session, tenant_id, subject.study_uid)
    assert record is not None  # inserted now or before
    if not first and record.result != body.result:
        raise QcConflict(
            details={"qcStatus": record.result, "confirmedAt": _iso(record.confirmed_at)}
        )
    item = await worklist.item_for_study(
        session, tenant_id, subject.study_uid, subject.accession_number
    )
    if item is not None and first:
        item = await _advance(session, actor, tenant_id, item, QC_STEP_STATUS[body.result])
    mode = {"mode": "proxy"} if subject.mode == "proxy" else {}
    audit.record(
        session,
        actor,
        "imaging.qc_confirm",
        "study",
        subject.study_uid,
        tenant_id=tenant_id,
        patient_id=subject.patient_id or None,
        before={"qcStatus": PENDING if first else record.result},
        after={
            "qcStatus": record.result,
            "repeat": not first,
            "worklistItem": item.accession_number if item is not None else None,
            **mode,
        },
    )
    qc = qc_out(record)
    assert qc is not None
    return QcConfirmOut(
        study_instance_uid=subject.study_uid,
        qc_status=record.result,
        qc=qc,
        worklist_item=workflow.worklist_link(item) if item is not None else None,
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
