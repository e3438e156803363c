"""Secrets at rest: tenant integration secrets sealed with AES-256-GCM before they are stored.

A sealed value is one string, ``enc:v1:<kid>:<base64url(nonce | ciphertext+tag)>``, so it
sits in the JSON column where the plaintext used to. Keys come from
``NOVAZA_SECRETS_KEYS=kid:base64,...`` (32-byte keys): the first seals, every one opens, so a
rotation adds the new key first, runs ``novaza secrets rotate`` (re-seals every stored
secret under it) and drops the old key after. Outside production a key is generated once in
the data dir. The associated data binds a sealed value to its place (tenant, section,
field): a ciphertext copied into another tenant's settings does not open there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from novaza_gateway.config import Settings
from novaza_gateway.core.secretfile import create_once

log = logging.getLogger("novaza.secrets")

PREFIX = "enc:v1:"
NONCE_BYTES = 12
DEV_KEY_FILE = "secrets.key"


class SecretUnreadable(ValueError):
    """A sealed value no configured key opens (a dropped key, or a value moved elsewhere)."""


@dataclass(frozen=True, slots=True)
class SealingKey:
    kid: str
    aead: AESGCM


def parse_keys(value: str) -> list[SealingKey]:
    keys = []
    for item in value.split(","):
        kid, sep, encoded = item.strip().partition(":")
        try:
            raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            raw = b""
        if not sep or not kid or ":" in kid or len(raw) != 32:
            raise ValueError("secrets keys are 'kid:base64' pairs of 32-byte (AES-256) keys")
        keys.append(SealingKey(kid, AESGCM(raw)))
    return keys


def dev_keys(data_dir: Path) -> list[SealingKey]:
    """One key generated once in the data dir (0600), for a machine with no configured keys."""
    raw = create_once(data_dir / DEV_KEY_FILE, os.urandom(32))
    return [SealingKey("dev-" + hashlib.sha256(raw).hexdigest()[:8], AESGCM(raw))]


def secret_box(settings: Settings) -> SecretBox:
    """The box of ``NOVAZA_SECRETS_KEYS``, else (never in production: config refuses) the
    data dir's generated key."""
    if settings.secrets_keys is not None:
        return SecretBox(parse_keys(settings.secrets_keys.get_secret_value()))
    return SecretBox(dev_keys(settings.data_dir))


def place(tenant_id: str, section: str, field: str) -> str:
    """The associated data of a tenant setting's secret."""
    return f"tenant:{tenant_id}/{section}/{field}"


class SecretBox:
    def __init__(self, keys: list[SealingKey]) -> None:
        if not keys:
            raise ValueError("a secret box needs a key")
        self._sealing = keys[0]
        self._keys = {key.kid: key for key in keys}

    @property
    def sealing_kid(self) -> str:
        return self._sealing.kid

    def seal(self, plaintext: str, where: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._sealing.aead.encrypt(nonce, plaintext.encode(), where.encode())
        payload = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
        return f"{PREFIX}{self._sealing.kid}:{payload}"

    def open(self, value: str, where: str) -> str:
        """The plaintext of a sealed value; a value stored before sealing existed as it is."""
        if not is_sealed(value):
            return value
        kid, _, payload = value[len(PREFIX) :].partition(":")
        key = self._keys.get(kid)
        if key is None:
            raise SecretUnreadable(f"no key {kid!r} among NOVAZA_SECRETS_KEYS")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            plain = key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretUnreadable("a sealed secret does not open here") from None
        return plain.decode()

    def needs_reseal(self, value: str) -> bool:
        """Plaintext, or sealed under a key other than the sealing one."""
        return not value.startswith(f"{PREFIX}{self._sealing.kid}:")

    def open_section(self, tenant_id: str, name: str, section: dict[str, Any]) -> dict[str, Any]:
        """The section with every sealed top-level value opened (secrets are top-level). A
        value no key opens is left out, as if never set (the integration then fails as
        unauthenticated, which its area reports), and logged by place, never by value."""
        opened = {}
        for key, value in section.items():
            if not is_sealed(value):
                opened[key] = value
                continue
            try:
                opened[key] = self.open(value, place(tenant_id, name, key))
            except SecretUnreadable as exc:
                log.error(
                    "tenant secret unreadable",
                    extra={"tenant": tenant_id, "section": name, "field": key, "reason": str(exc)},
                )
        return opened


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)
