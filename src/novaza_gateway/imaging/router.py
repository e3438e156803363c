"""``/med/imaging``: signed viewer URLs and study summaries."""

from __future__ import annotations

from fastapi import APIRouter

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.policy import policy
from novaza_gateway.imaging import service
from novaza_gateway.imaging.deps import AreaDep, AuditRefusals, BaseUrlDep
from novaza_gateway.imaging.schemas import SignedUrlOut, SignedUrlRequest, StudySummary

router = APIRouter(prefix="/med/imaging", tags=["medical imaging"], dependencies=[AuditRefusals])

READ = policy(
    "imaging:read",
    addon="medical_imaging",
    errors={404: "STUDY_NOT_FOUND", 422: "VALIDATION_FAILED"},
)


@router.post("/signed-url", **READ, summary="A short-lived URL that reads one study")
async def create_signed_url(
    body: SignedUrlRequest,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
) -> SignedUrlOut:
    return await service.signed_url(
        session, actor, tenant.id, area.signer, area.config, body, base=base
    )


@router.get("/study/{study_uid}", **READ, summary="A study's summary from the archive index")
async def study_summary(
    study_uid: str, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> StudySummary:
    return await service.study_summary(session, actor, tenant.id, study_uid)
