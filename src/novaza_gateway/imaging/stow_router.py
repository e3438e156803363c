"""``/med/stow``: STOW-RS, store instances (PS3.18 section 10.5)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.params import UidPath
from novaza_gateway.core.policy import policy
from novaza_gateway.imaging import ingest
from novaza_gateway.imaging.deps import AreaDep, BaseUrlDep
from novaza_gateway.imaging.dicomweb.stow import response_json, status_for
from novaza_gateway.imaging.proxy import ProxiedRoute

router = APIRouter(
    prefix="/med/stow",
    tags=["DICOMweb STOW-RS"],
    route_class=ProxiedRoute,  # a tenant in proxy mode is answered by its upstream
)

DICOM_JSON = "application/dicom+json"
MAX_STOW_BYTES = 4 * 1024 * 1024 * 1024
STORE = policy(
    "imaging:write",
    addon="medical_imaging",
    max_body_bytes=MAX_STOW_BYTES,
    errors={
        400: "DICOM_MULTIPART_MALFORMED, INVALID_UID",
        413: "PAYLOAD_TOO_LARGE",
        415: "DICOM_MULTIPART_REQUIRED",
        503: "UPSTREAM_UNAVAILABLE",
    },
    responses={
        200: {"content": {DICOM_JSON: {}}, "description": "Every instance stored"},
        202: {"content": {DICOM_JSON: {}}, "description": "Some instances failed"},
        409: {"content": {DICOM_JSON: {}}, "description": "No instance stored"},
    },
)
BODY = {
    "requestBody": {
        "required": True,
        "content": {'multipart/related; type="application/dicom"': {"schema": {}}},
    }
}


def _route(summary: str) -> dict[str, Any]:
    return {**STORE, "openapi_extra": {**STORE["openapi_extra"], **BODY}, "summary": summary}


async def _store(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: str,
    study: str | None,
) -> Response:
    report = await ingest.store_stream(
        session,
        area.storage,
        actor,
        tenant.id,
        content_type=request.headers.get("content-type", ""),
        body=request.stream(),
        base_url=base,
        study_uid=study,
    )
    if area.usage is not None:
        ingest.meter_stored(session, area.usage, tenant.id, report)
    study_url = f"{base}/med/wado/studies/{study}" if study else None
    body = response_json(study_url, report.stored, report.failed)
    status = status_for(len(report.stored), len(report.failed))
    return Response(orjson.dumps(body), status_code=status, media_type=DICOM_JSON)


@router.post("/studies", **_route("Store instances (STOW-RS)"))
async def store_instances(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
) -> Response:
    return await _store(request, session, tenant, actor, area, base, None)


@router.post("/studies/{study}", **_route("Store instances of one study"))
async def store_study_instances(
    study: UidPath,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
) -> Response:
    return await _store(request, session, tenant, actor, area, base, study)
