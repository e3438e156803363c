"""Usage recording for billing, as the request path and the areas see it.

``core`` declares the recorder; the billing area implements it and ``app.py`` wires it into
the ``Gatekeeper`` (metered routes: ``policy(..., meter="imaging")``) and hands it to areas
that meter more than requests (AI tokens, HL7 messages, imaging bytes). Recording is an
in-memory append: no I/O, no await, never an error to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

Dimensions = tuple[tuple[str, str], ...]  # sorted (name, value) pairs

# Meter names, as the billing catalogue spells them.
API_REQUESTS = "api_requests"
AI_TOKENS = "ai_tokens"
HL7_MESSAGES = "hl7_messages"
IMAGING_BYTES_SERVED = "imaging_bytes_served"
STORED_INSTANCES = "stored_instances"


class UsageRecorder(Protocol):
    def record(
        self,
        tenant_id: str,
        meter: str,
        quantity: int = 1,
        *,
        dimensions: Dimensions = (),
        source: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """Count ``quantity`` of ``meter`` for the tenant now.

        With ``source`` and ``event_id`` (an upstream id: a completion id, an HL7 MSH-10) the
        event is counted once however often it is recorded; without them, it is aggregated.
        """


def dimensions(**values: str) -> Dimensions:
    return tuple(sorted(values.items()))


@dataclass(frozen=True, slots=True)
class QuotaVerdict:
    """Whether a tenant may consume more of a capped meter now, and the figures behind it.

    ``allowance`` is the period's grant; past it, consumption continues only while prepaid
    funds (the wallet above its floor) can pay for it, and stops when they cannot.
    """

    allowed: bool
    allowance: int
    used: int
    prepaid_available: int  # minor units the wallet can still spend on overage
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.allowance - self.used, 0)


@dataclass(frozen=True, slots=True)
class QuotaReservation:
    """Units of a capped meter set aside for one request until it ends (ADR 0041).

    ``granted`` is what was set aside: ``quantity`` asked for, or less (never below the
    ``minimum`` asked for), or 0 when not even the minimum could be covered (nothing is held
    then). ``available`` is what the tenant could still consume when asked, other requests'
    reservations deducted, counted up to the quantity asked for.
    """

    id: int
    tenant_id: str
    meter: str
    quantity: int
    granted: int
    available: int
    verdict: QuotaVerdict


class UsageQuota(Protocol):
    async def check(self, tenant_id: str, meter: str) -> QuotaVerdict:
        """The verdict for the tenant's current period (cached briefly; no I/O on a hit)."""

    async def reserve(
        self, tenant_id: str, meter: str, quantity: int, *, minimum: int, ttl_seconds: float
    ) -> QuotaReservation:
        """Set aside up to ``quantity`` of what the tenant can still consume (the allowance
        left, then what prepaid funds can pay), less what this process's outstanding
        reservations hold; at least ``minimum`` or nothing. Released by ``release``, or
        dropped after ``ttl_seconds`` as a backstop. Cached like ``check``."""

    def release(self, reservation: QuotaReservation) -> None:
        """Give the reservation back; calling it again does nothing."""
