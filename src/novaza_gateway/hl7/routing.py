"""Tenant HL7 settings for the area: one tenant's section, and MLLP routing over all tenants."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from novaza_gateway.hl7.settings import Hl7Settings

SECTION = "hl7"
MATCHES_KEPT = 1024
log = logging.getLogger("novaza.hl7")


class SettingsSource(Protocol):
    """Tenant settings sections; ``app.py`` wires the tenants area's implementation."""

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class Route:
    tenant_id: str
    settings: Hl7Settings


class TenantHl7Settings:
    """Each tenant's ``hl7`` section, and the MLLP routing table over all tenants, cached for
    ``ttl_seconds``. An expired routing table keeps answering while one task reloads it (a
    message never waits for the reload, and concurrent callers never reload it twice)."""

    def __init__(self, source: SettingsSource, ttl_seconds: float) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[Hl7Settings, float]] = {}
        self._routes: tuple[list[Route], float] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._matches: dict[tuple[str, str, str], Route | None] = {}

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
        known, route = self.route_now(receiving_app, receiving_fac, sending_fac)
        if known:
            return route
        await self._first_load()
        return self.route_now(receiving_app, receiving_fac, sending_fac)[1]

    def route_now(
        self, receiving_app: str, receiving_fac: str, sending_fac: str
    ) -> tuple[bool, Route | None]:
        """``route`` without waiting: (False, None) only before the table's first load. A
        stale table answers while one task reloads it."""
        table = self._routes
        if table is None or table[1] <= time.monotonic():
            self._start_reload()
            if table is None:
                return False, None
        key = (receiving_app, receiving_fac, sending_fac)
        memo = self._matches
        if key in memo:  # a handful of senders: the rules are walked once per table
            return True, memo[key]
        route = _best(table[0], receiving_app, receiving_fac, sending_fac)
        if len(memo) < MATCHES_KEPT:  # MSH fields come from the network: bounded
            memo[key] = route
        return True, route

    def _start_reload(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload())

    async def _first_load(self) -> None:
        self._start_reload()
        assert self._reloading is not None
        await asyncio.shield(self._reloading)

    async def _reload(self) -> None:
        try:
            sections = await self._source.sections(SECTION)
        except Exception as exc:  # the stale table stays; the next caller tries again
            log.warning("hl7 routes not reloaded", extra={"error": type(exc).__name__})
            if self._routes is None:
                raise
            return
        routes = [Route(tenant_id, Hl7Settings.model_validate(s)) for tenant_id, s in sections]
        self._routes = (routes, time.monotonic() + self._ttl)
        self._matches = {}


def _best(
    routes: list[Route], receiving_app: str, receiving_fac: str, sending_fac: str
) -> Route | None:
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
