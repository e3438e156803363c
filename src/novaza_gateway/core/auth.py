"""Bearer-token authentication: JWT verification against trusted keys -> ``Principal``.

RFC 8725 rules: the algorithm must be on the allow-list *and* fit the key's type; ``none`` in
any spelling is refused; HS256 verifies only against the configured shared secret, never a
public key; ``jku``/``x5u``/``jwk``/``x5c`` headers are ignored. Past the signature, the
claims profile of ``core.claims`` (NumericDate times, a named subject, an access-token
``typ``). A verified token is cached until its ``exp`` so repeat calls do no signature math.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt

from novaza_gateway.config import AuthSettings
from novaza_gateway.core.claims import profile_violation
from novaza_gateway.core.errors import Unauthenticated
from novaza_gateway.core.jwks import ASYMMETRIC_ALGORITHMS, KeyStore
from novaza_gateway.core.metrics import AUTH_FAILURES

log = logging.getLogger("novaza.auth")

MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    tenant: str | None
    expires_at: float
    issuer: str | None = None
    client_id: str | None = None

    def has_scopes(self, required: frozenset[str]) -> bool:
        return required <= self.scopes


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise fail("malformed_header")
            return token.strip()
    return None


def fail(reason: str) -> Unauthenticated:
    AUTH_FAILURES.labels(reason=reason).inc()
    log.info("authentication failed", extra={"reason": reason})
    return Unauthenticated(reason=reason)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(str(s) for s in raw)
    return frozenset()


class TokenCache:
    """Bounded map token -> principal, entries live until the token's ``exp``."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[str, Principal] = {}

    def get(self, token: str, now: float) -> Principal | None:
        principal = self._entries.get(token)
        if principal is None:
            return None
        if principal.expires_at <= now:
            del self._entries[token]
            return None
        return principal

    def put(self, token: str, principal: Principal, now: float) -> None:
        if len(self._entries) >= self._max:
            self._evict(now)
        self._entries[token] = principal

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self, now: float) -> None:
        expired = [t for t, p in self._entries.items() if p.expires_at <= now]
        for token in expired:
            del self._entries[token]
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # oldest insertion first

    def __len__(self) -> int:
        return len(self._entries)


class TokenVerifier:
    def __init__(self, settings: AuthSettings, keys: KeyStore) -> None:
        self._settings = settings
        self._keys = keys
        self._cache = TokenCache(settings.token_cache_size)
        self._hs_secret = (
            settings.hs256_secret.get_secret_value().encode() if settings.hs256_secret else None
        )
        self._allowed = ASYMMETRIC_ALGORITHMS | ({"HS256"} if self._hs_secret else set())
        keys.on_keys_removed(self._cache.clear)

    async def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._cache.get(token, now)
        if cached is not None:
            return cached
        if len(token) > MAX_TOKEN_BYTES:
            raise fail("too_large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise fail("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise fail("algorithm_not_allowed")
        claims = await self._decode(token, alg, header.get("kid"))
        violation = profile_violation(header, claims)
        if violation is not None:
            raise fail(violation)
        try:
            principal = self._principal(claims)
        except (TypeError, ValueError, OverflowError):
            raise fail("invalid_claims") from None
        self._cache.put(token, principal, now)
        return principal

    async def _decode(self, token: str, alg: str, kid: Any) -> dict[str, Any]:
        if kid is not None and not isinstance(kid, str):
            raise fail("malformed")
        if alg == "HS256":
            assert self._hs_secret is not None
            return self._decode_with(token, self._hs_secret, alg)
        if not self._keys.knows(kid):
            await self._keys.refresh_for_unknown_kid(kid)
        candidates = self._keys.candidates(kid, alg)
        if not candidates:
            raise fail("unknown_key")
        last: Unauthenticated | None = None
        for key in candidates:
            try:
                return self._decode_with(token, key.key, alg)
            except Unauthenticated as exc:
                last = exc
        assert last is not None
        raise last

    def _decode_with(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        s = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": s.audience is not None,
                    "verify_iss": s.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise fail("expired") from None
        except jwt.ImmatureSignatureError:
            raise fail("not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise fail("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise fail("wrong_issuer") from None
        except jwt.InvalidSignatureError:
            raise fail("bad_signature") from None
        except jwt.MissingRequiredClaimError:
            raise fail("missing_claim") from None
        except jwt.PyJWTError:
            raise fail("invalid") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        tenant = claims.get(self._settings.tenant_claim)
        return Principal(
            subject=str(claims["sub"]),
            scopes=_scopes(claims),
            tenant=str(tenant) if tenant is not None else None,
            expires_at=float(claims["exp"]) + self._settings.leeway_seconds,
            issuer=claims.get("iss"),
            client_id=claims.get("client_id") or claims.get("azp"),
        )
