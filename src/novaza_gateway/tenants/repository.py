"""Tenant queries. The tenants table is the one table keyed by tenant itself."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.tenants.models import Tenant


async def get_by_slug(
    session: AsyncSession, slug: str, *, for_update: bool = False
) -> Tenant | None:
    query = select(Tenant).where(Tenant.slug == slug)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def get_by_key(session: AsyncSession, key: str) -> Tenant | None:
    """A tenant by slug or id: the tenant claim may carry either."""
    tenant = await get_by_slug(session, key)
    if tenant is None and len(key) == 36:
        tenant = await session.get(Tenant, key)
    return tenant


async def list_page(
    session: AsyncSession, *, status: str | None, after_slug: str | None, limit: int
) -> Sequence[Tenant]:
    query = select(Tenant).order_by(Tenant.slug).limit(limit)
    if status is not None:
        query = query.where(Tenant.status == status)
    else:
        query = query.where(Tenant.status != "deleted")
    if after_slug is not None:
        query = query.where(Tenant.slug > after_slug)
    return (await session.execute(query)).scalars().all()


async def settings_of_others(
    session: AsyncSession, tenant_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """(slug, settings) of every tenant but this one that is not deleted, read after taking
    a transaction-scoped lock (PostgreSQL) so that two saves checking for clashes queue."""
    if session.get_bind().dialect.name == "postgresql":
        lock = zlib.crc32(b"novaza:tenant-settings:exclusive")
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})
    query = select(Tenant.slug, Tenant.settings).where(
        Tenant.status != "deleted", Tenant.id != tenant_id
    )
    return [(slug, dict(settings or {})) for slug, settings in (await session.execute(query)).all()]


async def all_for_update(session: AsyncSession) -> list[Tenant]:
    """Every tenant, deleted ones too, locked (PostgreSQL) for a settings rewrite."""
    query = select(Tenant).order_by(Tenant.id).with_for_update()
    return list((await session.scalars(query)).all())
