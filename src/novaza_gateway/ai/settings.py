"""The ``ai`` section of tenant settings: the tenant's own agents."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

AGENT_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AgentSettings(_Section):
    """A tenant-defined agent; one with a built-in agent's id replaces it for the tenant."""

    id: Annotated[str, Field(pattern=AGENT_ID)]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    description: Annotated[str, Field(max_length=1000)] = ""
    model: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    system_prompt: Annotated[str, Field(min_length=1, max_length=8000)] = Field(
        alias="systemPrompt"
    )
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(default=256, alias="maxTokens")
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2


class AiTenantSettings(_Section):
    agents: Annotated[list[AgentSettings], Field(max_length=100)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> AiTenantSettings:
        ids = [agent.id for agent in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agent ids must be unique")
        return self
