"""``/med/qido``: QIDO-RS searches (PS3.18 section 10.6), answered as DICOM JSON."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.params import UidPath
from novaza_gateway.core.policy import policy
from novaza_gateway.imaging import service
from novaza_gateway.imaging.deps import AuditRefusals, BaseUrlDep, GrantDep
from novaza_gateway.imaging.dicomweb.qido import Level, parse
from novaza_gateway.imaging.proxy import ProxiedRoute

router = APIRouter(
    prefix="/med/qido",
    tags=["DICOMweb QIDO-RS"],
    dependencies=[AuditRefusals],
    route_class=ProxiedRoute,  # a tenant in proxy mode is answered by its upstream
)

DICOM_JSON = "application/dicom+json"
CUT_WARNING = (
    '299 novaza: "The number of results exceeded the maximum supported by the server or '
    'the limit asked for. Additional results can be requested."'
)
SEARCH = policy(
    "imaging:read",
    addon="medical_imaging",
    alt_auth="signed_url",
    errors={
        400: "INVALID_UID",
        404: "STUDY_NOT_FOUND, SERIES_NOT_FOUND",
        422: "VALIDATION_FAILED",
    },
    responses={200: {"content": {DICOM_JSON: {}}, "description": "Matches (may be empty)"}},
)


async def _search(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: str,
    grant: GrantDep,
    level: Level,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    query = parse(level, request.query_params.multi_items())
    found, cut = await service.qido(
        session, actor, tenant.id, query, base=base, grant=grant, study_uid=study, series_uid=series
    )
    headers = {"Warning": CUT_WARNING} if cut else None
    return Response(orjson.dumps(found), media_type=DICOM_JSON, headers=headers)


@router.get("/studies", **SEARCH, summary="Search for studies")
async def search_studies(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: BaseUrlDep,
    grant: GrantDep,
) -> Response:
    return await _search(request, session, tenant, actor, base, grant, "study")


@router.get("/series", **SEARCH, summary="Search for series")
async def search_series(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: BaseUrlDep,
    grant: GrantDep,
) -> Response:
    return await _search(request, session, tenant, actor, base, grant, "series")


@router.get("/instances", **SEARCH, summary="Search for instances")
async def search_instances(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: BaseUrlDep,
    grant: GrantDep,
) -> Response:
    return await _search(request, session, tenant, actor, base, grant, "instance")


@router.get("/studies/{study}/series", **SEARCH, summary="Search for a study's series")
async def search_study_series(
    study: UidPath,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: BaseUrlDep,
    grant: GrantDep,
) -> Response:
    return await _search(request, session, tenant, actor, base, grant, "series", study)


@router.get("/studies/{study}/instances", **SEARCH, summary="Search for a study's instances")
async def search_study_instances(
    study: UidPath,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: BaseUrlDep,
    grant: GrantDep,
) -> Response:
    return await _search(request, session, tenant, actor, base, grant, "instance", study)


@router.get(
    "/studies/{study}/series/{series}/instances",
    **SEARCH,
    summary="Search for a series' instances",
)
async def search_series_instances(
    study: UidPath,
    series: UidPath,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    base: BaseUrlDep,
    grant: GrantDep,
) -> Response:
    return await _search(request, session, tenant, actor, base, grant, "instance", study, series)
