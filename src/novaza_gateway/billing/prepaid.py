"""Prepaid AI usage: AI tokens past the period's allowance are paid from the wallet as they
are used, and only while the wallet can pay (Lago's prepaid credits, OpenMeter's
entitlement with overage).

The charge for the tokens past the allowance is the plan's own metered price, the same one
the invoice uses: ``charge(used) - charge(min(used, allowance))``. After each usage flush,
``settle_ai`` tops the period's debits up to that charge (as far as the wallet goes) under the
wallet lock, so two replicas never both debit the same tokens. The invoice shows the full
metered charge and credits what was prepaid (a ``prepaid`` line), so nothing is charged
twice and nothing unpaid is lost: what the wallet could not cover is owed on the invoice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import repository
from novaza_gateway.billing import wallet as ledger
from novaza_gateway.billing.catalog import Catalog, MeteredPrice
from novaza_gateway.billing.entitlements import BillingEntitlements
from novaza_gateway.billing.grants import Grant
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.models import Subscription, WalletEntry
from novaza_gateway.billing.periods import add_months
from novaza_gateway.billing.pricing import metered_charge
from novaza_gateway.core.db import Database
from novaza_gateway.core.entitlements import PlanChoice
from novaza_gateway.core.metering import AI_TOKENS

log = logging.getLogger("novaza.billing.prepaid")

PREPAID_KIND = "ai_prepaid"


def overage_charge(price: MeteredPrice | None, allowance: int, used: int) -> int:
    """What the tokens past the allowance cost at the plan's price (0 with no price)."""
    if price is None or used <= allowance:
        return 0
    return metered_charge(price, used).amount - metered_charge(price, allowance).amount


def period_reference(sub: Subscription) -> str:
    return f"{sub.id}:{sub.current_period_start.isoformat()}"


@dataclass(frozen=True, slots=True)
class Period:
    """The tenant's current billing period, with what it grants and what was used."""

    sub: Subscription | None
    start: datetime
    end: datetime
    grant: Grant
    used: int

    @property
    def reference(self) -> str | None:
        return period_reference(self.sub) if self.sub else None

    @property
    def free(self) -> bool:
        trial_end = self.sub.trial_end if self.sub else None
        return trial_end is not None and self.end <= trial_end


def _calendar_month(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, add_months(start, 1, anchor_day=1)


async def current_period(
    session: AsyncSession, entitlements: BillingEntitlements, tenant_id: str, now: datetime
) -> Period:
    """A tenant without a subscription is held to the default plan, by calendar month."""
    sub = await repository.get_subscription(session, tenant_id)
    if sub is None:
        start, end = _calendar_month(now)
        choice = PlanChoice(tenant_id, entitlements.catalog.default_plan, frozenset())
    else:
        start, end = sub.current_period_start, sub.current_period_end
        choice = PlanChoice(tenant_id, sub.plan, frozenset(sub.addons or ()))
    used = (await repository.usage_totals(session, tenant_id, start, end)).get(AI_TOKENS, 0)
    return Period(sub, start, end, entitlements.grant_for(choice, sub), used)


def ai_price(catalog: Catalog, period: Period) -> MeteredPrice | None:
    return catalog.plan(period.grant.plan).metered.get(AI_TOKENS)


async def prepaid_total(session: AsyncSession, tenant_id: str, reference: str) -> int:
    """What the wallet has paid for the period's AI overage so far (positive)."""
    query = select(func.coalesce(func.sum(WalletEntry.amount), 0)).where(
        WalletEntry.tenant_id == tenant_id,
        WalletEntry.kind == PREPAID_KIND,
        WalletEntry.reference == reference,
    )
    return -int((await session.execute(query)).scalar_one())


async def settle_ai(
    session: AsyncSession, entitlements: BillingEntitlements, tenant_id: str, now: datetime
) -> int:
    """Debit the wallet up to the period's AI overage charge; answers the amount debited."""
    sub = await repository.get_subscription(session, tenant_id)
    if sub is None:
        return 0  # no wallet currency, no invoice to credit: nothing is prepaid
    await ledger.lock_wallet(session, tenant_id, sub.currency, now)  # the one lock order
    period = await current_period(session, entitlements, tenant_id, now)
    if period.sub is None or period.free or period.reference is None:
        return 0
    target = overage_charge(
        ai_price(entitlements.catalog, period), period.grant.ai_tokens, period.used
    )
    paid = await prepaid_total(session, tenant_id, period.reference)
    amount = min(target - paid, await ledger.available(session, tenant_id))
    if amount <= 0:
        return 0
    posting = ledger.Posting(
        tenant_id=tenant_id,
        key=f"{PREPAID_KIND}:{period.reference}:{paid + amount}",
        kind=PREPAID_KIND,
        amount=-amount,
        currency=sub.currency,
        description="AI tokens past the allowance, prepaid",
        reference=period.reference,
    )
    await ledger.post(session, posting, now, wallet_currency=sub.currency)
    return amount


class PrepaidSettler:
    """Runs ``settle_ai`` after each usage flush for the tenants that used AI tokens since
    (and retries the ones that failed), each in its own transaction."""

    def __init__(self, db: Database, entitlements: BillingEntitlements, meter: UsageMeter):
        self.db = db
        self.entitlements = entitlements
        self.meter = meter
        self._retry: set[str] = set()

    async def __call__(self) -> int:
        tenants, self._retry = self.meter.take_touched(AI_TOKENS) | self._retry, set()
        debited = 0
        for tenant_id in sorted(tenants):
            try:
                async with self.db.session_scope() as session:
                    debited += await settle_ai(
                        session, self.entitlements, tenant_id, self.entitlements.clock()
                    )
            except Exception as exc:  # the next flush tries again; the invoice is the backstop
                self._retry.add(tenant_id)
                log.warning("prepaid AI settlement failed", extra={"error": type(exc).__name__})
        return debited
