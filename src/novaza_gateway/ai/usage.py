"""Billing's side of a completion: tokens reserved before it runs, metered and released after.

Admission (ADR 0041) reserves what the request may cost at most (``estimate``): its prompt
plus its generation cap, against what the tenant can still consume (the allowance left, then
what the wallet can prepay) less what this process's requests in progress hold. A request
that did not choose its ``max_tokens`` gets a smaller cap when only that fits (it then ends
with ``finish_reason: length``); one that did, or one that would be left fewer than
``MIN_COMPLETION_TOKENS``, is refused with 429 ``AI_QUOTA_EXCEEDED`` and the figures to retry
with. When the request ends, however it ends, ``Settlement`` records the tokens counted and
releases the reservation, once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from novaza_gateway.ai.engine import Ending, GenerationRequest
from novaza_gateway.ai.errors import AiQuotaExceeded
from novaza_gateway.ai.estimate import Estimate
from novaza_gateway.core.metering import (
    AI_TOKENS,
    QuotaReservation,
    UsageQuota,
    UsageRecorder,
    dimensions,
)

SOURCE = "ai"
MIN_COMPLETION_TOKENS = 16  # the least answer worth generating when the cap is lowered
HOLD_GRACE_SECONDS = 60.0  # past the generation timeout, a reservation never released lapses


@dataclass(frozen=True, slots=True)
class Admission:
    request: GenerationRequest  # with a lower max_tokens when only that was covered
    headers: dict[str, str]  # LiteLLM's x-ratelimit-*-tokens
    reservation: QuotaReservation | None  # None: no allowance is enforced


async def admit(
    quota: UsageQuota | None,
    tenant_id: str,
    request: GenerationRequest,
    estimate: Estimate,
    *,
    explicit: bool,
    hold_seconds: float,
) -> Admission:
    """Reserve the request's tokens, lowering its cap if it may be lowered; 429
    ``AI_QUOTA_EXCEEDED`` when the tenant cannot cover it."""
    if quota is None:
        return Admission(request, {}, None)
    wanted = estimate.total_tokens
    least = wanted if explicit else min(estimate.prompt_tokens + MIN_COMPLETION_TOKENS, wanted)
    reservation = await quota.reserve(
        tenant_id, AI_TOKENS, wanted, minimum=least, ttl_seconds=hold_seconds
    )
    verdict = reservation.verdict
    if not reservation.granted:
        raise AiQuotaExceeded(
            verdict.allowance,
            verdict.used,
            verdict.resets_at,
            remaining=reservation.available,
            prompt_tokens=estimate.prompt_tokens,
            wanted=wanted,
        )
    if reservation.granted < wanted:
        request = replace(request, max_tokens=reservation.granted - estimate.prompt_tokens)
    headers = {
        "x-ratelimit-limit-tokens": str(verdict.allowance),
        "x-ratelimit-remaining-tokens": str(verdict.remaining),
    }
    return Admission(request, headers, reservation)


class Settlement:
    """The provider's end-of-generation callback: count what was read and generated, however
    the generation ended (a stream cut short counts the tokens it produced), then release the
    reservation; the first call does it, later ones nothing. Keyed by the completion id, so a
    record replayed from the spool counts once. ``release`` alone is for a request that never
    reached the model."""

    def __init__(
        self,
        usage: UsageRecorder | None,
        quota: UsageQuota | None,
        admission: Admission,
        tenant_id: str,
        completion_id: str,
        model: str,
    ) -> None:
        self.usage = usage
        self.quota = quota
        self.reservation = admission.reservation
        self.tenant_id = tenant_id
        self.completion_id = completion_id
        self.model = model
        self.settled = False

    def __call__(self, ending: Ending) -> None:
        if self.settled:
            return
        try:
            self._record(ending)
        finally:  # recorded first: the tokens count before the reservation stops counting
            self.release()

    def release(self) -> None:
        self.settled = True
        reservation, self.reservation = self.reservation, None
        if reservation is not None and self.quota is not None:
            self.quota.release(reservation)

    def _record(self, ending: Ending) -> None:
        if self.usage is None:
            return
        for kind, quantity in (
            ("prompt", ending.usage.prompt_tokens),
            ("completion", ending.usage.completion_tokens),
        ):
            if quantity > 0:
                self.usage.record(
                    self.tenant_id,
                    AI_TOKENS,
                    quantity,
                    dimensions=dimensions(kind=kind, model=self.model),
                    source=SOURCE,
                    event_id=f"{self.completion_id}:{kind}",
                )
