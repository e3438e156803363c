"""The imaging area's request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from novaza_gateway.imaging.area import ImagingArea
from novaza_gateway.imaging.signing import Grant


def get_area(request: Request) -> ImagingArea:
    area: ImagingArea = request.app.state.imaging
    return area


def base_url(request: Request) -> str:
    """Where links in answers point: NOVAZA_PUBLIC_URL, else the URL the caller used."""
    public: str | None = request.app.state.settings.public_url
    return public.rstrip("/") if public else str(request.base_url).rstrip("/")


def signed_grant(request: Request) -> Grant | None:
    """The signed-URL grant a request was admitted with (None for a JWT)."""
    grant: Grant | None = getattr(request.state, "signed_grant", None)
    return grant


AreaDep = Annotated[ImagingArea, Depends(get_area)]
BaseUrlDep = Annotated[str, Depends(base_url)]
GrantDep = Annotated[Grant | None, Depends(signed_grant)]
