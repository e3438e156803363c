"""Sealing tenant secrets (core.secretbox): AES-256-GCM bound to its place, keys rotate."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from novaza_gateway.config import ConfigurationError, load_settings
from novaza_gateway.core.secretbox import (
    SecretBox,
    SecretUnreadable,
    dev_keys,
    parse_keys,
    place,
)


def key(kid: str) -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def test_a_sealed_secret_opens_only_in_its_place() -> None:
    box = SecretBox(parse_keys(key("k1")))
    here = place("tenant-a", "desk", "apiKey")
    sealed = box.seal("desk-api-key-123", here)
    assert sealed.startswith("enc:v1:k1:") and "desk-api-key-123" not in sealed
    assert box.open(sealed, here) == "desk-api-key-123"
    assert box.seal("desk-api-key-123", here) != sealed  # a fresh nonce each time
    for elsewhere in (
        place("tenant-b", "desk", "apiKey"),  # copied into another tenant's settings
        place("tenant-a", "imaging", "apiKey"),
        place("tenant-a", "desk", "baseUrl"),
    ):
        with pytest.raises(SecretUnreadable):
            box.open(sealed, elsewhere)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretUnreadable):
        box.open(tampered, here)


def test_plaintext_from_before_sealing_reads_as_it_is() -> None:
    box = SecretBox(parse_keys(key("k1")))
    assert box.open("legacy-plain", place("t", "desk", "apiKey")) == "legacy-plain"
    assert box.needs_reseal("legacy-plain")


def test_rotation_first_key_seals_every_key_opens() -> None:
    old, new = key("old"), key("new")
    here = place("t", "imaging", "upstreamPassword")
    sealed_old = SecretBox(parse_keys(old)).seal("pw", here)
    rotated = SecretBox(parse_keys(f"{new},{old}"))
    assert rotated.open(sealed_old, here) == "pw"
    assert rotated.needs_reseal(sealed_old)
    resealed = rotated.seal(rotated.open(sealed_old, here), here)
    assert resealed.startswith("enc:v1:new:") and not rotated.needs_reseal(resealed)
    with pytest.raises(SecretUnreadable, match="no key 'old'"):
        SecretBox(parse_keys(new)).open(sealed_old, here)  # the old key dropped too early


@pytest.mark.parametrize(
    "value",
    ["k1", "k1:", "k1:c2hvcnQ=", ":" + key("x").split(":")[1], f"{key('a')},broken"],
)
def test_malformed_keys_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        parse_keys(value)


def test_settings_check_the_keys_and_production_requires_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="NOVAZA_SECRETS_KEYS"):
        load_settings(data_dir=tmp_path, secrets_keys="k1:short")
    assert load_settings(data_dir=tmp_path, secrets_keys=f"{key('a')}, {key('b')}")
    with pytest.raises(ConfigurationError, match="NOVAZA_SECRETS_KEYS"):
        load_settings(data_dir=tmp_path, env="production", jwks_url="https://sso.example/jwks.json")


def test_the_dev_key_is_made_once_and_private(tmp_path: Path) -> None:
    first, second = dev_keys(tmp_path), dev_keys(tmp_path)
    assert first[0].kid == second[0].kid
    here = place("t", "desk", "apiKey")
    assert SecretBox(second).open(SecretBox(first).seal("x", here), here) == "x"
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600
