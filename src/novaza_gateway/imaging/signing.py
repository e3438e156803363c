"""Signed viewer URLs: short-lived HMAC-SHA256 tokens that read one study of one tenant.

Token: ``nvzs1.<payload>.<signature>``, both base64url. The signature is HMAC-SHA256 with the
key named by ``kid`` over a canonical form that binds every field of the grant (tenant, study,
methods, path scopes, expiry, key id, issuer subject), so changing any of them breaks it.
Keys come from settings as ``kid:secret,...``: the first signs, all verify (rotation: add the
new key first, drop the old one once the longest TTL has passed). Verification is
constant-time (``hmac.compare_digest``). Tokens are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import orjson
from starlette.types import Scope

from novaza_gateway.core.auth import Principal
from novaza_gateway.core.secretfile import create_once
from novaza_gateway.imaging.errors import SignedUrlInvalid, SignedUrlScope

TOKEN_PREFIX = "nvzs1."  # noqa: S105 - a format marker, not a secret
DOMAIN = b"novaza-imaging-signed-url-v1"
READ_METHODS = ("GET", "HEAD")
SEARCH_ROOTS = frozenset({"/med/qido/studies", "/med/qido/series", "/med/qido/instances"})
READ_SCOPE = "imaging:read"
MAX_TOKEN_CHARS = 2048


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes


def parse_keys(value: str) -> list[SigningKey]:
    keys = []
    for item in value.split(","):
        kid, sep, secret = item.strip().partition(":")
        if not sep or not kid or len(secret) < 16:
            raise ValueError("signing keys are 'kid:secret' pairs, secrets of 16+ characters")
        keys.append(SigningKey(kid, secret.encode()))
    return keys


def dev_keys(data_dir: Path) -> list[SigningKey]:
    """One key generated once in the data dir, for a single machine with no configured keys."""
    content = secrets.token_urlsafe(32).encode()
    secret = create_once(data_dir / "imaging-signing.key", content).strip()
    return [SigningKey("dev-" + hashlib.sha256(secret).hexdigest()[:8], secret)]


@dataclass(frozen=True, slots=True)
class Grant:
    kid: str
    tenant_id: str
    study_uid: str
    methods: tuple[str, ...]
    paths: tuple[str, ...]
    expires_at: int
    subject: str

    def canonical(self) -> bytes:
        fields = [
            self.kid,
            self.tenant_id,
            self.study_uid,
            " ".join(self.methods),
            " ".join(self.paths),
            str(self.expires_at),
            self.subject,
        ]
        return b"\n".join([DOMAIN, *(f.encode() for f in fields)])

    def check(self, method: str, path: str, query_string: bytes) -> None:
        """403 unless the request reads within this grant's study."""
        if method not in self.methods:
            raise SignedUrlScope()
        if any(path == p or path.startswith(p + "/") for p in self.paths):
            return
        if path in SEARCH_ROOTS:
            query = parse_qs(query_string.decode("latin-1"))
            asked = query.get("StudyInstanceUID", []) + query.get("0020000D", [])
            if asked and all(v == self.study_uid for v in asked):
                return
        raise SignedUrlScope()


def study_paths(study_uid: str) -> tuple[str, ...]:
    return (f"/med/wado/studies/{study_uid}", f"/med/qido/studies/{study_uid}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UrlSigner:
    def __init__(self, keys: list[SigningKey], clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("at least one signing key")
        self.current = keys[0]
        self._keys = {k.kid: k.secret for k in keys}
        self._clock = clock

    def sign(self, tenant_id: str, study_uid: str, ttl_seconds: int, subject: str) -> Grant:
        grant = Grant(
            kid=self.current.kid,
            tenant_id=tenant_id,
            study_uid=study_uid,
            methods=READ_METHODS,
            paths=study_paths(study_uid),
            expires_at=int(self._clock()) + ttl_seconds,
            subject=subject,
        )
        return grant

    def token(self, grant: Grant) -> str:
        payload = orjson.dumps(
            {
                "kid": grant.kid,
                "t": grant.tenant_id,
                "s": grant.study_uid,
                "m": list(grant.methods),
                "p": list(grant.paths),
                "exp": grant.expires_at,
                "sub": grant.subject,
            }
        )
        mac = hmac.new(self._keys[grant.kid], grant.canonical(), hashlib.sha256).digest()
        return f"{TOKEN_PREFIX}{_b64(payload)}.{_b64(mac)}"

    def verify(self, token: str) -> Grant:
        """The grant a token carries; 401 when it is malformed, forged or expired."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            raise SignedUrlInvalid()
        try:
            payload_b64, mac_b64 = token[len(TOKEN_PREFIX) :].split(".")
            claims = orjson.loads(_unb64(payload_b64))
            mac = _unb64(mac_b64)
            grant = Grant(
                kid=str(claims["kid"]),
                tenant_id=str(claims["t"]),
                study_uid=str(claims["s"]),
                methods=tuple(str(m) for m in claims["m"]),
                paths=tuple(str(p) for p in claims["p"]),
                expires_at=int(claims["exp"]),
                subject=str(claims["sub"]),
            )
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            raise SignedUrlInvalid() from None
        secret = self._keys.get(grant.kid)
        if secret is None:
            raise SignedUrlInvalid()
        expected = hmac.new(secret, grant.canonical(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise SignedUrlInvalid()
        if grant.expires_at <= self._clock():
            raise SignedUrlInvalid()
        return grant


class SignedUrlAuthenticator:
    """The RouteGuard's alternative authenticator for WADO/QIDO (``alt_auth="signed_url"``).

    A request with ``?token=`` or a bearer token of this format is judged here alone; any
    other request falls through to JWT verification.
    """

    def __init__(self, signer: UrlSigner) -> None:
        self.signer = signer

    async def authenticate(self, scope: Scope) -> Principal | None:
        token = _query_token(scope.get("query_string", b"")) or _bearer(scope["headers"])
        if token is None:
            return None
        grant = self.signer.verify(token)
        grant.check(scope["method"], scope["path"], scope.get("query_string", b""))
        scope.setdefault("state", {})["signed_grant"] = grant
        return Principal(
            subject=f"signed-url:{grant.subject}",
            scopes=frozenset({READ_SCOPE}),
            tenant=grant.tenant_id,
            expires_at=float(grant.expires_at),
        )


def _query_token(query_string: bytes) -> str | None:
    if b"token=" not in query_string:
        return None
    values = parse_qs(query_string.decode("latin-1")).get("token")
    if not values:
        return None
    if len(values) > 1:
        raise SignedUrlInvalid()
    return values[0]


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token.startswith(TOKEN_PREFIX):
                return token
            return None
    return None
