"""The imaging area's request dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from novaza_gateway.core import audit
from novaza_gateway.core.db import Database
from novaza_gateway.core.deps import ActorDep
from novaza_gateway.core.errors import ApiError
from novaza_gateway.core.tenancy import TenantContext
from novaza_gateway.imaging.area import ImagingArea
from novaza_gateway.imaging.proxy import ImagingProxy
from novaza_gateway.imaging.signing import Grant


async def get_area(request: Request) -> ImagingArea:
    area: ImagingArea = request.app.state.imaging
    return area


async def base_url(request: Request) -> str:
    """Where links in answers (RetrieveURL, signed URLs) point: NOVAZA_PUBLIC_URL, else the
    configured host and port. Never the Host header: a forged one would plant its own host
    in stored links and hand them to every later reader (ADR 0065)."""
    base: str = request.app.state.settings.base_url
    return base


async def signed_grant(request: Request) -> Grant | None:
    """The signed-URL grant a request was admitted with (None for a JWT)."""
    grant: Grant | None = getattr(request.state, "signed_grant", None)
    return grant


async def get_proxy(request: Request) -> ImagingProxy | None:
    """Proxy mode's upstreams (None when the app runs without them)."""
    proxy: ImagingProxy | None = getattr(request.app.state, "imaging_proxy", None)
    return proxy


AreaDep = Annotated[ImagingArea, Depends(get_area)]
ProxyDep = Annotated[ImagingProxy | None, Depends(get_proxy)]
BaseUrlDep = Annotated[str, Depends(base_url)]
GrantDep = Annotated[Grant | None, Depends(signed_grant)]


async def audit_refusals(request: Request, actor: ActorDep) -> AsyncIterator[None]:
    """A read the endpoint refused (unknown study, frame, media type...) is audited too.

    The request's own transaction rolls back with the error, so the event goes in a
    transaction of its own. Refusals by the route guard (401/403) happen before this runs.
    """
    try:
        yield
    except ApiError as error:
        tenant: TenantContext | None = getattr(request.state, "tenant", None)
        route = request.scope.get("route")
        params = request.path_params
        database: Database = request.app.state.db
        async with database.session_scope() as session:
            patient = params.get("patient_id")
            audit.record(
                session,
                actor,
                f"imaging.{getattr(route, 'name', 'request')}",
                "patient" if patient else "study",
                patient or params.get("study") or params.get("study_uid"),
                tenant_id=tenant.id if tenant else None,
                patient_id=patient,
                outcome=error.code.lower()[:32],
            )
        raise


AuditRefusals = Depends(audit_refusals)
