"""Tenant HL7 settings for the area: one tenant's section, and MLLP routing over all tenants."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from novaza_gateway.hl7.settings import Hl7Settings

SECTION = "hl7"


class SettingsSource(Protocol):
    """Tenant settings sections; ``app.py`` wires the tenants area's implementation."""

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class Route:
    tenant_id: str
    settings: Hl7Settings


class TenantHl7Settings:
    """Each tenant's ``hl7`` section, and the MLLP routing table over all tenants (TTL cache)."""

    def __init__(self, source: SettingsSource, ttl_seconds: float) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[Hl7Settings, float]] = {}
        self._routes: tuple[list[Route], float] = ([], 0.0)

    async def for_tenant(self, tenant_id: str) -> Hl7Settings:
        entry = self._entries.get(tenant_id)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        section = await self._source.section(tenant_id, SECTION)
        settings = Hl7Settings.model_validate(section or {})
        self._entries[tenant_id] = (settings, time.monotonic() + self._ttl)
        return settings

    async def route(self, receiving_app: str, receiving_fac: str, sending_fac: str) -> Route | None:
        """The tenant whose ``mllpRoutes`` match this MSH; the most specific route wins."""
        routes, expires = self._routes
        if expires <= time.monotonic():
            routes = []
            for tenant_id, section in await self._source.sections(SECTION):
                routes.append(Route(tenant_id, Hl7Settings.model_validate(section)))
            self._routes = (routes, time.monotonic() + self._ttl)
        best: tuple[int, Route] | None = None
        for route in routes:
            for rule in route.settings.mllp_routes:
                if rule.matches(receiving_app, receiving_fac, sending_fac):
                    score = sum(
                        v is not None
                        for v in (
                            rule.receiving_application,
                            rule.receiving_facility,
                            rule.sending_facility,
                        )
                    )
                    if best is None or score > best[0]:
                        best = (score, route)
        return best[1] if best else None
