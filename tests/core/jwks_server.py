"""Test helpers for token authentication: signing keys, crafted tokens, a JWKS server.

``JwksServer`` is a real HTTP server on 127.0.0.1 (a ``ThreadingHTTPServer`` in a thread) so
the gateway fetches keys over TCP exactly as it would from an identity provider. It records
every request path, so tests can count fetches or prove that nothing was fetched at all.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.conftest import Gateway, gateway_settings, start_gateway

ISSUER = "https://login.novaza.test/realms/clinic"
AUDIENCE = "novaza-api"
TENANT = "acme"
TENANT_SCOPES = "imaging:read patients:read"


# ----------------------------------------------------------------------------- encoding


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{signature}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """HMAC-SHA256 by hand: PyJWT rightly refuses to use a PEM key as an HMAC secret."""
    signing_input = f"{b64json({**header, 'alg': 'HS256'})}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def claims(
    *,
    sub: str = "user-1",
    tenant: str | None = TENANT,
    scope: str = TENANT_SCOPES,
    iss: str | None = ISSUER,
    aud: str | None = AUDIENCE,
    ttl: int = 600,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid claim set; ``overrides`` replace claims, and a value of None drops one."""
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "scope": scope,
        "tenant_id": tenant,
        "iss": iss,
        "aud": aud,
        **overrides,
    }
    return {k: v for k, v in values.items() if v is not None}


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SigningKey:
    """A private key, the algorithm it signs with and the kid it is published under."""

    private: Any
    alg: str
    kid: str | None

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwk(self, **overrides: Any) -> dict[str, Any]:
        """The public JWK as an identity provider publishes it (None drops a member)."""
        if isinstance(self.public, rsa.RSAPublicKey):
            raw = jwt.algorithms.RSAAlgorithm.to_jwk(self.public, as_dict=True)
        elif isinstance(self.public, ec.EllipticCurvePublicKey):
            raw = jwt.algorithms.ECAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            raw = jwt.algorithms.OKPAlgorithm.to_jwk(self.public, as_dict=True)
        values = {**raw, "kid": self.kid, "alg": self.alg, "use": "sig", **overrides}
        return {k: v for k, v in values.items() if v is not None}

    def sign(self, payload: dict[str, Any], alg: str | None = None, **header: Any) -> str:
        headers = {"kid": self.kid, **header} if self.kid is not None else header
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=headers)

    def with_kid(self, kid: str | None) -> SigningKey:
        return SigningKey(self.private, self.alg, kid)


@functools.cache
def _rsa(n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _ec(curve: str, n: int) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1() if curve == "P-384" else ec.SECP256R1())


def rsa_key(kid: str | None, alg: str = "RS256", n: int = 0) -> SigningKey:
    """RSA keys are slow to make: ``n`` picks one of a few cached ones."""
    return SigningKey(_rsa(n), alg, kid)


def ec_key(kid: str | None, curve: str = "P-256", n: int = 0) -> SigningKey:
    return SigningKey(_ec(curve, n), "ES384" if curve == "P-384" else "ES256", kid)


def ed25519_key(kid: str | None) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.generate(), "EdDSA", kid)


def ed448_key(kid: str | None) -> SigningKey:
    return SigningKey(ed448.Ed448PrivateKey.generate(), "EdDSA", kid)


def es256_with_p384(key: SigningKey, payload: dict[str, Any]) -> str:
    """An 'ES256' token signed by a P-384 key (PyJWT refuses to make one)."""
    signing_input = f"{b64json({'alg': 'ES256', 'typ': 'JWT', 'kid': key.kid})}.{b64json(payload)}"
    der = key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(48, 'big') + s.to_bytes(48, 'big'))}"


def self_signed_cert(key: SigningKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
    begin = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


# ----------------------------------------------------------------------------- the server


class JwksServer:
    """Serves canned responses by path; records every request it receives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[int, bytes, str]] = {}
        self._requests: list[str] = []
        self.delay = 0.0
        self.cache_control: str | None = None  # sent on every answer when set
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._record(self.path)
                if server.delay:
                    time.sleep(server.delay)
                status, body, content_type = server._route(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if server.cache_control is not None:
                    self.send_header("Cache-Control", server.cache_control)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._running = True

    def _record(self, path: str) -> None:
        with self._lock:
            self._requests.append(path)

    def _route(self, path: str) -> tuple[int, bytes, str]:
        with self._lock:
            return self._routes.get(path, (404, b"{}", "application/json"))

    def serve(self, path: str, body: Any, status: int = 200) -> None:
        """Answer GET ``path`` with ``body`` (JSON unless bytes)."""
        if isinstance(body, bytes):
            entry = (status, body, "application/octet-stream")
        else:
            entry = (status, json.dumps(body).encode(), "application/json")
        with self._lock:
            self._routes[path] = entry

    def publish(self, *keys: SigningKey, path: str = "/jwks.json") -> None:
        self.serve(path, jwks(*keys))

    @property
    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def count(self, path: str = "/jwks.json") -> int:
        return self.requests.count(path)

    def stop(self) -> None:
        """Close the socket: later connections are refused."""
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)


@contextlib.contextmanager
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running_gateway(data_dir: Path, db: str, **overrides: Any) -> AsyncIterator[Gateway]:
    """A gateway with custom settings, shut down when the block ends."""
    generator = start_gateway(gateway_settings(data_dir, db, **overrides))
    gateway = await generator.__anext__()
    try:
        yield gateway
    finally:
        await generator.aclose()


async def create_tenant(gw: Gateway, admin_key: SigningKey, slug: str = TENANT) -> None:
    """Onboard an active tenant with a ``platform:admin`` token signed by a trusted key."""
    token = admin_key.sign(claims(sub="admin-1", tenant=None, scope="platform:admin"))
    response = await gw.client.post(
        "/admin/tenants/",
        json={"slug": slug, "name": slug.title(), "status": "active"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
