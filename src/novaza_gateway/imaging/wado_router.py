"""``/med/wado``: WADO-RS retrieve (PS3.18 section 10.4) from the embedded archive.

Instances and frames stream from the archive store as ``multipart/related``; metadata is
DICOM JSON with BulkDataURIs; ``rendered`` and ``thumbnail`` answer JPEG or PNG for viewers.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from starlette.responses import Response, StreamingResponse

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.metering import IMAGING_BYTES_SERVED
from novaza_gateway.core.params import FrameListPath, FramePath, UidPath
from novaza_gateway.core.policy import policy
from novaza_gateway.imaging import retrieve
from novaza_gateway.imaging.deps import AreaDep, AuditRefusals, BaseUrlDep
from novaza_gateway.imaging.dicomweb import wado
from novaza_gateway.imaging.dicomweb.multipart import closing, new_boundary, part_header
from novaza_gateway.imaging.proxy import ProxiedRoute
from novaza_gateway.imaging.retrieve import Target

router = APIRouter(
    prefix="/med/wado/studies",
    tags=["DICOMweb WADO-RS"],
    dependencies=[AuditRefusals],
    route_class=ProxiedRoute,  # a tenant in proxy mode is answered by its upstream
)

DICOM_JSON = "application/dicom+json"
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
READ = policy(
    "imaging:read",
    addon="medical_imaging",
    alt_auth="signed_url",
    meter_bytes=IMAGING_BYTES_SERVED,  # what was sent, counted by the route guard
    errors={
        400: "INVALID_UID",
        404: "STUDY_NOT_FOUND, SERIES_NOT_FOUND, INSTANCE_NOT_FOUND, FRAME_NOT_FOUND, "
        "BULKDATA_NOT_FOUND",
        406: "NOT_ACCEPTABLE, FRAMES_UNAVAILABLE, RENDERING_UNAVAILABLE",
        500: "ARCHIVE_FILE_MISSING",
        503: "UPSTREAM_UNAVAILABLE",
    },
)
AcceptHeader = Annotated[str | None, Header(alias="accept")]
INSTANCE = "/{study}/series/{series}/instances/{instance}"


async def _retrieve(
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: str | None,
    target: Target,
) -> StreamingResponse:
    wado.accepts_multipart(accept, DICOM)
    selection = await retrieve.select(session, actor, tenant.id, target, "retrieve")
    boundary = new_boundary()
    instances = [instance for _, instance in selection.items]
    body = retrieve.stream_instances(area.storage, instances, boundary)
    await body.check_files()
    return StreamingResponse(
        body,
        media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
        headers=body.headers(),
    )


async def _metadata(
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: str,
    target: Target,
) -> Response:
    selection = await retrieve.select(session, actor, tenant.id, target, "metadata")
    found = await retrieve.metadata(session, tenant.id, area.storage, selection, base)
    return Response(orjson.dumps(found), media_type=DICOM_JSON)


@router.get("/{study}", **READ, summary="Retrieve a study")
async def retrieve_study(
    study: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    return await _retrieve(session, tenant, actor, area, accept, Target(study))


@router.get("/{study}/series/{series}", **READ, summary="Retrieve a series")
async def retrieve_series(
    study: UidPath,
    series: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    return await _retrieve(session, tenant, actor, area, accept, Target(study, series))


@router.get(INSTANCE, **READ, summary="Retrieve an instance")
async def retrieve_instance(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    target = Target(study, series, instance)
    return await _retrieve(session, tenant, actor, area, accept, target)


@router.get("/{study}/metadata", **READ, summary="A study's metadata")
async def study_metadata(
    study: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
) -> Response:
    return await _metadata(session, tenant, actor, area, base, Target(study))


@router.get("/{study}/series/{series}/metadata", **READ, summary="A series' metadata")
async def series_metadata(
    study: UidPath,
    series: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
) -> Response:
    return await _metadata(session, tenant, actor, area, base, Target(study, series))


@router.get(f"{INSTANCE}/metadata", **READ, summary="An instance's metadata")
async def instance_metadata(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    base: BaseUrlDep,
) -> Response:
    target = Target(study, series, instance)
    return await _metadata(session, tenant, actor, area, base, target)


@router.get(f"{INSTANCE}/frames/{{frames}}", **READ, summary="Retrieve frames")
async def retrieve_frames(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    frames: FrameListPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    target = Target(study, series, instance)
    selection = await retrieve.select(session, actor, tenant.id, target, "frames")
    row = selection.items[0][1]
    numbers = wado.parse_frames(frames, row.number_of_frames)
    boundary = new_boundary()
    if retrieve.is_native(row):
        wado.accepts_multipart(accept, OCTETS)
        part_type = OCTETS
        body = retrieve.stream_frames(area.storage, row, numbers, boundary)
        await body.check_files()
    else:
        part_type = wado.compressed_frame_type(accept, row.transfer_syntax_uid)
        found = await retrieve.compressed_frames(area.storage, row, numbers)
        media = f"{part_type}; transfer-syntax={row.transfer_syntax_uid}"
        body = retrieve.stream_parts(found, media, boundary)
    return StreamingResponse(
        body,
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
        headers=body.headers(),
    )


@router.get(f"{INSTANCE}/bulkdata/{{path:path}}", **READ, summary="Retrieve bulk data")
async def retrieve_bulkdata(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    path: str,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
) -> Response:
    target = Target(study, series, instance)
    selection = await retrieve.select(session, actor, tenant.id, target, "bulkdata")
    value = await retrieve.bulk(area.storage, selection.items[0][1], path)
    boundary = new_boundary()
    body = wado_part(boundary, value)
    return Response(body, media_type=f'multipart/related; type="{OCTETS}"; boundary={boundary}')


def wado_part(boundary: str, value: bytes) -> bytes:
    return part_header(boundary, OCTETS) + value + closing(boundary)


async def _render(
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: str | None,
    target: Target,
    frame: FramePath,
    size: int | None,
) -> Response:
    media = wado.image_media_type(accept)
    selection = await retrieve.select(session, actor, tenant.id, target, "rendered")
    image = await retrieve.rendered(area.storage, selection.items[0][1], frame, media, size)
    return Response(image, media_type=media)


@router.get(f"{INSTANCE}/rendered", **READ, summary="An instance rendered as JPEG/PNG")
async def rendered_instance(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
) -> Response:
    target = Target(study, series, instance)
    return await _render(session, tenant, actor, area, accept, target, 1, None)


@router.get(f"{INSTANCE}/frames/{{frame}}/rendered", **READ, summary="A frame rendered")
async def rendered_frame(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    frame: FramePath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
) -> Response:
    target = Target(study, series, instance)
    return await _render(session, tenant, actor, area, accept, target, frame, None)


@router.get(f"{INSTANCE}/thumbnail", **READ, summary="An instance's thumbnail")
async def thumbnail(
    study: UidPath,
    series: UidPath,
    instance: UidPath,
    session: SessionDep,
    tenant: TenantDep,
    actor: ActorDep,
    area: AreaDep,
    accept: AcceptHeader = None,
    size: Annotated[int, Query(ge=16, le=1024)] = wado.THUMBNAIL_PIXELS,
) -> Response:
    target = Target(study, series, instance)
    return await _render(session, tenant, actor, area, accept, target, 1, size)
