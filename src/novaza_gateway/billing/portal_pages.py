"""The customer portal: link -> browser session -> pages, from the same services as the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing import portal, portal_html, service, usage
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.schemas import PortalSessionIn, PortalSessionOut
from novaza_gateway.core.tenancy import TenantCache, TenantContext

LINK_PATH = "/billing/portal/s/"


async def create_link(
    session: AsyncSession,
    billing: BillingArea,
    tenant: TenantContext,
    body: PortalSessionIn,
    base_url: str,
) -> PortalSessionOut:
    return_url = None
    if body.return_url is not None:
        allowed: list[str] = []
        if billing.tenant_settings is not None:
            section = await billing.tenant_settings.section(tenant.id, portal.SECTION) or {}
            allowed = [str(o) for o in section.get("portalReturnOrigins", [])]
        return_url = portal.check_return_url(body.return_url, allowed, base_url)
    ttl = timedelta(seconds=billing.settings.portal_ttl_seconds)
    token, expires = portal.issue(
        session, tenant.id, "link", return_url, billing.entitlements.clock(), ttl
    )
    return PortalSessionOut(url=f"{base_url}{LINK_PATH}{token}", expires_at=expires)


@dataclass(frozen=True, slots=True)
class Visitor:
    tenant: TenantContext
    return_url: str | None


async def open_link(session: AsyncSession, billing: BillingArea, token: str) -> str | None:
    """A browser-session token for a valid, unused link; None when used or expired."""
    now = billing.entitlements.clock()
    link = await portal.redeem_link(session, token, now)
    if link is None:
        return None
    cookie, _ = portal.issue(
        session, link.tenant_id, "browser", link.return_url, now, portal.BROWSER_SESSION
    )
    return cookie


async def visitor(
    session: AsyncSession, billing: BillingArea, tenants: TenantCache, cookie: str | None
) -> Visitor | None:
    if not cookie:
        return None
    found = await portal.browser_session(session, cookie, billing.entitlements.clock())
    if found is None:
        return None
    tenant = await tenants.get(found.tenant_id)
    if tenant is None or tenant.status in ("deleted",):
        return None
    return Visitor(tenant, found.return_url)


async def overview(session: AsyncSession, billing: BillingArea, who: Visitor) -> str:
    tenant = who.tenant
    subs = await service.list_subscriptions(session, billing, tenant)
    sub = subs.data[0] if subs.data else None
    plans = {p.id: p for p in service.list_plans(billing).data}
    ent = await service.entitlements(session, billing, tenant)
    used = await usage.usage(
        session, billing, tenant, start=None, end=None, granularity="day", meter=None
    )
    invoices = await service.list_invoices(session, billing, tenant, cursor=None, limit=12)
    wallet = await service.get_wallet(session, billing, tenant, limit=10)
    return portal_html.overview(
        tenant.slug,
        sub,
        plans.get(sub.plan) if sub else None,
        ent,
        used,
        invoices.data,
        wallet,
        who.return_url,
    )


async def invoice(
    session: AsyncSession, billing: BillingArea, who: Visitor, invoice_id: str
) -> str:
    found = await service.get_invoice(session, billing, who.tenant, invoice_id)
    return portal_html.invoice_page(who.tenant.slug, found, who.return_url)
