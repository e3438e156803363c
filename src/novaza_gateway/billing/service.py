"""Billing for the tenant's own API (plans, subscriptions, entitlements, invoices, wallet)
and the platform's wallet credits. Nothing here commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import invoices, repository, transitions, views
from novaza_gateway.billing import wallet as ledger
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.closing import Announce
from novaza_gateway.billing.errors import InvoiceNotFound, SubscriptionNotFound
from novaza_gateway.billing.models import Invoice, WalletEntry
from novaza_gateway.billing.schemas import (
    CreditIn,
    CreditOut,
    EntitlementsOut,
    FloorIn,
    InvoiceLineOut,
    InvoiceOut,
    Money,
    OverridesIn,
    PlanList,
    SubscriptionList,
    WalletEntryOut,
    WalletOut,
)
from novaza_gateway.core import audit
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import after_commit
from novaza_gateway.core.entitlements import PlanChoice
from novaza_gateway.core.pagination import Page, decode_cursor, encode_cursor
from novaza_gateway.core.tenancy import TenantContext


def list_plans(billing: BillingArea) -> PlanList:
    return views.plans_out(billing.catalog)


async def list_subscriptions(
    session: AsyncSession, billing: BillingArea, tenant: TenantContext
) -> SubscriptionList:
    sub = await repository.get_subscription(session, tenant.id)
    data = [views.subscription_out(billing.catalog, sub)] if sub is not None else []
    return SubscriptionList(data=data)


def choice_of(tenant: TenantContext) -> PlanChoice:
    return PlanChoice(tenant.id, tenant.plan, tenant.addons, tenant.rate_limit_override)


async def entitlements(
    session: AsyncSession, billing: BillingArea, tenant: TenantContext
) -> EntitlementsOut:
    now = billing.entitlements.clock()
    sub = await repository.get_subscription(session, tenant.id)
    granted = billing.entitlements.grant_for(choice_of(tenant), sub)
    used: dict[str, int] = {}
    if sub is not None:
        used = await repository.usage_totals(
            session, tenant.id, sub.current_period_start, sub.current_period_end
        )
    return views.entitlements_out(granted, used, now)


# ----------------------------------------------------------------------------- invoices

UPCOMING = transitions.UPCOMING  # the current period's draft, computed on every read


def invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut.model_validate(
        {
            "id": invoice.id,
            "number": invoice.number,
            "status": invoice.status,
            "period_start": invoice.period_start,
            "period_end": invoice.period_end,
            "currency": invoice.currency,
            "lines": invoice.lines,
            "subtotal": invoice.subtotal,
            "total": invoice.total,
            "amount_paid_wallet": invoice.amount_paid_wallet,
            "amount_due": 0 if invoice.status in ("paid", "void") else invoice.total,
            "catalog_version": invoice.catalog_version,
            "issued_at": invoice.issued_at,
            "paid_at": invoice.paid_at,
            "voided_at": invoice.voided_at,
            "marked_uncollectible_at": invoice.marked_uncollectible_at,
        }
    )


async def upcoming(session: AsyncSession, billing: BillingArea, tenant_id: str) -> InvoiceOut:
    sub = await repository.get_subscription(session, tenant_id)
    if sub is None:
        raise SubscriptionNotFound()
    start, end = sub.current_period_start, sub.current_period_end
    draft = await invoices.compose(session, billing.catalog, sub, start, end)
    return InvoiceOut(
        id=UPCOMING,
        number=None,
        status="draft",
        period_start=start,
        period_end=end,
        currency=sub.currency,
        lines=[InvoiceLineOut.model_validate(line) for line in draft.lines],
        subtotal=draft.subtotal,
        total=draft.total,
        amount_paid_wallet=0,
        amount_due=draft.total,
        catalog_version=billing.catalog.version,
        issued_at=None,
        paid_at=None,
    )


async def list_invoices(
    session: AsyncSession,
    billing: BillingArea,
    tenant: TenantContext,
    *,
    cursor: str | None,
    limit: int,
) -> Page[InvoiceOut]:
    """Newest first; the first page starts with the upcoming draft (beyond ``limit``)."""
    before = int(decode_cursor(cursor, 1)[0]) if cursor else None
    rows = await repository.invoice_page(session, tenant.id, before_number=before, limit=limit + 1)
    data = [invoice_out(row) for row in rows[:limit]]
    if cursor is None and await repository.get_subscription(session, tenant.id) is not None:
        data.insert(0, await upcoming(session, billing, tenant.id))
    next_cursor = encode_cursor(rows[limit - 1].number) if len(rows) > limit else None
    return Page[InvoiceOut](data=data, next_cursor=next_cursor)


async def get_invoice(
    session: AsyncSession, billing: BillingArea, tenant: TenantContext, invoice_id: str
) -> InvoiceOut:
    if invoice_id == UPCOMING:
        return await upcoming(session, billing, tenant.id)
    invoice = await repository.get_invoice(session, tenant.id, invoice_id)
    if invoice is None:
        raise InvoiceNotFound()
    return invoice_out(invoice)


# ----------------------------------------------------------------------------- wallet


def entry_out(entry: WalletEntry) -> WalletEntryOut:
    return WalletEntryOut.model_validate(entry, from_attributes=True)


async def get_wallet(
    session: AsyncSession, billing: BillingArea, tenant: TenantContext, limit: int
) -> WalletOut:
    wallet = await ledger.get_wallet(session, tenant.id)
    currency = wallet.currency if wallet else billing.catalog.currency
    entries = await ledger.recent_entries(session, tenant.id, limit)
    return WalletOut(
        balance=Money(amount=wallet.balance if wallet else 0, currency=currency),
        floor=Money(amount=wallet.floor if wallet else 0, currency=currency),
        transactions=[entry_out(e) for e in entries],
    )


def _announce_after_commit(session: AsyncSession, announce: Announce, tenant_id: str) -> None:
    async def changed() -> None:
        await announce(tenant_id)

    after_commit(session, changed)


async def credit(
    session: AsyncSession,
    billing: BillingArea,
    tenant_id: str,
    key: str,
    body: CreditIn,
    actor: Actor,
    announce: Announce,
) -> tuple[CreditOut, bool]:
    """Top up or grant; the same key answers the first result. Pays what is open, then
    what was written off (audited as recovered by ``actor``)."""
    now = billing.entitlements.clock()
    posting = ledger.Posting(
        tenant_id=tenant_id,
        key=f"credit:{key}",
        kind=body.kind,
        amount=body.amount,
        currency=body.currency,
        description=body.description,
        request=body.model_dump(mode="json"),
    )
    entry, created = await ledger.post(
        session, posting, now, wallet_currency=billing.catalog.currency
    )
    if created and await invoices.settle_open(session, tenant_id, now, recovered_by=actor):
        _announce_after_commit(session, announce, tenant_id)
    # The balance right after this credit (before any invoice it paid): the same on a replay.
    balance = Money(amount=entry.balance_after, currency=entry.currency)
    return CreditOut(entry=entry_out(entry), balance=balance), created


async def set_floor(
    session: AsyncSession,
    billing: BillingArea,
    tenant: TenantContext,
    body: FloorIn,
    actor: Actor,
    announce: Announce,
) -> WalletOut:
    """Set how far below zero debits may take the balance. A lower floor pays what is open
    (oldest first) as a credit would; written-off invoices wait for real money."""
    now = billing.entitlements.clock()
    wallet, previous = await ledger.set_floor(
        session, tenant.id, body.floor, billing.catalog.currency, now
    )
    if body.floor != previous:
        state = {"balance": wallet.balance, "entries": wallet.entries}
        audit.record(
            session,
            actor,
            "billing.wallet.floor",
            "wallet",
            tenant.id,
            tenant_id=tenant.id,
            before={"floor": previous, **state},
            after={"floor": body.floor, **state},
        )
        if body.floor < previous and await invoices.settle_open(session, tenant.id, now):
            _announce_after_commit(session, announce, tenant.id)
    return await get_wallet(session, billing, tenant, limit=20)


# ----------------------------------------------------------------------------- invoice status


async def transition_invoice(
    session: AsyncSession,
    billing: BillingArea,
    tenant: TenantContext,
    invoice_id: str,
    target: transitions.Target,
    actor: Actor,
    announce: Announce,
) -> InvoiceOut:
    """Void or write off an issued invoice; the same transition again answers it as is."""
    now = billing.entitlements.clock()
    invoice, changed = await transitions.transition(
        session, tenant.id, invoice_id, target, actor, now
    )
    if changed:
        _announce_after_commit(session, announce, tenant.id)
    return invoice_out(invoice)


# ----------------------------------------------------------------------------- overrides


async def set_overrides(
    session: AsyncSession,
    billing: BillingArea,
    tenant: TenantContext,
    body: OverridesIn,
    actor: Actor,
    announce: Announce,
) -> EntitlementsOut:
    billing.entitlements.validate(tenant.plan, body.addons)
    sub = await repository.get_subscription(session, tenant.id, for_update=True)
    if sub is None:
        raise SubscriptionNotFound()
    before = dict(sub.overrides or {})
    overrides: dict[str, Any] = {}
    if body.addons:
        overrides["addons"] = sorted(set(body.addons))
    if body.ai_tokens is not None:
        overrides["aiTokens"] = body.ai_tokens
    sub.overrides = overrides
    sub.updated_at = billing.entitlements.clock()
    audit.record(
        session,
        actor,
        "billing.overrides",
        "subscription",
        sub.id,
        tenant_id=tenant.id,
        before=before,
        after=overrides,
    )

    _announce_after_commit(session, announce, tenant.id)
    return await entitlements(session, billing, tenant)
