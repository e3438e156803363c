"""Invoices: compose a period's lines, close a period, pay from the wallet.

Lines carry their prices (a snapshot: a catalogue change never alters an issued invoice).
Usage recorded for an hour of an already-invoiced period ("late usage") is never dropped:
the next invoice charges it at the margin, at the price frozen on the invoice it belongs to.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import repository
from novaza_gateway.billing import wallet as ledger
from novaza_gateway.billing.catalog import Catalog, MeteredPrice
from novaza_gateway.billing.models import Invoice, PendingItem, Subscription, UsageRecord
from novaza_gateway.billing.periods import add_months
from novaza_gateway.billing.prepaid import period_reference, prepaid_total
from novaza_gateway.billing.pricing import late_charge, metered_charge
from novaza_gateway.core import audit
from novaza_gateway.core.audit import Actor

Line = dict[str, Any]


def _decimal(value: Fraction) -> str:
    exact = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("1e-6"))
    return format(exact.normalize(), "f")  # "0.008", "49900"


def _line(kind: str, description: str, quantity: int, unit: Fraction | int, amount: int) -> Line:
    unit = Fraction(unit)
    return {
        "kind": kind,
        "description": description,
        "quantity": quantity,
        "unitAmount": _decimal(unit),
        "amount": amount,
    }


def recurring_lines(catalog: Catalog, sub: Subscription) -> list[Line]:
    plan = catalog.plan(sub.plan)
    lines = [_line("base", f"{plan.name} plan", 1, plan.price, plan.price)]
    for addon in sorted(set(sub.addons or ()) - set(plan.addons_included)):
        if addon in catalog.addons:
            price = catalog.addons[addon].price
            lines.append(_line("addon", f"{catalog.addons[addon].name} add-on", 1, price, price))
    return lines


def metered_lines(catalog: Catalog, sub: Subscription, used: dict[str, int]) -> list[Line]:
    lines = []
    for meter, price in sorted(catalog.plan(sub.plan).metered.items()):
        quantity = used.get(meter, 0)
        charge = metered_charge(price, quantity)
        line = _line(
            "metered",
            catalog.meters[meter].name,
            charge.quantity,
            charge.unit_amount,
            charge.amount,
        )
        line.update(meter=meter, used=quantity, included=price.included)
        line["price"] = price.model_dump(mode="json")
        lines.append(line)
    return lines


async def late_lines(session: AsyncSession, tenant_id: str, before: datetime) -> list[Line]:
    """Charges for usage that arrived after its period's invoice was issued."""
    late = await repository.uninvoiced_usage(session, tenant_id, before)
    lines = []
    for meter, hour, quantity in late:
        invoice = await repository.invoice_covering(session, tenant_id, hour)
        if invoice is None or invoice.status == "void":  # a void period is not owed at all
            continue
        billed = next((ln for ln in invoice.lines if ln.get("meter") == meter), None)
        if billed is None or billed.get("trial"):  # no price for it then, or a free trial
            continue
        price = MeteredPrice.model_validate(billed["price"])
        invoiced = await repository.invoiced_quantity(
            session, tenant_id, meter, invoice.period_start, invoice.period_end
        )
        amount = late_charge(price, invoiced, quantity)
        line = _line(
            "late_usage",
            f"Late usage: {billed['description']} for invoice {invoice.number}",
            quantity,
            Fraction(amount, quantity) if quantity else 0,
            amount,
        )
        line.update(meter=meter, invoice=invoice.id)
        lines.append(line)
    return _merge_late(lines)


def _merge_late(lines: list[Line]) -> list[Line]:
    merged: dict[tuple[str, str], Line] = {}
    for line in lines:
        key = (line["meter"], line["invoice"])
        if key in merged:
            merged[key]["quantity"] += line["quantity"]
            merged[key]["amount"] += line["amount"]
        else:
            merged[key] = line
    return list(merged.values())


async def prepaid_lines(session: AsyncSession, sub: Subscription) -> list[Line]:
    """The AI overage the wallet already paid during the period, credited back: the
    metered line charges it in full, so the invoice owes only what was not prepaid."""
    paid = await prepaid_total(session, sub.tenant_id, period_reference(sub))
    if not paid:
        return []
    return [_line("prepaid", "AI usage prepaid from the wallet", 1, -paid, -paid)]


def pending_lines(items: Sequence[PendingItem]) -> list[Line]:
    return [_line(item.kind, item.description, 1, item.amount, item.amount) for item in items]


@dataclass
class Draft:
    lines: list[Line]
    subtotal: int

    @property
    def total(self) -> int:
        return max(0, self.subtotal)


def in_trial(sub: Subscription, period_end: datetime) -> bool:
    return sub.trial_end is not None and period_end <= sub.trial_end


def _free(line: Line) -> Line:
    return {**line, "description": f"{line['description']} (free trial)", "amount": 0,
            "unitAmount": "0", "trial": True}  # fmt: skip


async def compose(
    session: AsyncSession, catalog: Catalog, sub: Subscription, start: datetime, end: datetime
) -> Draft:
    used = await repository.usage_totals(session, sub.tenant_id, start, end)
    lines = recurring_lines(catalog, sub) + metered_lines(catalog, sub, used)
    if in_trial(sub, end):
        lines = [_free(line) for line in lines]
    lines += await late_lines(session, sub.tenant_id, start)
    lines += pending_lines(await repository.open_pending_items(session, sub.tenant_id))
    lines += await prepaid_lines(session, sub)
    return Draft(lines, sum(int(line["amount"]) for line in lines))


async def next_number(session: AsyncSession, tenant_id: str) -> int:
    query = select(func.coalesce(func.max(Invoice.number), 0)).where(Invoice.tenant_id == tenant_id)
    return int((await session.execute(query)).scalar_one()) + 1


async def close_period(
    session: AsyncSession, catalog: Catalog, tenant_id: str, now: datetime
) -> Invoice | None:
    """Finalize the tenant's ended period: issue, pay from the wallet, advance the period.

    Locks the wallet row before the subscription row, the order credits and floor changes
    take them (the other order deadlocks against a concurrent credit on PostgreSQL)."""
    sub = await repository.get_subscription(session, tenant_id)
    if sub is None or sub.status == "canceled" or sub.current_period_end > now:
        return None
    await ledger.lock_wallet(session, tenant_id, sub.currency, now)
    sub = await repository.get_subscription(session, tenant_id, for_update=True)
    if sub is None or sub.status == "canceled" or sub.current_period_end > now:
        return None
    start, end = sub.current_period_start, sub.current_period_end
    draft = await compose(session, catalog, sub, start, end)
    invoice = Invoice(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        number=await next_number(session, tenant_id),
        status="open",
        period_start=start,
        period_end=end,
        currency=sub.currency,
        catalog_version=catalog.version,
        lines=draft.lines,
        subtotal=draft.subtotal,
        total=draft.total,
        amount_paid_wallet=0,
        created_at=now,
        issued_at=now,
    )
    session.add(invoice)
    await session.flush()
    await _claim(session, tenant_id, invoice.id, end)
    await repository.mark_catalog_used(session, catalog.version, now)
    if draft.subtotal < 0:  # more credit than charges: the rest goes to the wallet
        await ledger.post(
            session, _credit_note(invoice, -draft.subtotal), now, wallet_currency=sub.currency
        )
    await settle(session, sub, invoice, now)
    sub.updated_at = now
    if sub.cancel_at is not None and sub.cancel_at <= end:  # the final invoice
        sub.status = "canceled"
        return invoice
    if in_trial(sub, end):
        sub.status = "active"
    sub.current_period_start = end
    anchor = sub.trial_end or sub.created_at
    sub.current_period_end = add_months(end, 1, anchor_day=anchor.day)
    return invoice


async def _claim(session: AsyncSession, tenant_id: str, invoice_id: str, end: datetime) -> None:
    await session.execute(
        update(UsageRecord)
        .where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.invoice_id.is_(None),
            UsageRecord.hour < end,
        )
        .values(invoice_id=invoice_id)
    )
    await session.execute(
        update(PendingItem)
        .where(PendingItem.tenant_id == tenant_id, PendingItem.invoice_id.is_(None))
        .values(invoice_id=invoice_id)
    )


def _credit_note(invoice: Invoice, amount: int) -> ledger.Posting:
    return ledger.Posting(
        tenant_id=invoice.tenant_id,
        key=f"invoice-credit:{invoice.id}",
        kind="credit_note",
        amount=amount,
        currency=invoice.currency,
        description=f"Credit from invoice {invoice.number}",
        reference=invoice.id,
    )


async def settle(session: AsyncSession, sub: Subscription, invoice: Invoice, now: datetime) -> bool:
    """Pay an open or uncollectible invoice from the wallet when the wallet covers it. An
    open invoice it does not cover makes the tenant past due (from the first unpaid invoice
    on); an uncollectible one was written off for dunning and changes nothing."""
    if invoice.status not in ("open", "uncollectible"):
        return invoice.status == "paid"
    if invoice.total > 0 and await ledger.available(session, invoice.tenant_id) < invoice.total:
        if invoice.status == "open" and sub.status in ("active", "trialing"):
            sub.status, sub.past_due_since = "past_due", now
        return False
    if invoice.total > 0:
        await ledger.post(
            session,
            ledger.Posting(
                tenant_id=invoice.tenant_id,
                key=f"invoice:{invoice.id}",
                kind="invoice_payment",
                amount=-invoice.total,
                currency=invoice.currency,
                description=f"Invoice {invoice.number}",
                reference=invoice.id,
            ),
            now,
            wallet_currency=sub.currency,
        )
    invoice.status, invoice.paid_at, invoice.amount_paid_wallet = "paid", now, invoice.total
    return True


async def settle_open(
    session: AsyncSession, tenant_id: str, now: datetime, *, recovered_by: Actor | None = None
) -> bool:
    """After the wallet can pay more (a credit, a lower floor): pay what is open, oldest
    first; with ``recovered_by`` (a credit: money came in) then what was written off, oldest
    first, each recovery audited. Answers whether the subscription's status changed."""
    sub = await repository.get_subscription(session, tenant_id, for_update=True)
    if sub is None:
        return False
    before = (sub.status, sub.past_due_since)
    for invoice in await repository.open_invoices(session, tenant_id):
        if not await settle(session, sub, invoice, now):
            return await follow_open_invoices(session, sub, now, before)
    if recovered_by is not None:
        for invoice in await repository.uncollectible_invoices(session, tenant_id):
            if not await settle(session, sub, invoice, now):
                break
            audit.record(
                session,
                recovered_by,
                "billing.invoice.paid",
                "invoice",
                invoice.id,
                tenant_id=tenant_id,
                before={"status": "uncollectible", "number": invoice.number},
                after={"status": "paid", "number": invoice.number, "amountPaid": invoice.total},
            )
    return await follow_open_invoices(session, sub, now, before)


async def follow_open_invoices(
    session: AsyncSession,
    sub: Subscription,
    now: datetime,
    before: tuple[str, datetime | None] | None = None,
) -> bool:
    """A past-due subscription is past due since its oldest invoice still open, and active
    again when none is (paid, void or uncollectible). Answers whether that changed status or
    grace (``before``: what it was when the caller started)."""
    was = before or (sub.status, sub.past_due_since)
    if sub.status == "past_due":
        still_open = await repository.open_invoices(session, sub.tenant_id)
        if not still_open:
            sub.status, sub.past_due_since = "active", None
        else:
            oldest = still_open[0]
            sub.past_due_since = oldest.issued_at or oldest.created_at
    if (sub.status, sub.past_due_since) == was:
        return False
    sub.updated_at = now
    return True
