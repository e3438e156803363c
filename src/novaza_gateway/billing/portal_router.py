"""``/billing/portal``: the customer portal opened from a portal-session link (HTML, no token).

The link is single use: opening it sets an HttpOnly browser-session cookie and redirects to
the overview, so a reload or a shared screenshot URL never re-spends it. Pages send a strict
Content-Security-Policy (nothing external, no script), ``no-store`` and ``no-referrer``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from novaza_gateway.billing import portal_html, portal_pages
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.portal import BROWSER_SESSION
from novaza_gateway.core.deps import SessionDep
from novaza_gateway.core.errors import ApiError
from novaza_gateway.core.policy import policy
from novaza_gateway.core.tenancy import TenantCache

portal_router = APIRouter(prefix="/billing/portal", tags=["billing portal"])

PUBLIC = policy(public=True)
COOKIE = "novaza_portal"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' "
    "data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
Token = Annotated[str, Path(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
SessionCookie = Annotated[str | None, Cookie(alias=COOKIE)]


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _billing(request: Request) -> tuple[BillingArea, TenantCache]:
    return request.app.state.billing, request.app.state.tenant_cache


EXPIRED = (
    "This billing link has expired",
    "Your session has ended. Open the billing portal again from your application.",
)


@portal_router.get("/s/{token}", **PUBLIC, include_in_schema=False)
async def open_link(request: Request, token: Token, session: SessionDep) -> Response:
    billing, _ = _billing(request)
    cookie = await portal_pages.open_link(session, billing, token)
    if cookie is None:
        return _html(
            portal_html.error_page(
                "This billing link can no longer be used",
                "Portal links work once and for a few minutes. It was already opened, or it "
                "has expired. Open the billing portal again from your application.",
            ),
            status=410,
        )
    response = RedirectResponse("/billing/portal/", status_code=303, headers=HEADERS)
    secure = request.app.state.settings.base_url.startswith("https://")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(BROWSER_SESSION.total_seconds()),
        path="/billing/portal",
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    return response


@portal_router.get("/", **PUBLIC, include_in_schema=False)
async def overview(request: Request, session: SessionDep, cookie: SessionCookie = None) -> Response:
    billing, tenants = _billing(request)
    who = await portal_pages.visitor(session, billing, tenants, cookie)
    if who is None:
        return _html(portal_html.error_page(*EXPIRED), status=401)
    return _html(await portal_pages.overview(session, billing, who))


@portal_router.get("/invoices/{invoice_id}", **PUBLIC, include_in_schema=False)
async def invoice(
    request: Request,
    session: SessionDep,
    invoice_id: Annotated[str, Path(max_length=36)],
    cookie: SessionCookie = None,
) -> Response:
    billing, tenants = _billing(request)
    who = await portal_pages.visitor(session, billing, tenants, cookie)
    if who is None:
        return _html(portal_html.error_page(*EXPIRED), status=401)
    try:
        return _html(await portal_pages.invoice(session, billing, who, invoice_id))
    except ApiError as error:
        return _html(portal_html.error_page("Invoice not found", error.message), error.status)
