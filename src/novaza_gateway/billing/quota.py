"""Billing's answer to ``core.metering.UsageQuota``: may this tenant use more AI tokens now?

A verdict needs the period's grant, the tokens already flushed, and what the wallet can still
prepay: one short transaction, cached per tenant until the next usage flush (about a second),
so a busy tenant costs one load per second, not one per call. Tokens recorded but not yet
flushed come from the meter itself, so a burst inside the second is counted too. Other
replicas' tokens count once they are flushed: the cap is exact to within a second of usage,
as with Lago and OpenMeter.
"""

from __future__ import annotations

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
from novaza_gateway.core.metering import AI_TOKENS, QuotaVerdict


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

    async def check(self, tenant_id: str, meter: str) -> QuotaVerdict:
        if meter != AI_TOKENS:
            raise ValueError(f"no allowance is granted on meter {meter!r}")
        snap = self._snapshots.get(tenant_id)
        if snap is None or self._stale(snap):
            snap = self._snapshots[tenant_id] = await self._load(tenant_id)
        used = snap.used + self.meter.unflushed(tenant_id, AI_TOKENS)
        spendable = 0
        if snap.price is not None:
            owed = overage_charge(snap.price, snap.allowance, used) - snap.prepaid
            spendable = max(snap.available - max(owed, 0), 0)
        return QuotaVerdict(
            allowed=used < snap.allowance or spendable > 0,
            allowance=snap.allowance,
            used=used,
            prepaid_available=spendable,
            resets_at=snap.resets_at,
        )

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
