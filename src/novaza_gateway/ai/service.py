"""AI use cases: models, chat completions, agents and their conversations, health.

Agent messages do not hold a database transaction while the model generates (seconds, on a
CPU): the history is read in one short session, the exchange stored in another, with a turn
counter that refuses a reply written for a history that moved on meanwhile (409).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from novaza_gateway.ai import chat, repository
from novaza_gateway.ai.agents import Agent
from novaza_gateway.ai.area import AiArea
from novaza_gateway.ai.engine import ChatMessage, Generation, GenerationRequest
from novaza_gateway.ai.errors import ConversationBusy, ConversationNotFound
from novaza_gateway.ai.registry import ModelProvider
from novaza_gateway.ai.schemas import (
    AgentListOut,
    AgentMessageIn,
    AgentOut,
    AgentReplyOut,
    AgentUsageOut,
    AiHealthOut,
    ChatCompletionIn,
    ModelListOut,
    ModelOut,
)
from novaza_gateway.ai.usage import HOLD_GRACE_SECONDS, Settlement, admit
from novaza_gateway.core import audit
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.tenancy import TenantContext

CHARS_PER_TOKEN = 3  # a cautious estimate for trimming history before tokenizing


@dataclass(frozen=True, slots=True)
class Completion:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompletionStream:
    chunks: AsyncGenerator[bytes, None]
    headers: dict[str, str] = field(default_factory=dict)


def list_models(area: AiArea) -> ModelListOut:
    return ModelListOut(
        data=[
            ModelOut(id=p.info.id, created=p.info.created, owned_by=p.info.owned_by)
            for p in area.registry.providers()
        ]
    )


def health(area: AiArea) -> AiHealthOut:
    models = [provider.health() for provider in area.registry.providers()]
    failed = sum(m.state == "failed" for m in models)
    status = "ok" if not failed else ("unavailable" if failed == len(models) else "degraded")
    return AiHealthOut(status=status, queue_depth=sum(m.queue_depth for m in models), models=models)


async def chat_completion(
    area: AiArea, tenant: TenantContext, body: ChatCompletionIn
) -> Completion | CompletionStream:
    provider = area.registry.get(body.model)
    request = chat.to_request(body, area.config.default_max_tokens)
    await provider.prepare(request)  # 422 before anything is reserved or streamed
    explicit = body.max_completion_tokens is not None or body.max_tokens is not None
    completion_id, generation, headers = await _start(area, tenant.id, provider, request, explicit)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = chat.ChunkWriter(completion_id, provider.info.id, include_usage)
        return CompletionStream(writer.stream(generation), headers)
    result = await chat.collect(generation)
    return Completion(chat.completion_body(completion_id, provider.info.id, result), headers)


async def _start(
    area: AiArea,
    tenant_id: str,
    provider: ModelProvider,
    request: GenerationRequest,
    explicit: bool,
) -> tuple[str, Generation, dict[str, str]]:
    """Reserve the request's tokens (429 when not covered) and hand it to the model. From
    then on the provider ends it exactly once, however it ends, and its ending settles the
    reservation (tokens recorded, reservation released); a request the provider refuses
    (overloaded, shutting down) releases it here."""
    estimate = await provider.estimate(request)
    hold = area.config.timeout_seconds + HOLD_GRACE_SECONDS
    admission = await admit(
        area.quota, tenant_id, request, estimate, explicit=explicit, hold_seconds=hold
    )
    completion_id = chat.new_completion_id()
    settle = Settlement(
        area.usage, area.quota, admission, tenant_id, completion_id, provider.info.id
    )
    try:
        generation = provider.submit(admission.request, settle)
    except BaseException:
        settle.release()
        raise
    return completion_id, generation, admission.headers


async def list_agents(area: AiArea, tenant: TenantContext) -> AgentListOut:
    agents = await area.agents.for_tenant(tenant.id)
    return AgentListOut(data=[_agent_out(a) for a in sorted(agents.values(), key=lambda a: a.id)])


def _agent_out(agent: Agent) -> AgentOut:
    return AgentOut(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        model=agent.model,
        max_tokens=agent.max_tokens,
        builtin=agent.builtin,
    )


async def agent_message(
    area: AiArea, tenant: TenantContext, actor: Actor, agent_id: str, body: AgentMessageIn
) -> tuple[AgentReplyOut, dict[str, str]]:
    agent = await area.agents.get(tenant.id, agent_id)
    provider = area.registry.get(agent.model)
    history, turns = await _history(area, tenant.id, agent, body.conversation_id)
    request = GenerationRequest(
        messages=(
            ChatMessage("system", agent.system_prompt),
            *_fit(history, agent, area.config.context_size, body.message),
            ChatMessage("user", body.message),
        ),
        max_tokens=min(body.max_tokens or agent.max_tokens, agent.max_tokens),
        temperature=agent.temperature,
    )
    explicit = body.max_tokens is not None
    completion_id, generation, headers = await _start(area, tenant.id, provider, request, explicit)
    result = await chat.collect(generation)
    conversation_id = await _store(
        area, tenant, actor, agent, body, turns, chat.Completed(completion_id, result)
    )
    usage = result.finished.usage
    reply = AgentReplyOut(
        conversation_id=conversation_id,
        agent_id=agent.id,
        model=agent.model,
        reply=result.text,
        finish_reason=result.finished.finish_reason,
        usage=AgentUsageOut(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        ),
    )
    return reply, headers


async def _store(
    area: AiArea,
    tenant: TenantContext,
    actor: Actor,
    agent: Agent,
    body: AgentMessageIn,
    turns: int,
    done: chat.Completed,
) -> str:
    """The exchange and its audit event, in one transaction; 409 if the history moved on."""
    usage = done.result.finished.usage
    turn = repository.Turn(
        body.message, done.result.text, agent.model, usage.prompt_tokens, usage.completion_tokens
    )
    async with area.db.session_scope() as session:
        conversation_id = body.conversation_id or repository.new_conversation(
            session, tenant.id, agent.id, actor.subject
        )
        if not await repository.append_turn(session, tenant.id, conversation_id, turns, turn):
            raise ConversationBusy()
        audit.record(
            session,
            actor,
            "ai.agent.message",
            "ai_conversation",
            conversation_id,
            tenant_id=tenant.id,
            after={  # figures only: the message and reply are clinical content
                "agentId": agent.id,
                "model": agent.model,
                "completionId": done.completion_id,
                "turn": turns + 1,
                "promptTokens": usage.prompt_tokens,
                "completionTokens": usage.completion_tokens,
                "finishReason": done.result.finished.finish_reason,
            },
        )
    return conversation_id


async def _history(
    area: AiArea, tenant_id: str, agent: Agent, conversation_id: str | None
) -> tuple[list[ChatMessage], int]:
    """The conversation's recent messages and its turn count; 404 for another tenant's,
    another agent's or an unknown conversation."""
    if conversation_id is None:
        return [], 0
    async with area.db.sessionmaker() as session:
        conversation = await repository.get_conversation(session, tenant_id, conversation_id)
        if conversation is None or conversation.agent_id != agent.id:
            raise ConversationNotFound()
        rows = await repository.recent_messages(
            session, tenant_id, conversation_id, area.config.history_messages
        )
        history = [
            ChatMessage("assistant" if row.role == "assistant" else "user", row.content)
            for row in rows
        ]
        return history, conversation.turns


def _fit(
    history: list[ChatMessage], agent: Agent, context_tokens: int, message: str
) -> list[ChatMessage]:
    """The newest history that leaves room for the system prompt, message and reply."""
    budget = (context_tokens - agent.max_tokens) * CHARS_PER_TOKEN
    budget -= len(agent.system_prompt) + len(message)
    kept: list[ChatMessage] = []
    for item in reversed(history):
        budget -= len(item.content) + 16
        if budget < 0:
            break
        kept.append(item)
    while kept and kept[-1].role != "user":  # start on the caller's turn
        kept.pop()
    return list(reversed(kept))
