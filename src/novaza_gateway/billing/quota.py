"""Billing's answer to ``core.metering.UsageQuota``: may this tenant use more AI tokens now?

A verdict needs the period's grant, the tokens already flushed, and what the wallet can still
prepay: one short transaction, cached per tenant until the next usage flush (about a second),
so a busy tenant costs one load per second, not one per call. Tokens recorded but not yet
flushed come from the meter itself, so a burst inside the second is counted too. Other
replicas' tokens count once they are flushed: the cap is exact to within a second of usage,
as with Lago and OpenMeter.

Reservations (ADR 0041): a request about to spend tokens first sets aside what it may spend
at most. What this process holds for a tenant's outstanding requests counts as used for the
next reservation, so two concurrent requests cannot both take the last tokens. Computed from
the same cached snapshot: no query on a cache hit, and no await between reading the figures
and holding the tokens.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from novaza_gateway.billing import wallet as ledger
from novaza_gateway.billing.catalog import MeteredPrice
from novaza_gateway.billing.entitlements import BillingEntitlements
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.prepaid import ai_price, current_period, overage_charge, prepaid_total
from novaza_gateway.core.db import Database
from novaza_gateway.core.metering import AI_TOKENS, QuotaReservation, QuotaVerdict

log = logging.getLogger("novaza.billing.quota")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    allowance: int
    used: int
    available: int  # the wallet above its floor
    prepaid: int  # what the wallet already paid for the period's overage
    price: MeteredPrice | None  # None: overage cannot be prepaid (no price, no plan, trial)
    resets_at: datetime
    generation: int
    loaded: float


class QuotaBook:
    def __init__(
        self,
        db: Database,
        entitlements: BillingEntitlements,
        meter: UsageMeter,
        *,
        max_age: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.entitlements = entitlements
        self.meter = meter
        self.max_age = max_age
        self.monotonic = monotonic
        self._snapshots: dict[str, _Snapshot] = {}
        self._holds: dict[
            str, dict[int, tuple[int, float]]
        ] = {}  # tenant -> id -> (tokens, expiry)
        self._ids = itertools.count(1)

    async def check(self, tenant_id: str, meter: str) -> QuotaVerdict:
        snap = await self._snapshot(tenant_id, meter)
        return _verdict(snap, snap.used + self.meter.unflushed(tenant_id, AI_TOKENS))

    async def reserve(
        self, tenant_id: str, meter: str, quantity: int, *, minimum: int, ttl_seconds: float
    ) -> QuotaReservation:
        snap = await self._snapshot(tenant_id, meter)
        # No await from here on: the figures read and the tokens held are one step.
        used = snap.used + self.meter.unflushed(tenant_id, AI_TOKENS)
        available = consumable(snap, used + self.outstanding(tenant_id), quantity)
        granted = available if available >= max(minimum, 1) else 0
        reservation = QuotaReservation(
            next(self._ids), tenant_id, meter, quantity, granted, available, _verdict(snap, used)
        )
        if granted:
            holds = self._holds.setdefault(tenant_id, {})
            holds[reservation.id] = (granted, self.monotonic() + ttl_seconds)
        return reservation

    def release(self, reservation: QuotaReservation) -> None:
        holds = self._holds.get(reservation.tenant_id)
        if holds is not None and holds.pop(reservation.id, None) is not None and not holds:
            del self._holds[reservation.tenant_id]

    def outstanding(self, tenant_id: str) -> int:
        """The tokens this process holds for the tenant's requests in progress."""
        holds = self._holds.get(tenant_id)
        if not holds:
            return 0
        now = self.monotonic()
        expired = [rid for rid, (_, expires) in holds.items() if expires <= now]
        for rid in expired:  # a request that never ended: a bug, but not a locked-out tenant
            log.warning("quota reservation expired unreleased", extra={"tokens": holds[rid][0]})
            del holds[rid]
        if not holds:
            del self._holds[tenant_id]
            return 0
        return sum(tokens for tokens, _ in holds.values())

    async def _snapshot(self, tenant_id: str, meter: str) -> _Snapshot:
        if meter != AI_TOKENS:
            raise ValueError(f"no allowance is granted on meter {meter!r}")
        snap = self._snapshots.get(tenant_id)
        if snap is None or self._stale(snap):
            snap = self._snapshots[tenant_id] = await self._load(tenant_id)
        return snap

    def forget(self, tenant_id: str) -> None:
        """A credit, a plan change: the next check loads afresh."""
        self._snapshots.pop(tenant_id, None)

    def _stale(self, snap: _Snapshot) -> bool:
        return (
            snap.generation != self.meter.flush_generation
            or self.monotonic() - snap.loaded > self.max_age
        )

    async def _load(self, tenant_id: str) -> _Snapshot:
        generation = self.meter.flush_generation  # before reading: a flush meanwhile reloads
        now = self.entitlements.clock()
        async with self.db.session_scope() as session:
            period = await current_period(session, self.entitlements, tenant_id, now)
            price = ai_price(self.entitlements.catalog, period)
            available = await ledger.available(session, tenant_id)
            reference = period.reference
            prepaid = await prepaid_total(session, tenant_id, reference) if reference else 0
        return _Snapshot(
            allowance=period.grant.ai_tokens,
            used=period.used,
            available=available,
            prepaid=prepaid,
            price=None if reference is None or period.free else price,
            resets_at=period.end,
            generation=generation,
            loaded=self.monotonic(),
        )


def _owed(snap: _Snapshot, used: int) -> int:
    """What the wallet would still have to pay for the overage at ``used`` tokens."""
    return overage_charge(snap.price, snap.allowance, used) - snap.prepaid


def _verdict(snap: _Snapshot, used: int) -> QuotaVerdict:
    spendable = 0
    if snap.price is not None:
        spendable = max(snap.available - max(_owed(snap, used), 0), 0)
    return QuotaVerdict(
        allowed=consumable(snap, used, 1) > 0,
        allowance=snap.allowance,
        used=used,
        prepaid_available=spendable,
        resets_at=snap.resets_at,
    )


def consumable(snap: _Snapshot, used: int, limit: int) -> int:
    """How many more tokens (up to ``limit``) the tenant can consume past ``used``: the
    allowance left, then as many as the wallet pays for: while the plan's charge for the
    overage, less what was prepaid, fits what the wallet holds above its floor (an empty
    wallet pays for nothing, not even tokens whose charge rounds to 0). A charge that never
    falls as usage grows gives the most; any other (volume tiers) an affordable amount."""
    free = max(snap.allowance - used, 0)
    if free >= limit:
        return limit
    if snap.price is None or snap.available <= 0:
        return free
    if _owed(snap, used + limit) <= snap.available:
        return limit
    affordable, unaffordable = free, limit
    while unaffordable - affordable > 1:  # at most log2(limit) charges, past the allowance only
        middle = (affordable + unaffordable) // 2
        if _owed(snap, used + middle) <= snap.available:
            affordable = middle
        else:
            unaffordable = middle
    return affordable
