"""Request and answer shapes.

``/ai/chat/completions`` and ``/ai/models`` speak OpenAI's wire format (snake_case, as every
OpenAI SDK sends and expects it); the gateway's own ``/ai/agents`` and ``/ai/health`` use the
house camelCase.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from novaza_gateway.ai.engine import OutputFormat
from novaza_gateway.core.schemas import ApiModel, ApiResponse

MAX_MESSAGES = 500
MAX_TEXT = 200_000
MAX_SCHEMA_BYTES = 64 * 1024


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_TEXT)]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # "developer" is OpenAI's newer name for the system role.
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_TEXT)] | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any], Field(alias="schema")]
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(value)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"a schema has at most {MAX_SCHEMA_BYTES} bytes of JSON")
        return value


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class ChatCompletionIn(BaseModel):
    """OpenAI Chat Completions. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(min_length=1, max_length=128)]
    messages: Annotated[list[MessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: Annotated[str, Field(max_length=64)] | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: do not stop at end-of-sequence
    response_format: ResponseFormat | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > 4:
                raise ValueError("at most 4 stop sequences")
            if any(len(s) > 64 for s in value):
                raise ValueError("a stop sequence has at most 64 characters")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported: one choice per request")
        return value

    @field_validator("messages")
    @classmethod
    def _has_user_text(cls, value: list[MessageIn]) -> list[MessageIn]:
        if not any(m.role == "user" for m in value):
            raise ValueError("at least one user message is required")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionIn:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        return self

    @model_validator(mode="after")
    def _format_ends(self) -> ChatCompletionIn:
        if self.ignore_eos and self.response_format and self.response_format.type != "text":
            raise ValueError("ignore_eos cannot be combined with a JSON response_format")
        return self

    def output_format(self) -> OutputFormat | None:
        """The answer's format; ``wire`` keeps ``response_format`` as the client sent it."""
        spec = self.response_format
        if spec is None:
            return None
        wire = spec.model_dump(by_alias=True, exclude_unset=True)
        if isinstance(spec, JsonSchemaFormat):
            schema = orjson.dumps(spec.json_schema.schema_).decode()
            return OutputFormat("json_schema", schema, wire)
        return OutputFormat(spec.type, None, wire)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChoiceOut(BaseModel):
    index: int
    message: AssistantMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionOut(BaseModel):
    """The non-streamed answer (streamed: ``chat.completion.chunk`` server-sent events)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


# ----------------------------------------------------------------------- house format


class AgentOut(ApiResponse):
    id: str
    name: str
    description: str
    model: str
    max_tokens: int
    builtin: bool


class AgentListOut(ApiResponse):
    data: list[AgentOut]
    next_cursor: str | None = None


class AgentMessageIn(ApiModel):
    message: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    conversation_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None  # at most the agent's own budget


class AgentUsageOut(ApiResponse):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AgentReplyOut(ApiResponse):
    conversation_id: str
    agent_id: str
    model: str
    reply: str
    finish_reason: str
    usage: AgentUsageOut


class ModelHealthOut(ApiResponse):
    id: str
    provider: str
    state: str
    queue_depth: int
    queue_capacity: int
    in_flight: int
    completed: int
    tokens_generated: int
    load_seconds: float | None = None
    error: str | None = None


class AiHealthOut(ApiResponse):
    status: Literal["ok", "degraded", "unavailable"]
    queue_depth: int
    models: list[ModelHealthOut]
