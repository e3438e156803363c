"""Customer-portal credentials: a single-use, short-lived link exchanged for a browser session.

The link carries 256 random bits; only their SHA-256 is stored, so a database leak reveals
no usable link. Opening the link consumes it atomically (``used_at`` set where it was null and
unexpired) and answers a browser-session token (an HttpOnly cookie) for the portal pages.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing.errors import ReturnUrlNotAllowed
from novaza_gateway.billing.models import PortalSession

SECTION = "billing"
BROWSER_SESSION = timedelta(minutes=30)


class SettingsSource(Protocol):
    """Tenant settings sections; ``app.py`` wires the tenants area's implementation."""

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...


def origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    try:
        port = parts.port
    except ValueError:
        return None
    suffix = f":{port}" if port and port != default else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{suffix}"


def check_return_url(return_url: str, allowed: list[str], gateway_url: str) -> str:
    """The return URL if its origin is the gateway's or one of the tenant's; else 422."""
    wanted = origin(return_url)
    permitted = {origin(o) for o in [*allowed, gateway_url]} - {None}
    if wanted is None or wanted not in permitted or "\\" in return_url:
        raise ReturnUrlNotAllowed(details={"allowedOrigins": sorted(o for o in permitted if o)})
    return return_url


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: AsyncSession,
    tenant_id: str,
    kind: str,
    return_url: str | None,
    now: datetime,
    ttl: timedelta,
) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires = now + ttl
    session.add(
        PortalSession(
            token_hash=_hash(token),
            kind=kind,
            tenant_id=tenant_id,
            return_url=return_url,
            created_at=now,
            expires_at=expires,
        )
    )
    return token, expires


async def redeem_link(session: AsyncSession, token: str, now: datetime) -> PortalSession | None:
    """Consume a link: exactly one caller wins, and only before it expires."""
    result = await session.execute(
        update(PortalSession)
        .where(
            PortalSession.token_hash == _hash(token),
            PortalSession.kind == "link",
            PortalSession.used_at.is_(None),
            PortalSession.expires_at > now,
        )
        .values(used_at=now)
        .returning(PortalSession.tenant_id, PortalSession.return_url)
    )
    row = result.first()
    if row is None:
        return None
    return PortalSession(tenant_id=row[0], return_url=row[1])


async def browser_session(session: AsyncSession, token: str, now: datetime) -> PortalSession | None:
    found = await session.get(PortalSession, _hash(token))
    if found is None or found.kind != "browser" or found.expires_at <= now:
        return None
    return found
