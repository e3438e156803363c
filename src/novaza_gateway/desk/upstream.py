"""Which tenants push to a Desk, read from their ``desk`` settings section (cached briefly)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from pydantic import ValidationError

from novaza_gateway.desk.settings import SECTION, DeskTenantSettings


class SettingsSource(Protocol):
    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...


class TenantDeskSettings:
    def __init__(self, source: SettingsSource, ttl_seconds: float) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, DeskTenantSettings | None]] = {}

    async def for_tenant(self, tenant_id: str) -> DeskTenantSettings | None:
        """The tenant's Desk settings when it names a Desk (upstream mode); else None."""
        now = time.monotonic()
        cached = self._cache.get(tenant_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        section = await self._source.section(tenant_id, SECTION)
        found: DeskTenantSettings | None = None
        if section:
            try:
                found = DeskTenantSettings.model_validate(section)
            except ValidationError:  # stored before a stricter schema: treat as embedded
                found = None
        if found is not None and found.base_url is None:
            found = None
        self._cache[tenant_id] = (now, found)
        return found
