"""``/ai``: OpenAI-compatible chat completions and models, agents, AI health (scope ai:use)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from novaza_gateway.ai import service
from novaza_gateway.ai.schemas import (
    AgentListOut,
    AgentMessageIn,
    AgentReplyOut,
    AiHealthOut,
    ChatCompletionIn,
    ChatCompletionOut,
    ModelListOut,
)
from novaza_gateway.ai.settings import AGENT_ID
from novaza_gateway.ai.sse import EventStream
from novaza_gateway.core.deps import ActorDep, TenantDep
from novaza_gateway.core.policy import policy

router = APIRouter(prefix="/ai", tags=["AI"])
AgentId = Annotated[str, Path(alias="agentID", pattern=AGENT_ID)]

READ = policy("ai:use")
GENERATE = {
    400: "CONTEXT_LENGTH_EXCEEDED",
    429: "RATE_LIMITED, AI_QUOTA_EXCEEDED",
    503: "AI_OVERLOADED, AI_MODEL_UNAVAILABLE",
    504: "AI_TIMEOUT",
}
COMPLETIONS = policy(
    "ai:use",
    max_body_bytes=2 * 1024 * 1024,
    errors={**GENERATE, 404: "MODEL_NOT_FOUND", 422: "VALIDATION_FAILED"},
    responses={200: {"content": {"text/event-stream": {}}, "model": ChatCompletionOut}},
)
MESSAGE = policy(
    "ai:use",
    max_body_bytes=1024 * 1024,
    errors={
        **GENERATE,
        404: "AGENT_NOT_FOUND, CONVERSATION_NOT_FOUND",
        409: "CONVERSATION_BUSY",
        422: "VALIDATION_FAILED",
    },
)


@router.get("/health", **READ, summary="AI service health: models, their state, queue depth")
async def ai_health(request: Request) -> AiHealthOut:
    return service.health(request.app.state.ai)


@router.get("/models", **READ, summary="The models served (OpenAI list format)")
async def list_models(request: Request) -> ModelListOut:
    return service.list_models(request.app.state.ai)


@router.post(
    "/chat/completions",
    **COMPLETIONS,
    summary="Chat completion (OpenAI-compatible; stream=true answers server-sent events)",
)
async def chat_completions(body: ChatCompletionIn, request: Request, tenant: TenantDep) -> Response:
    answer = await service.chat_completion(request.app.state.ai, tenant, body)
    if isinstance(answer, service.CompletionStream):
        return EventStream(answer.chunks, answer.headers)
    return Response(answer.body, 200, answer.headers, media_type="application/json")


@router.get("/agents", **READ, summary="The agents this tenant can message")
async def list_agents(request: Request, tenant: TenantDep) -> AgentListOut:
    return await service.list_agents(request.app.state.ai, tenant)


@router.post(
    "/agents/{agentID}/message",
    **MESSAGE,
    summary="Send a message to an agent; conversationId continues a conversation",
)
async def agent_message(
    agent_id: AgentId,
    body: AgentMessageIn,
    request: Request,
    response: Response,
    tenant: TenantDep,
    actor: ActorDep,
) -> AgentReplyOut:
    reply, headers = await service.agent_message(
        request.app.state.ai, tenant, actor, agent_id, body
    )
    response.headers.update(headers)
    return reply
