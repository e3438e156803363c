"""Development signing key: created once under ``NOVAZA_DATA_DIR`` and trusted in dev mode.

``novaza token`` signs with it, so a fresh checkout can call every endpoint without an SSO.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from novaza_gateway.core.ids import new_id
from novaza_gateway.core.secretfile import create_once

DEV_ISSUER = "novaza-dev"
KEY_FILE = "dev-signing-key.pem"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    path = data_dir / KEY_FILE
    if path.exists():
        pem = path.read_bytes()
    else:  # several workers starting at once: the first key written is everyone's
        fresh = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = create_once(path, fresh)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path} is not an Ed25519 key")
    return key


def public_jwk(key: Ed25519PrivateKey) -> dict[str, Any]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = "dev-" + hashlib.sha256(raw).hexdigest()[:16]
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64(raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def dev_jwks(data_dir: Path) -> dict[str, Any]:
    return {"keys": [public_jwk(load_or_create_key(data_dir))]}


def mint_token(
    data_dir: Path,
    *,
    subject: str,
    scopes: Iterable[str],
    tenant: str | None,
    tenant_claim: str = "tenant_id",
    ttl_seconds: int = 3600,
    audience: str | None = None,
) -> str:
    key = load_or_create_key(data_dir)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": new_id(),
        "scope": " ".join(sorted(set(scopes))),
    }
    if tenant:
        claims[tenant_claim] = tenant
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"]})


def jwks_json(data_dir: Path) -> str:
    return json.dumps(dev_jwks(data_dir))
