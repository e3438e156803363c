"""Agents: named configurations of a model (system prompt, token budget, temperature).

The built-in set serves a clinical platform; a tenant adds or replaces agents in its ``ai``
settings section. Every agent's output is a draft for a clinician to review, and each
system prompt says so to the model as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from novaza_gateway.ai.errors import AgentNotFound
from novaza_gateway.ai.settings import AiTenantSettings

SECTION = "ai"
DRAFT = (
    " Your text is a draft that a clinician reviews before anyone relies on it: never invent "
    "findings, doses or diagnoses that are not in the text you are given."
)


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    description: str
    model: str
    system_prompt: str
    max_tokens: int
    temperature: float
    builtin: bool


def builtin_agents(model: str) -> list[Agent]:
    specs = [
        (
            "clinical-note-summarizer",
            "Clinical note summarizer",
            "Summarizes a clinical note (history, findings, plan) into a short structured "
            "summary. Output is a draft for clinician review, not a medical record entry.",
            "You summarize clinical notes for clinicians. Answer with a short summary under "
            "the headings Problem, Findings, Plan.",
            200,
        ),
        (
            "patient-message-drafter",
            "Patient message drafter",
            "Drafts a plain-language reply to a patient's portal message. Output is a draft "
            "for a clinician to review and edit before it is sent.",
            "You draft short, kind, plain-language replies to patients' messages on behalf of "
            "their care team. Do not give new medical advice; suggest contacting the care team "
            "or emergency services when appropriate.",
            200,
        ),
        (
            "radiology-report-simplifier",
            "Radiology report simplifier",
            "Rewrites a radiology report in plain language for patients. Output is a draft "
            "for the radiologist or referring clinician to review, not a diagnosis.",
            "You rewrite radiology reports in plain language a patient understands, keeping "
            "every finding and its uncertainty, and explaining medical terms briefly.",
            250,
        ),
        (
            "discharge-instructions-drafter",
            "Discharge instructions drafter",
            "Drafts patient-facing discharge instructions from the discharge summary. Output "
            "is a draft for clinician review before it is given to the patient.",
            "You turn discharge summaries into clear discharge instructions for the patient: "
            "medicines as written, warning signs, follow-up appointments.",
            250,
        ),
    ]
    return [
        Agent(agent_id, name, description, model, prompt + DRAFT, max_tokens, 0.2, True)
        for agent_id, name, description, prompt, max_tokens in specs
    ]


class SettingsSource(Protocol):
    """Tenant settings sections; ``app.py`` wires the tenants area's implementation."""

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...


class AgentCatalog:
    """The built-in agents plus each tenant's own, cached per tenant for ``ttl_seconds``."""

    def __init__(
        self, default_model: str, source: SettingsSource | None, ttl_seconds: float
    ) -> None:
        self.default_model = default_model
        self.builtins = {agent.id: agent for agent in builtin_agents(default_model)}
        self._source = source
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[dict[str, Agent], float]] = {}

    async def for_tenant(self, tenant_id: str) -> dict[str, Agent]:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        agents = dict(self.builtins)
        if self._source is not None:
            section = await self._source.section(tenant_id, SECTION)
            for own in AiTenantSettings.model_validate(section or {}).agents:
                agents[own.id] = Agent(
                    own.id,
                    own.name,
                    own.description,
                    own.model or self.default_model,
                    own.system_prompt,
                    own.max_tokens,
                    own.temperature,
                    False,
                )
        self._cache[tenant_id] = (agents, time.monotonic() + self._ttl)
        return agents

    async def get(self, tenant_id: str, agent_id: str) -> Agent:
        agent = (await self.for_tenant(tenant_id)).get(agent_id)
        if agent is None:
            raise AgentNotFound()
        return agent
