"""The rooms area's runtime, built and wired by ``app.py``: token secret, tenant settings,
the Personeo client, the journal of calls to it and the reconciler that finishes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx

from novaza_gateway.config import RoomsConfig
from novaza_gateway.core.db import Database
from novaza_gateway.core.health import Probe
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.rooms.errors import RoomsNotConfigured
from novaza_gateway.rooms.journal import Journal, ReconcilePolicy
from novaza_gateway.rooms.personeo import PersoneoClient, Upstream
from novaza_gateway.rooms.reconcile import Reconciler
from novaza_gateway.rooms.tokens import dev_secret

SECTION = "rooms"


class SettingsSource(Protocol):
    """Tenant settings sections (``tenants.directory.TenantSettingsDirectory``)."""

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...


class RoomsArea:
    def __init__(
        self,
        config: RoomsConfig,
        data_dir: Path,
        source: SettingsSource,
        http: httpx.AsyncClient,
        db: Database,
        policy: ReconcilePolicy | None = None,
    ) -> None:
        self.config = config
        self._data_dir = data_dir
        self._source = source
        self._secret: bytes | None = (
            config.token_secret.get_secret_value().encode() if config.token_secret else None
        )
        self.personeo = PersoneoClient(http, config.upstream_timeout_seconds)
        policy = policy or ReconcilePolicy()
        timeout = config.upstream_timeout_seconds
        self.reconciler = Reconciler(db, self.personeo, self.tenant_section, policy, timeout)
        self.journal = Journal(db, self.personeo, policy, timeout, self.reconciler.nudge)

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.run_in_background("rooms-reconcile", self.reconciler.run)

    def probes(self) -> list[Probe]:
        """Readiness, non-critical: intents queued for Personeo, and those given up."""
        return [Probe("rooms-reconcile", self.reconciler.note, critical=False)]

    def token_secret(self) -> bytes:
        """The configured secret; outside production, one generated once in the data dir."""
        if self._secret is None:
            if self.config.production:
                raise RoomsNotConfigured()
            self._secret = dev_secret(self._data_dir)
        return self._secret

    async def tenant_section(self, tenant_id: str) -> dict[str, Any]:
        return await self._source.section(tenant_id, SECTION) or {}

    def upstream(self, section: dict[str, Any]) -> Upstream | None:
        return Upstream.from_section(section)

    def personeo_url(self, section: dict[str, Any]) -> str | None:
        url = section.get("personeoUrl") or self.config.personeo_url
        return str(url) if url else None
