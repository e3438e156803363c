from __future__ import annotations

from tests.conftest import Gateway

STOW = "/med/stow/studies"


async def imaging_tenant(gw: Gateway, slug: str, **fields: object) -> dict[str, str]:
    """An active tenant with the imaging add-on; answers its Authorization header."""
    fields.setdefault("rateLimit", {"ratePerSecond": 1000, "burst": 1000})
    await gw.create_tenant(slug, addons=["medical_imaging", "emr"], **fields)
    return gw.auth(slug)
