"""The Desk area's runtime, built and wired by ``app.py``: tenant settings, the pusher, and
the Idempotency-Key store its sync uses."""

from __future__ import annotations

import httpx

from novaza_gateway.config import DeskConfig
from novaza_gateway.core.db import Database
from novaza_gateway.core.idempotency import IdempotencyKeys
from novaza_gateway.core.leases import Leases
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.desk.outbox import DeskPusher
from novaza_gateway.desk.upstream import SettingsSource, TenantDeskSettings


class DeskArea:
    def __init__(
        self, config: DeskConfig, db: Database, source: SettingsSource, http: httpx.AsyncClient
    ) -> None:
        self.db = db
        self.settings = TenantDeskSettings(source, config.settings_ttl_seconds)
        self.pusher = DeskPusher(config, db, self.settings, http)
        self.idempotency = IdempotencyKeys(config.idempotency_ttl_seconds)
        self.leases = Leases(db)  # the purge runs on one replica at a time

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.run_in_background("desk-outbox", self.pusher.run)
        # Desk is the first user of Idempotency-Key: the purge of expired keys (all
        # operations') runs here until a second user moves it to app.py (ADR 0061).
        lifecycle.run_in_background("idempotency-purge", self._purge)

    async def _purge(self) -> None:
        await self.idempotency.run_purge(self.db, self.leases)
