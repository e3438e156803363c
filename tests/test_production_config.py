"""Shared state across replicas: production refuses per-data-dir secrets, and absolute links
never come from the caller's Host header (ADR 0065)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from novaza_gateway.cli import describe_configuration_error
from novaza_gateway.config import ConfigurationError, load_settings
from tests import procs
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway
from tests.imaging.conftest import imaging_tenant
from tests.imaging.dicom import make_instance, multipart, uid

PRODUCTION: dict[str, Any] = {
    "env": "production",
    "jwt_issuer": "https://sso.example.test/",
    "imaging_signing_keys": "k1:0123456789abcdef0123",
    "rooms_token_secret": "personeo-secret-never-print-me",
    "public_url": "https://gateway.example.test",
    "secrets_keys": "k1:" + "A" * 43 + "=",
}
NAMED = {
    "jwt_issuer": "NOVAZA_JWT_ISSUER",
    "imaging_signing_keys": "NOVAZA_IMAGING_SIGNING_KEYS",
    "rooms_token_secret": "NOVAZA_ROOMS_TOKEN_SECRET",
    "public_url": "NOVAZA_PUBLIC_URL",
    "secrets_keys": "NOVAZA_SECRETS_KEYS",
}
FORGED = {"Host": "evil.example.test", "X-Forwarded-Proto": "https"}


def test_production_with_every_shared_setting_loads(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, **PRODUCTION)
    assert settings.base_url == "https://gateway.example.test"


@pytest.mark.parametrize("missing", sorted(NAMED))
def test_production_names_each_missing_setting(tmp_path: Path, missing: str) -> None:
    values = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(data_dir=tmp_path, **values)
    message = describe_configuration_error(caught.value)
    assert NAMED[missing] in message
    for other, name in NAMED.items():
        if other != missing:
            assert name not in message, message
    assert "never-print-me" not in message


def test_outside_production_the_data_dir_stands_in(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, env="development")
    assert settings.base_url == "http://127.0.0.1:8080"


def test_serve_in_production_without_shared_secrets_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    env = procs.novaza_env(
        tmp_path / "data", env="production", jwt_issuer="https://sso.example.test/"
    )
    result = procs.run_cli(env, "serve", "--port", str(port), check=False, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("NOVAZA_IMAGING_SIGNING_KEYS", "NOVAZA_ROOMS_TOKEN_SECRET", "NOVAZA_PUBLIC_URL"):
        assert name in result.stderr
    assert "NOVAZA_JWT_ISSUER" not in result.stderr  # set: not named
    # nothing generated on this replica's disk
    data_dir = tmp_path / "data"
    assert not any(data_dir.glob("*.key")) and not any(data_dir.glob("*secret*"))


# ----------------------------------------------------------------------------- links


async def stow_with(gw: Gateway, auth: dict[str, str], headers: dict[str, str]) -> list[str]:
    study, series = uid(), uid()
    body, ctype = multipart([make_instance(study=study, series=series)])
    stored = await gw.client.post(
        "/med/stow/studies", content=body, headers={**auth, **headers, "Content-Type": ctype}
    )
    assert stored.status_code == 200, stored.text
    answer = stored.json()
    links = [ref["00081190"]["Value"][0] for ref in answer["00081199"]["Value"]]
    found = await gw.client.get(
        "/med/qido/studies", params={"StudyInstanceUID": study}, headers={**auth, **headers}
    )
    assert found.status_code == 200, found.text
    links += [row["00081190"]["Value"][0] for row in found.json()]
    signed = await gw.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": study}, headers={**auth, **headers}
    )
    assert signed.status_code == 200, signed.text
    return [*links, signed.json()["url"]]


async def test_links_never_follow_a_forged_host(gateway: Gateway) -> None:
    """STOW RetrieveURLs, QIDO RetrieveURLs and signed URLs, on SQLite and PostgreSQL."""
    auth = await imaging_tenant(gateway, "linked")
    links = await stow_with(gateway, auth, FORGED)
    assert len(links) == 3
    for link in links:
        assert link.startswith("http://gateway/med/"), link  # NOVAZA_PUBLIC_URL of the fixture
        assert "evil" not in link


async def test_without_a_public_url_links_use_the_configured_host_and_port(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = gateway_settings(
        tmp_path / "data", sqlite_url, public_url=None, host="10.1.2.3", port=8443
    )
    async for gw in start_gateway(settings):
        auth = await imaging_tenant(gw, "hosted")
        for link in await stow_with(gw, auth, FORGED):
            assert link.startswith("http://10.1.2.3:8443/med/"), link
