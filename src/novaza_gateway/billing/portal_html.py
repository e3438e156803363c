"""The customer portal's HTML: server-rendered, self-contained (inline CSS and SVG, no script,
no CDN), printable. Pure functions from API schemas to strings; every value is escaped."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Any

from novaza_gateway.billing.schemas import (
    EntitlementsOut,
    InvoiceOut,
    MeterUsage,
    PlanOut,
    SubscriptionOut,
    UsageOut,
    UsagePoint,
    WalletOut,
)

ZERO_DECIMAL = {"JPY", "KRW", "CLP", "ISK", "VND", "XAF", "XOF"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
background:#f4f6f9}
header{background:#123a5a;color:#fff;padding:14px 28px;display:flex;justify-content:space-between;
align-items:center}
header a{color:#fff}
main{max-width:980px;margin:0 auto;padding:20px 28px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:0 0 18px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
h1{font-size:20px;margin:0}h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;
border-bottom:1px solid #e3e7ee}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.tag{display:inline-block;border-radius:10px;padding:1px 9px;font-size:13px;background:#e7eef6}
.ok{background:#dff3e4}.warn{background:#fdecc8}.off{background:#f1f1f1;color:#777}
.muted{color:#5c6677;font-size:13px}.big{font-size:26px;font-weight:600}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:18px}
@media print{header a,.noprint{display:none}body{background:#fff}section{box-shadow:none}}
"""


def money(amount: int, currency: str) -> str:
    digits = 0 if currency in ZERO_DECIMAL else 2
    sign = "-" if amount < 0 else ""
    value = abs(amount) / (10**digits)
    return f"{sign}{value:,.{digits}f} {escape(currency)}"


def _date(value: Any) -> str:
    return escape(value.strftime("%Y-%m-%d")) if value is not None else "—"


def page(title: str, body: str, *, return_url: str | None = None, tenant: str = "") -> str:
    back = (
        f'<a class="noprint" href="{escape(return_url, quote=True)}">Return to the application</a>'
        if return_url
        else ""
    )
    who = f'<span class="muted" style="color:#cfe0ee">{escape(tenant)}</span>' if tenant else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Novaza billing</title><style>{CSS}</style></head><body>"
        f"<header><h1>Novaza billing {who}</h1>{back}</header><main>{body}</main></body></html>"
    )


def error_page(title: str, message: str) -> str:
    return page(
        title, f'<section role="alert"><h2>{escape(title)}</h2><p>{escape(message)}</p></section>'
    )


def _bar(used: int, included: int) -> str:
    share = 0.0 if included <= 0 else min(1.0, used / included)
    colour = "#c0392b" if included and used > included else "#2e86c1"
    return (
        f'<svg width="220" height="12" role="img" aria-label="{used} of {included}">'
        '<rect width="220" height="12" rx="6" fill="#e3e7ee"/>'
        f'<rect width="{220 * share:.1f}" height="12" rx="6" fill="{colour}"/></svg>'
    )


def _days(meter: MeterUsage, start: datetime, end: datetime) -> list[UsagePoint]:
    """The period's days, zero where nothing was recorded (at most 62)."""
    recorded = {p.start.date(): p.quantity for p in meter.series}
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days: list[UsagePoint] = []
    while day < end and len(days) < 62:
        days.append(UsagePoint(start=day, quantity=recorded.get(day.date(), 0)))
        day += timedelta(days=1)
    return days


def chart(meter: MeterUsage, start: datetime, end: datetime) -> str:
    """Daily bars of one meter over the period, as inline SVG."""
    if not meter.series:
        return '<p class="muted">No usage recorded in this period yet.</p>'
    points = _days(meter, start, end) or meter.series
    peak = max(p.quantity for p in points) or 1
    width, height, gap = 640, 140, 2
    step = width / max(len(points), 1)
    bars = []
    for i, p in enumerate(points):
        h = max(1.0, (height - 20) * p.quantity / peak)
        label = f"{p.start:%Y-%m-%d}: {p.quantity}"
        bars.append(
            f'<rect x="{i * step:.1f}" y="{height - 20 - h:.1f}" width="{max(step - gap, 1):.1f}"'
            f' height="{h:.1f}" fill="#2e86c1"><title>{escape(label)}</title></rect>'
        )
    first, last = points[0].start, points[-1].start
    return (
        f'<svg class="chart" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(meter.name)} per day">{"".join(bars)}'
        f'<text x="0" y="{height - 4}" font-size="11" fill="#5c6677">{first:%b %d}</text>'
        f'<text x="{width}" y="{height - 4}" font-size="11" fill="#5c6677" text-anchor="end">'
        f"{last:%b %d} · peak {peak}</text></svg>"
    )


def _plan_section(sub: SubscriptionOut | None, plan: PlanOut | None, ent: EntitlementsOut) -> str:
    if sub is None or plan is None:
        return "<section><h2>Plan</h2><p>No subscription yet.</p></section>"
    status_class = {"active": "ok", "trialing": "ok", "past_due": "warn"}.get(sub.status, "off")
    features = "".join(
        f'<span class="tag {"ok" if f.enabled else "off"}">{escape(f.addon)}</span> '
        for f in ent.features
    )
    grace = (
        f'<p class="muted">Clinical add-ons stay on until {_date(ent.grace_until)}.</p>'
        if ent.grace_until
        else ""
    )
    return (
        '<section id="plan"><h2>Plan</h2>'
        f'<p><span class="big">{escape(plan.name)}</span> '
        f'<span class="tag {status_class}">{escape(sub.status)}</span></p>'
        f"<p>{money(sub.recurring_price.amount, sub.recurring_price.currency)} per "
        f"{escape(plan.interval)} · current period {_date(sub.current_period_start)} &ndash; "
        f"{_date(sub.current_period_end)}</p>"
        f"<p>Add-ons: {features or '<span class=muted>none</span>'}</p>{grace}"
        f'<p class="muted">Rate limit {ent.rate_limit.requests_per_second:g} requests/s, '
        f"burst {ent.rate_limit.burst}</p></section>"
    )


def _usage_section(usage: UsageOut) -> str:
    rows = "".join(
        f"<tr><td>{escape(m.name)}</td><td class=num>{m.used_this_period:,}</td>"
        f"<td class=num>{m.included:,}</td><td>{_bar(m.used_this_period, m.included)}</td></tr>"
        for m in usage.meters
    )
    charts = "".join(
        f"<h3 style='font-size:15px'>{escape(m.name)} per day</h3>"
        f"{chart(m, usage.period_start, usage.period_end)}"
        for m in usage.meters
        if m.series
    )
    return (
        '<section id="usage"><h2>Usage this period</h2><table><tr><th>meter</th>'
        "<th class=num>used</th><th class=num>included</th><th></th></tr>"
        f"{rows}</table>{charts}</section>"
    )


INVOICE_TAG = {"paid": "ok", "open": "warn", "uncollectible": "warn", "void": "off"}


def _invoice_status(invoice: InvoiceOut) -> str:
    tag = INVOICE_TAG.get(invoice.status, "")
    return f'<span class="tag {tag}">{escape(invoice.status)}</span>'


def _invoices_section(invoices: list[InvoiceOut]) -> str:
    rows = "".join(
        f"<tr><td><a href='/billing/portal/invoices/{escape(i.id, quote=True)}'>"
        f"{escape(str(i.number) if i.number else 'Upcoming')}</a></td>"
        f"<td>{_date(i.period_start)} &ndash; {_date(i.period_end)}</td>"
        f"<td>{_invoice_status(i)}</td>"
        f"<td class=num>{money(i.total, i.currency)}</td></tr>"
        for i in invoices
    )
    return (
        '<section id="invoices"><h2>Invoices</h2><table><tr><th>invoice</th><th>period</th>'
        f"<th>status</th><th class=num>total</th></tr>{rows}</table></section>"
    )


def _wallet_section(wallet: WalletOut) -> str:
    rows = "".join(
        f"<tr><td>{_date(t.created_at)}</td><td>{escape(t.description)}</td>"
        f"<td class=num>{money(t.amount, t.currency)}</td>"
        f"<td class=num>{money(t.balance_after, t.currency)}</td></tr>"
        for t in wallet.transactions
    )
    return (
        '<section id="wallet"><h2>Wallet</h2>'
        f'<p class="big">{money(wallet.balance.amount, wallet.balance.currency)}</p>'
        "<table><tr><th>date</th><th>description</th><th class=num>amount</th>"
        f"<th class=num>balance</th></tr>{rows}</table></section>"
    )


def overview(
    tenant: str,
    sub: SubscriptionOut | None,
    plan: PlanOut | None,
    ent: EntitlementsOut,
    usage: UsageOut,
    invoices: list[InvoiceOut],
    wallet: WalletOut,
    return_url: str | None,
) -> str:
    body = (
        _plan_section(sub, plan, ent)
        + _usage_section(usage)
        + f'<div class="grid">{_invoices_section(invoices)}{_wallet_section(wallet)}</div>'
    )
    return page("Overview", body, return_url=return_url, tenant=tenant)


def _transitions(invoice: InvoiceOut) -> str:
    notes = ""
    if invoice.marked_uncollectible_at is not None:
        notes += f" · marked uncollectible {_date(invoice.marked_uncollectible_at)}"
    if invoice.voided_at is not None:
        notes += f" · voided {_date(invoice.voided_at)} (not owed)"
    return notes


def invoice_page(tenant: str, invoice: InvoiceOut, return_url: str | None) -> str:
    title = f"Invoice {invoice.number}" if invoice.number else "Upcoming invoice (draft)"
    rows = "".join(
        f"<tr><td>{escape(line.description)}</td><td class=num>{line.quantity:,}</td>"
        f"<td class=num>{escape(line.unit_amount)}</td>"
        f"<td class=num>{money(line.amount, invoice.currency)}</td></tr>"
        for line in invoice.lines
    )
    body = (
        f'<section id="invoice"><h2>{escape(title)}</h2>'
        f"<p>Period {_date(invoice.period_start)} &ndash; {_date(invoice.period_end)} · "
        f"status {_invoice_status(invoice)} · issued "
        f"{_date(invoice.issued_at)} · paid {_date(invoice.paid_at)}{_transitions(invoice)}</p>"
        "<table><tr><th>item</th><th class=num>quantity</th>"
        "<th class=num>unit (minor units)</th><th class=num>amount</th></tr>"
        f"{rows}<tr><th colspan=3>Subtotal</th><td class=num>"
        f"{money(invoice.subtotal, invoice.currency)}</td></tr>"
        f"<tr><th colspan=3>Paid from wallet</th><td class=num>"
        f"{money(invoice.amount_paid_wallet, invoice.currency)}</td></tr>"
        f"<tr><th colspan=3>Total</th><td class=num><b>{money(invoice.total, invoice.currency)}"
        f"</b></td></tr><tr><th colspan=3>Amount due</th><td class=num>"
        f"{money(invoice.amount_due, invoice.currency)}</td></tr></table>"
        '<p class="noprint"><a href="/billing/portal/">Back to the overview</a></p></section>'
    )
    return page(title, body, return_url=return_url, tenant=tenant)
