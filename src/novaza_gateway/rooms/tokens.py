"""Personeo access tokens: HS256 JWTs the Personeo service verifies with a shared secret.

Modelled on LiveKit and Twilio access tokens: a short-lived credential naming who (``sub``),
for which tenant, and which rooms the bearer may join (the ``rooms`` grant). Pure: no I/O
except the one-time development secret in the data directory.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from novaza_gateway.core.ids import new_id
from novaza_gateway.core.secretfile import create_once

AUDIENCE = "personeo"
ALGORITHM = "HS256"
DEV_SECRET_FILE = "personeo-token-secret"  # noqa: S105  # a file name


def dev_secret(data_dir: Path) -> bytes:
    """A secret generated once in the data dir (0600), the first of concurrent workers wins."""
    content = secrets.token_urlsafe(48).encode()
    return create_once(data_dir / DEV_SECRET_FILE, content).strip()


@dataclass(frozen=True, slots=True)
class RoomGrant:
    room: str  # the gateway's room id
    encounter: str  # the encounter's visit number
    remote_id: str | None  # Personeo's id, in upstream mode

    def claim(self) -> dict[str, str]:
        claim = {"room": self.room, "encounter": self.encounter}
        if self.remote_id is not None:
            claim["remoteId"] = self.remote_id
        return claim


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    jti: str
    expires_at: datetime


def mint(
    secret: bytes,
    *,
    issuer: str,
    subject: str,
    tenant_id: str,
    tenant_slug: str,
    grants: list[RoomGrant],
    now: datetime,
    ttl_seconds: int,
) -> AccessToken:
    jti = new_id()
    expires_at = now + timedelta(seconds=ttl_seconds)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": subject,
        "tenant_id": tenant_id,
        "tenant": tenant_slug,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": jti,
        "rooms": [grant.claim() for grant in grants],
    }
    token = jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"typ": "JWT"})
    return AccessToken(token, jti, expires_at.replace(microsecond=0))
