"""Tenant settings sections for areas that need them outside a request (the HL7 listener),
with their sealed secrets opened (``core.secretbox``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from novaza_gateway.core.db import Database
from novaza_gateway.core.secretbox import SecretBox
from novaza_gateway.tenants.models import Tenant


class TenantSettingsDirectory:
    def __init__(self, database: Database, box: SecretBox) -> None:
        self._database = database
        self._box = box

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        async with self._database.sessionmaker() as session:
            tenant = await session.get(Tenant, tenant_id)
            if tenant is None:
                return None
            section = (tenant.settings or {}).get(name)
            return (
                self._box.open_section(tenant_id, name, section)
                if isinstance(section, dict)
                else None
            )

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """(tenant id, section) of every active tenant that has the section."""
        async with self._database.sessionmaker() as session:
            query = select(Tenant.id, Tenant.settings).where(Tenant.status == "active")
            rows = (await session.execute(query)).all()
        found = []
        for tenant_id, settings in rows:
            section = (settings or {}).get(name)
            if isinstance(section, dict):
                found.append((tenant_id, self._box.open_section(tenant_id, name, section)))
        return found
