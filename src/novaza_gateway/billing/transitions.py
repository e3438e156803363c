"""Invoice status after issue, as in Stripe: ``open`` -> ``void`` (not owed after all),
``open`` -> ``uncollectible`` (written off for dunning, still payable), ``uncollectible`` ->
``void``; ``uncollectible`` -> ``paid`` happens when a credit covers it (``invoices.settle_open``).

A transition locks the subscription row first — the lock a period close and a credit's
settlement take — so it never races a payment: an invoice a concurrent credit paid is
``paid`` here (409), a voided one is never paid. Repeating the transition the invoice already
went through answers it unchanged; each real one is audited and may end ``past_due``.
Nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import invoices, repository
from novaza_gateway.billing.errors import (
    InvoiceAlreadyPaid,
    InvoiceAlreadyVoid,
    InvoiceNotFinalized,
    InvoiceNotFound,
)
from novaza_gateway.billing.models import Invoice, Subscription
from novaza_gateway.core import audit
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.errors import ApiError

Target = Literal["void", "uncollectible"]

UPCOMING = "upcoming"
# target -> the statuses it may leave
ALLOWED: dict[Target, frozenset[str]] = {
    "void": frozenset({"open", "uncollectible"}),
    "uncollectible": frozenset({"open"}),
}


def refusal(invoice: Invoice, target: Target) -> ApiError:
    details = {"status": invoice.status, "transition": target}
    if invoice.status == "paid":
        return InvoiceAlreadyPaid(details=details)
    if invoice.status == "void":
        return InvoiceAlreadyVoid(details=details)
    return InvoiceNotFinalized(details=details)


def _snapshot(invoice: Invoice, sub: Subscription | None) -> dict[str, Any]:
    return {
        "status": invoice.status,
        "number": invoice.number,
        "total": invoice.total,
        "subscriptionStatus": sub.status if sub is not None else None,
    }


async def transition(
    session: AsyncSession,
    tenant_id: str,
    invoice_id: str,
    target: Target,
    actor: Actor,
    now: datetime,
) -> tuple[Invoice, bool]:
    """The invoice after the transition, and whether this call changed it."""
    if invoice_id == UPCOMING:
        raise InvoiceNotFinalized(details={"status": "draft", "transition": target})
    sub = await repository.get_subscription(session, tenant_id, for_update=True)
    invoice = await repository.get_invoice(session, tenant_id, invoice_id, for_update=True)
    if invoice is None:
        raise InvoiceNotFound()
    if invoice.status == target:
        return invoice, False
    if invoice.status not in ALLOWED[target]:
        raise refusal(invoice, target)
    before = _snapshot(invoice, sub)
    invoice.status = target
    if target == "void":
        invoice.voided_at = now
    else:
        invoice.marked_uncollectible_at = now
    if sub is not None:
        await session.flush()  # the next query must see this invoice no longer open
        await invoices.follow_open_invoices(session, sub, now)
    audit.record(
        session,
        actor,
        f"billing.invoice.{target}",
        "invoice",
        invoice.id,
        tenant_id=tenant_id,
        before=before,
        after=_snapshot(invoice, sub),
    )
    return invoice, True
