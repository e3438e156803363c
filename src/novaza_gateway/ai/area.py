"""The AI area's runtime, built and wired by ``app.py``: the model registry, agents, billing."""

from __future__ import annotations

from pathlib import Path

from novaza_gateway.ai.agents import AgentCatalog, SettingsSource
from novaza_gateway.ai.engine import InferenceEngine
from novaza_gateway.ai.llama import LlamaCppModel, packaged_model_path
from novaza_gateway.ai.registry import LocalProvider, ModelInfo, ModelRegistry
from novaza_gateway.config import AiSettings
from novaza_gateway.core.db import Database
from novaza_gateway.core.health import Probe
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.core.metering import UsageQuota, UsageRecorder

OWNER = "novaza"


def local_provider(config: AiSettings) -> LocalProvider:
    path = config.model_path or packaged_model_path() or Path("SmolLM2-135M-Instruct.Q4_1.gguf")
    created = int(path.stat().st_mtime) if path.is_file() else 0
    info = ModelInfo(config.model_id, OWNER, created, config.context_size)
    engine = InferenceEngine(
        LlamaCppModel(path, config),
        queue_size=config.queue_size,
        timeout_seconds=config.timeout_seconds,
        name=config.model_id,
    )
    return LocalProvider(info, engine, preload=config.preload)


class AiArea:
    def __init__(
        self,
        config: AiSettings,
        db: Database,
        source: SettingsSource | None,
        settings_ttl_seconds: float,
        *,
        usage: UsageRecorder | None = None,
        quota: UsageQuota | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.usage = usage  # billing's recorder: AI tokens by kind and model
        self.quota = quota  # billing's AI token allowance; None: not enforced
        if registry is None:
            registry = ModelRegistry()
            registry.register(local_provider(config))
        self.registry = registry
        self.agents = AgentCatalog(config.model_id, source, settings_ttl_seconds)

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.on_startup(self.registry.start)
        lifecycle.on_shutdown(self.registry.stop)

    def probes(self) -> list[Probe]:
        """Readiness, when the model is preloaded (lazily loaded, it is no start-up concern):
        the model's state and queue, not critical (imaging and HL7 serve without it)."""
        if not self.config.preload:
            return []
        return [Probe("ai", self._note, critical=False)]

    async def _note(self) -> str | None:
        states = []
        for provider in self.registry.providers():
            health = provider.health()
            if health.state == "failed":
                raise RuntimeError(f"{health.id}: {health.error}")
            states.append(f"{health.id} {health.state}, {health.queue_depth} queued")
        return "; ".join(states)
