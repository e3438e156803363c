"""Signing keys the gateway trusts: a JWKS from a URL, OIDC discovery, a file, or dev mode.

The key set is cached and refreshed in the background as often as the provider's
``Cache-Control: max-age`` says (else ``NOVAZA_JWKS_REFRESH_SECONDS``, 5 min): a key an
issuer publishes ahead of its first use (as rotations do) is known before any token needs
it, even when a spray of forged kids has just spent the unknown-kid budget. An unknown
``kid`` triggers at most one refetch per interval (so a flood of forged kids cannot hammer
the issuer); a failed refresh keeps the cached keys.
Keys are only ever fetched from configured locations, never from a URL a token names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from novaza_gateway.config import AuthSettings
from novaza_gateway.core import devkeys
from novaza_gateway.core.metrics import JWKS_FETCHES

log = logging.getLogger("novaza.auth.jwks")

# Which token algorithms each key type may verify (RFC 8725 section 3.1).
ALGORITHMS_BY_KEY: dict[tuple[str, str | None], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "RS384", "RS512", "PS256"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}
ASYMMETRIC_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY.values())
# The background refresh follows max-age within these bounds: never a busy loop against the
# provider, never a key set older than a day.
MIN_REFRESH_SECONDS = 2.0
MAX_REFRESH_SECONDS = 86400.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


def max_age(cache_control: str | None) -> float | None:
    """Seconds a response may be cached per its ``Cache-Control``; None when it does not
    say (``no-cache`` alone is read as silence: the floor would hammer the provider)."""
    if not cache_control:
        return None
    found = _MAX_AGE.search(cache_control)
    return float(found.group(1)) if found else None


class TrustedKey:
    __slots__ = ("algorithms", "identity", "key", "kid")

    def __init__(self, jwk: dict[str, Any]) -> None:
        kty, crv = jwk.get("kty"), jwk.get("crv")
        allowed = ALGORITHMS_BY_KEY.get((str(kty), None if kty == "RSA" else crv))
        if not allowed:
            raise ValueError(f"unsupported key type {kty}/{crv}")
        if jwk.get("use") not in (None, "sig"):
            raise ValueError("key is not for signatures")
        declared = jwk.get("alg")
        if declared is not None:
            if declared not in allowed:
                raise ValueError(f"alg {declared} does not fit key type {kty}")
            allowed = frozenset({declared})
        self.algorithms: frozenset[str] = allowed
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError("kid is not a string")
        self.kid: str | None = kid
        key: Any = jwt.PyJWK(jwk, algorithm=next(iter(sorted(allowed)))).key
        if not hasattr(key, "verify"):  # a JWK carrying private parts: verify with its public half
            key = key.public_key()
        self.key: Any = key
        # What a token verified by this key relies on: its kid and its public key material.
        self.identity: tuple[str | None, bytes] = (
            self.kid,
            key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        )


def parse_jwks(document: Any) -> list[TrustedKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            log.warning("skipping JWKS entry that is not an object")
            continue
        try:
            keys.append(TrustedKey(jwk))
        except (ValueError, TypeError, KeyError, jwt.PyJWTError) as exc:
            log.warning("skipping JWKS key", extra={"kid": jwk.get("kid"), "reason": str(exc)})
    return keys


class KeyStore:
    def __init__(self, settings: AuthSettings, data_dir: Path, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._data_dir = data_dir
        self._http = http
        self._by_kid: dict[str, TrustedKey] = {}
        self._keys: list[TrustedKey] = []
        self._lock = asyncio.Lock()
        self._last_kid_refetch = float("-inf")
        self._jwks_uri: str | None = settings.jwks_url
        self._max_age: float | None = None  # from the last JWKS answer's Cache-Control
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def source(self) -> str:
        if self._settings.jwks_file:
            return "file"
        if self._settings.jwks_url:
            return "url"
        if self._settings.issuer:
            return "discovery"
        return "dev"

    def on_keys_removed(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def has_keys(self) -> bool:
        return bool(self._keys)

    def candidates(self, kid: str | None, alg: str) -> list[TrustedKey]:
        if kid is not None:
            key = self._by_kid.get(kid)
            return [key] if key is not None and alg in key.algorithms else []
        return [k for k in self._keys if alg in k.algorithms]

    def knows(self, kid: str | None) -> bool:
        return kid is None or kid in self._by_kid

    async def refresh_for_unknown_kid(self, kid: str | None) -> bool:
        """Try to learn ``kid``; answer whether it is known now.

        Waits for a fetch already in flight (a rotation's first tokens often arrive together)
        and starts one itself at most once per interval, whatever other fetches (start-up,
        the scheduled refresh) happened meanwhile.
        """
        async with self._lock:
            if self.knows(kid):
                return True
            now = time.monotonic()
            if now - self._last_kid_refetch < self._settings.jwks_refetch_interval_seconds:
                return False
            self._last_kid_refetch = now
            await self._refresh_locked()
            return self.knows(kid)

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        try:
            keys = parse_jwks(await self._fetch())
            if not keys:
                raise ValueError("JWKS holds no usable signing key")
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            JWKS_FETCHES.labels(source=self.source, outcome="error").inc()
            log.warning(
                "JWKS refresh failed; keeping cached keys", extra={"error": self.last_error}
            )
            return
        self._install(keys)
        JWKS_FETCHES.labels(source=self.source, outcome="ok").inc()

    def _install(self, keys: list[TrustedKey]) -> None:
        old = {k.identity for k in self._keys}
        self._keys = keys
        self._by_kid = {k.kid: k for k in keys if k.kid}
        self.last_error = None
        self.last_success = time.time()
        if old - {k.identity for k in keys}:
            # A key was withdrawn or a kid now names other key material: tokens it verified
            # must be verified again.
            for callback in self._listeners:
                callback()

    async def _fetch(self) -> Any:
        settings = self._settings
        if settings.jwks_file:
            return json.loads(await asyncio.to_thread(Path(settings.jwks_file).read_text))
        if self.source == "dev":
            return await asyncio.to_thread(devkeys.dev_jwks, self._data_dir)
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        response = await self._http.get(self._jwks_uri, timeout=settings.http_timeout_seconds)
        response.raise_for_status()
        self._max_age = max_age(response.headers.get("cache-control"))
        return response.json()

    async def _discover(self) -> str:
        issuer = (self._settings.issuer or "").rstrip("/")
        url = f"{issuer}/.well-known/openid-configuration"
        response = await self._http.get(url, timeout=self._settings.http_timeout_seconds)
        response.raise_for_status()
        jwks_uri = response.json().get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("discovery document has no jwks_uri")
        return jwks_uri

    def refresh_interval(self) -> float:
        """Until the next background refresh: the provider's max-age, else the setting."""
        wanted = self._max_age if self._max_age is not None else self._settings.jwks_refresh_seconds
        return min(MAX_REFRESH_SECONDS, max(MIN_REFRESH_SECONDS, wanted))

    async def run_refresher(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval())
            await self.refresh()
