"""The HL7 area's runtime, built and wired by ``app.py``: settings, the intake batcher (group
commit for MLLP and HTTP), MLLP listener, outbox."""

from __future__ import annotations

from novaza_gateway.config import Hl7Config
from novaza_gateway.core.db import Database
from novaza_gateway.core.health import Probe
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.core.metering import UsageRecorder
from novaza_gateway.core.tenancy import TenantCache
from novaza_gateway.hl7 import repository
from novaza_gateway.hl7.batcher import IntakeBatcher
from novaza_gateway.hl7.listener import MllpListener
from novaza_gateway.hl7.outbox import OutboxWorker
from novaza_gateway.hl7.routing import SettingsSource, TenantHl7Settings


class Hl7Area:
    def __init__(
        self,
        config: Hl7Config,
        db: Database,
        source: SettingsSource,
        tenants: TenantCache,
        usage: UsageRecorder | None = None,
    ) -> None:
        self.config = config
        self.usage = usage  # billing's recorder: messages in and out
        self.settings = TenantHl7Settings(source, config.settings_ttl_seconds)
        self.batcher = IntakeBatcher(db, usage=usage)
        self.listener: MllpListener | None = None
        if config.mllp_port is not None:
            self.listener = MllpListener(config, self.settings, tenants, self.batcher)
        self.outbox = OutboxWorker(config, db, self.settings)
        self.db = db

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.on_startup(self._start_intake)
        lifecycle.on_shutdown(self.batcher.stop)  # after the listener's (reverse order)
        if self.listener is not None:
            lifecycle.on_startup(self.listener.start)
            lifecycle.on_shutdown(self.listener.stop)
        lifecycle.run_in_background("hl7-outbox", self.outbox.run)
        lifecycle.on_shutdown(self.outbox.close)

    async def _start_intake(self) -> None:
        self.batcher.start()

    def probes(self) -> list[Probe]:
        """Readiness, when MLLP is on: the listener listens (critical), the outbox backlog."""
        if self.listener is None:
            return []
        return [
            Probe("mllp", self._listening),
            Probe("hl7-outbox", self._outbox_note, critical=False),
        ]

    async def _listening(self) -> str | None:
        if self.listener is None or not self.listener.serving:
            raise RuntimeError("MLLP listener not serving")
        return f"port {self.listener.port}"

    async def _outbox_note(self) -> str | None:
        async with self.db.sessionmaker() as session:
            counts = await repository.backlog(session)
        return f"{counts.get('queued', 0)} queued, {counts.get('dead', 0)} dead"
