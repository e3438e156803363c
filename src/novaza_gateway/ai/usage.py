"""Billing's side of a completion: the token allowance before, the token meter after."""

from __future__ import annotations

from collections.abc import Callable

from novaza_gateway.ai.engine import Ending
from novaza_gateway.ai.errors import AiQuotaExceeded
from novaza_gateway.core.metering import AI_TOKENS, UsageQuota, UsageRecorder, dimensions

SOURCE = "ai"


async def admit(quota: UsageQuota | None, tenant_id: str) -> dict[str, str]:
    """429 ``AI_QUOTA_EXCEEDED`` when the tenant may not spend tokens now; otherwise the
    LiteLLM-style headers that tell the caller what is left of the period's allowance."""
    if quota is None:
        return {}
    verdict = await quota.check(tenant_id, AI_TOKENS)
    if not verdict.allowed:
        raise AiQuotaExceeded(verdict.allowance, verdict.used, verdict.resets_at)
    return {
        "x-ratelimit-limit-tokens": str(verdict.allowance),
        "x-ratelimit-remaining-tokens": str(verdict.remaining),
    }


def meter(
    usage: UsageRecorder | None, tenant_id: str, completion_id: str, model: str
) -> Callable[[Ending], None]:
    """The engine's end-of-generation callback: count what was read and generated, however
    the generation ended (a stream cut short counts the tokens it produced). Keyed by the
    completion id, so a record replayed from the spool counts once."""

    def record(ending: Ending) -> None:
        if usage is None:
            return
        for kind, quantity in (
            ("prompt", ending.usage.prompt_tokens),
            ("completion", ending.usage.completion_tokens),
        ):
            if quantity > 0:
                usage.record(
                    tenant_id,
                    AI_TOKENS,
                    quantity,
                    dimensions=dimensions(kind=kind, model=model),
                    source=SOURCE,
                    event_id=f"{completion_id}:{kind}",
                )

    return record
