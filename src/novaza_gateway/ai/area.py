"""The AI area's runtime, built and wired by ``app.py``: the model registry, agents, billing."""

from __future__ import annotations

from pathlib import Path

import httpx

from novaza_gateway.ai.agents import AgentCatalog, SettingsSource
from novaza_gateway.ai.engine import InferenceEngine
from novaza_gateway.ai.llama import LlamaCppModel, packaged_model_path
from novaza_gateway.ai.registry import LocalProvider, ModelInfo, ModelRegistry
from novaza_gateway.ai.upstream import UpstreamProvider, upstream_info
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


def upstream_providers(config: AiSettings, http: httpx.AsyncClient) -> list[UpstreamProvider]:
    if config.upstream_url is None:
        return []
    key = config.upstream_api_key.get_secret_value() if config.upstream_api_key else None
    return [
        UpstreamProvider(
            upstream_info(name, config.context_size),
            upstream,
            config.upstream_url,
            key,
            http,
            timeout_seconds=config.timeout_seconds,
            max_concurrency=config.upstream_max_concurrency,
        )
        for name, upstream in config.upstream_models
    ]


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
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.usage = usage  # billing's recorder: AI tokens by kind and model
        self.quota = quota  # billing's AI token allowance; None: not enforced
        self.registry = ModelRegistry()
        self.registry.register(local_provider(config))
        for provider in upstream_providers(config, http) if http is not None else []:
            self.registry.register(provider)
        self.agents = AgentCatalog(config.model_id, source, settings_ttl_seconds)

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.on_startup(self.registry.start)
        lifecycle.on_drain(self.registry.drain)
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
