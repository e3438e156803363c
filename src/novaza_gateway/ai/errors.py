"""AI error codes (docs/errors.md). Rendered by the one handler in ``core.errors``."""

from __future__ import annotations

import math
from datetime import datetime

from novaza_gateway.core.db import utcnow
from novaza_gateway.core.errors import ApiError, NotFound


class ModelNotFound(NotFound):
    code = "MODEL_NOT_FOUND"
    default_message = "No model has this id; GET /ai/models lists them."

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model[:64]}' does not exist; GET /ai/models lists them.",
            details={"model": model[:64]},
        )


class AgentNotFound(NotFound):
    code = "AGENT_NOT_FOUND"
    default_message = "No agent has this id for this tenant; GET /ai/agents lists them."


class ConversationNotFound(NotFound):
    code = "CONVERSATION_NOT_FOUND"
    default_message = "No conversation of this agent has this id for this tenant."


class ConversationBusy(ApiError):
    status = 409
    code = "CONVERSATION_BUSY"
    default_message = "Another message to this conversation was answered meanwhile; resend."


class ContextLengthExceeded(ApiError):
    status = 400
    code = "CONTEXT_LENGTH_EXCEEDED"
    default_message = "The messages do not fit the model's context window."

    def __init__(self, prompt_tokens: int, context: int) -> None:
        super().__init__(
            f"The messages take {prompt_tokens} tokens; the model's context holds {context}.",
            details={"promptTokens": prompt_tokens, "contextTokens": context},
        )


class AiQuotaExceeded(ApiError):
    """The tenant cannot cover the request: its AI-token allowance for the period is spent and
    prepaid funds cannot pay, or what is left does not cover the ``max_tokens`` it asked for.

    ``remaining`` is what the tenant can still consume now (allowance, then wallet, less the
    requests in progress); ``maxTokens`` the largest ``max_tokens`` this prompt could have now.
    """

    status = 429
    code = "AI_QUOTA_EXCEEDED"
    default_message = "The tenant's AI token allowance for this period is used up."

    def __init__(
        self,
        allowance: int,
        used: int,
        resets_at: datetime,
        *,
        remaining: int = 0,
        prompt_tokens: int | None = None,
        wanted: int | None = None,
    ) -> None:
        wait = max(1, math.ceil((resets_at - utcnow()).total_seconds()))
        details: dict[str, object] = {
            "allowance": allowance,
            "used": used,
            "resetsAt": resets_at.isoformat().replace("+00:00", "Z"),
            "remaining": remaining,
        }
        message = None
        if prompt_tokens is not None and wanted is not None:
            largest = max(remaining - prompt_tokens, 0)
            details |= {"promptTokens": prompt_tokens, "maxTokens": largest}
            if largest > 0:
                message = (
                    f"The request may use up to {wanted} tokens and the tenant can use "
                    f"{remaining} more this period; retry with max_tokens at most {largest}."
                )
        super().__init__(message, details=details, headers={"Retry-After": str(wait)})


class AiOverloaded(ApiError):
    """The model's queue is full: every worker is busy and the waiting line is at capacity."""

    status = 503
    code = "AI_OVERLOADED"
    default_message = "The model is busy with other requests; retry shortly."

    def __init__(self, queue_size: int) -> None:
        super().__init__(details={"queueCapacity": queue_size}, headers={"Retry-After": "1"})


class AiTimeout(ApiError):
    status = 504
    code = "AI_TIMEOUT"
    default_message = "The model did not finish within the generation timeout."


class ModelUnavailable(ApiError):
    """The model cannot be loaded (missing file, bad GGUF) or the engine is shutting down."""

    status = 503
    code = "AI_MODEL_UNAVAILABLE"
    default_message = "The model is not available; retry later."


class AiShuttingDown(ModelUnavailable):
    """This replica is draining (SIGTERM): a request not yet generating is refused, and one
    still generating at the end of the grace is stopped with this error (ADR 0066)."""

    default_message = "This gateway replica is shutting down; retry the request."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class GenerationCancelled(ApiError):
    """The caller went away; nobody sees this one, but the usage still counts."""

    status = 499
    code = "CANCELLED"
    default_message = "The client closed the request."
