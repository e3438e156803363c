"""The Desk area's runtime, built and wired by ``app.py``: tenant settings and the pusher."""

from __future__ import annotations

import httpx

from novaza_gateway.config import DeskConfig
from novaza_gateway.core.db import Database
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.desk.outbox import DeskPusher
from novaza_gateway.desk.upstream import SettingsSource, TenantDeskSettings


class DeskArea:
    def __init__(
        self, config: DeskConfig, db: Database, source: SettingsSource, http: httpx.AsyncClient
    ) -> None:
        self.settings = TenantDeskSettings(source, config.settings_ttl_seconds)
        self.pusher = DeskPusher(config, db, self.settings, http)

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.run_in_background("desk-outbox", self.pusher.run)
