"""``/med/patient``: a patient's imaging studies (add-on ``emr``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.pagination import CursorQuery, LimitQuery, Page
from novaza_gateway.core.policy import policy
from novaza_gateway.imaging import patient_studies as service
from novaza_gateway.imaging.deps import AuditRefusals, ProxyDep
from novaza_gateway.imaging.schemas import PatientStudyOut

router = APIRouter(prefix="/med/patient", tags=["patient records"], dependencies=[AuditRefusals])

PATIENTS_READ = policy(
    "patients:read",
    addon="emr",
    errors={
        404: "PATIENT_NOT_FOUND",
        409: "IMAGING_UPSTREAM_SHARED",
        422: "VALIDATION_FAILED",
        502: "UPSTREAM_UNAVAILABLE (proxy mode; also 503, 504)",
    },
)


@router.get(
    "/{patient_id}/studies",
    **PATIENTS_READ,
    summary="A patient's imaging studies, newest first (merged patients resolve)",
)
async def patient_studies(
    patient_id: Annotated[
        str,
        Path(
            max_length=128,
            description="The gateway's patient id, or a patient identifier (MRN, DICOM Patient ID)",
        ),
    ],
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    proxy: ProxyDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[PatientStudyOut]:
    return await service.patient_studies(
        session, actor, tenant.id, patient_id, cursor=cursor, limit=limit, proxy=proxy
    )
