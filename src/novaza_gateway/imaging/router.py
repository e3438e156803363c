"""``/med/imaging``: signed viewer URLs, study summaries, the worklist, QC confirmation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.pagination import CursorQuery, LimitQuery, Page
from novaza_gateway.core.params import DicomUid, Instant, UidPath
from novaza_gateway.core.policy import policy
from novaza_gateway.imaging import qc, service, workflow
from novaza_gateway.imaging.deps import AreaDep, AuditRefusals, BaseUrlDep, ProxyDep
from novaza_gateway.imaging.schemas import (
    QcConfirmOut,
    QcConfirmRequest,
    SignedUrlOut,
    SignedUrlRequest,
    StudySummary,
    WorklistItemOut,
)
from novaza_gateway.imaging.worklist import OPEN, WorklistFilter

router = APIRouter(prefix="/med/imaging", tags=["medical imaging"], dependencies=[AuditRefusals])

READ = policy(
    "imaging:read",
    addon="medical_imaging",
    errors={
        400: "INVALID_UID",
        404: "STUDY_NOT_FOUND",
        409: "IMAGING_UPSTREAM_SHARED",
        422: "VALIDATION_FAILED",
        502: "UPSTREAM_UNAVAILABLE (proxy mode; also 503, 504)",
    },
)
WRITE = policy(
    "imaging:write",
    addon="medical_imaging",
    errors={
        404: "STUDY_NOT_FOUND",
        409: "QC_CONFLICT, IMAGING_UPSTREAM_SHARED",
        422: "VALIDATION_FAILED",
        502: "UPSTREAM_UNAVAILABLE (proxy mode; also 503, 504)",
    },
)
WORKLIST_STATUSES = ("scheduled", "in_progress", "completed", "canceled", "discontinued")
Text = Annotated[str | None, Query(max_length=324)]


@router.post("/signed-url", **READ, summary="A short-lived URL that reads one study")
async def create_signed_url(
    body: SignedUrlRequest,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
    proxy: ProxyDep,
) -> SignedUrlOut:
    return await service.signed_url(
        session, actor, tenant.id, area.signer, area.config, body, base=base, proxy=proxy
    )


@router.get(
    "/study/{study_uid}", **READ, summary="A study's summary from the archive (or the upstream)"
)
async def study_summary(
    study_uid: UidPath, session: SessionDep, tenant: TenantDep, actor: ActorDep, proxy: ProxyDep
) -> StudySummary:
    return await service.study_summary(session, actor, tenant.id, study_uid, proxy=proxy)


def worklist_filter(
    status: Annotated[
        str | None, Query(description="Comma-separated; default `scheduled,in_progress`")
    ] = None,
    modality: Text = None,
    station_ae_title: Annotated[str | None, Query(alias="stationAETitle", max_length=16)] = None,
    scheduled_from: Annotated[Instant | None, Query(alias="scheduledFrom")] = None,
    scheduled_to: Annotated[Instant | None, Query(alias="scheduledTo")] = None,
    accession_number: Annotated[str | None, Query(alias="accessionNumber", max_length=64)] = None,
    study_uid: Annotated[DicomUid | None, Query(alias="studyInstanceUID")] = None,
    patient_id: Annotated[str | None, Query(alias="patientID", max_length=128)] = None,
    issuer: Annotated[str | None, Query(alias="issuerOfPatientID", max_length=128)] = None,
    patient_name: Annotated[str | None, Query(alias="patientName", max_length=324)] = None,
) -> WorklistFilter:
    """Query parameters -> the filter the MWL SCP builds from a C-FIND identifier."""
    statuses = OPEN
    if status:
        statuses = tuple(dict.fromkeys(s.strip() for s in status.split(",") if s.strip()))
        unknown = [s for s in statuses if s not in WORKLIST_STATUSES]
        if unknown or not statuses:
            raise ValidationFailed.field("status", f"one or more of {', '.join(WORKLIST_STATUSES)}")
    return WorklistFilter(
        statuses=statuses,
        modality=modality,
        station_ae_title=station_ae_title,
        start_from=_utc(scheduled_from),
        start_to=_utc(scheduled_to),
        accession_number=accession_number,
        study_instance_uid=study_uid,
        patient_id=patient_id,
        issuer=issuer,
        patient_name=patient_name,
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # RFC 3339 without an offset: read as UTC


@router.get("/worklist", **READ, summary="Modality worklist items (scheduled procedure steps)")
async def list_worklist(
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    wanted: Annotated[WorklistFilter, Depends(worklist_filter)],
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[WorklistItemOut]:
    return await workflow.worklist_page(
        session, actor, tenant.id, wanted, cursor=cursor, limit=limit
    )


@router.post("/qc-confirm", **WRITE, summary="Confirm QC of an acquired study")
async def qc_confirm(
    body: QcConfirmRequest,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    proxy: ProxyDep,
) -> QcConfirmOut:
    return await qc.confirm_qc(session, actor, tenant.id, body, proxy=proxy)
