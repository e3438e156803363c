"""Signed viewer URLs: scope, expiry, tampering, rotation, tenants, and never in a log line."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from novaza_gateway.imaging.errors import SignedUrlInvalid, SignedUrlScope
from novaza_gateway.imaging.signing import SigningKey, UrlSigner, dev_keys, parse_keys
from tests.conftest import Gateway
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, split_multipart, uid


async def seed(gw: Gateway, slug: str, *studies: str, name: str = "Doe^John") -> dict[str, str]:
    auth = await imaging_tenant(gw, slug)
    parts = [make_instance(study=s, patient_name=name) for s in studies]
    body, ctype = multipart(parts)
    response = await gw.client.post(STOW, content=body, headers={**auth, "Content-Type": ctype})
    assert response.status_code == 200, response.text
    return auth


async def mint(gw: Gateway, auth: dict[str, str], study: str, **extra: int) -> dict[str, str]:
    response = await gw.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": study, **extra}, headers=auth
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_signed_url_reads_its_study_and_nothing_else(gw: Gateway) -> None:
    x, y = uid(), uid()
    auth = await seed(gw, "sign-a", x, y)
    signed = await mint(gw, auth, x)
    expires = datetime.fromisoformat(signed["expiresAt"])
    assert 880 <= (expires - datetime.now(UTC)).total_seconds() <= 900
    assert signed["url"].endswith(f"/med/wado/studies/{x}?token={signed['token']}")

    study = await gw.client.get(local(signed["url"]))  # no Authorization header at all
    assert study.status_code == 200, study.text
    assert len(split_multipart(study.content, study.headers["content-type"])) == 1
    bearer = {"Authorization": f"Bearer {signed['token']}"}
    series = await gw.client.get(f"/med/qido/studies/{x}/series", headers=bearer)
    assert series.status_code == 200 and len(series.json()) == 1
    search = await gw.client.get(
        "/med/qido/studies", params={"StudyInstanceUID": x}, headers=bearer
    )
    assert [s["0020000D"]["Value"][0] for s in search.json()] == [x]
    metadata = await gw.client.get(
        f"/med/wado/studies/{x}/metadata", params={"token": signed["token"]}
    )
    assert metadata.status_code == 200

    for path, params in [
        (f"/med/wado/studies/{y}", {}),
        (f"/med/qido/studies/{y}/series", {}),
        ("/med/qido/studies", {}),
        ("/med/qido/studies", {"StudyInstanceUID": y}),
        ("/med/qido/series", {"StudyInstanceUID": f"{x},{y}"}),
    ]:
        denied = await gw.client.get(path, params={**params, "token": signed["token"]})
        assert (denied.status_code, denied.json()["code"]) == (403, "FORBIDDEN"), path
    # Only reads, only on DICOMweb routes.
    posted = await gw.client.post(f"/med/stow/studies/{x}", headers=bearer, content=b"")
    assert posted.status_code == 401
    summary = await gw.client.get(f"/med/imaging/study/{x}", headers=bearer)
    assert summary.status_code == 401


async def test_expired_tampered_and_foreign_tokens_are_401(gw: Gateway) -> None:
    x = uid()
    auth = await seed(gw, "sign-b", x)
    token = (await mint(gw, auth, x))["token"]
    url = f"/med/wado/studies/{x}/metadata"
    prefix, payload, mac = token.split(".")
    flipped_mac = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in [
        f"{prefix}.{payload}.{flipped_mac}",
        f"{prefix}.{payload[:-3]}xyz.{mac}",
        f"{prefix}.{payload}",
        "nvzs1.garbage",
        token + "x",
    ]:
        response = await gw.client.get(url, params={"token": bad})
        assert response.status_code == 401, bad
        assert response.json()["code"] == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
    tenant_id = gw.tenants["sign-b"]["id"]
    past = UrlSigner(dev_keys(gw.data_dir), clock=lambda: time.time() - 3600)
    expired = past.token(past.sign(tenant_id, x, 900, "user-1"))
    response = await gw.client.get(url, params={"token": expired})
    assert response.status_code == 401
    foreign = UrlSigner([SigningKey(past.current.kid, b"another-secret-entirely")])
    forged = foreign.token(foreign.sign(tenant_id, x, 900, "user-1"))
    assert (await gw.client.get(url, params={"token": forged})).status_code == 401
    twice = await gw.client.get(url, params=[("token", token), ("token", token)])
    assert twice.status_code == 401


async def test_ttl_bounds_and_unknown_study(gw: Gateway) -> None:
    x = uid()
    auth = await seed(gw, "sign-c", x)
    short = await mint(gw, auth, x, expiresIn=60)
    remaining = (datetime.fromisoformat(short["expiresAt"]) - datetime.now(UTC)).total_seconds()
    assert 50 <= remaining <= 60
    too_long = await gw.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": x, "expiresIn": 86401}, headers=auth
    )
    assert too_long.status_code == 422
    unknown = await gw.client.post(
        "/med/imaging/signed-url", json={"studyInstanceUID": uid()}, headers=auth
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "STUDY_NOT_FOUND")
    no_scope = await gw.client.post(
        "/med/imaging/signed-url",
        json={"studyInstanceUID": x},
        headers=gw.auth("sign-c", scopes="imaging:write"),
    )
    assert no_scope.status_code == 403


async def test_token_of_a_suspended_tenant_stops_working(gw: Gateway) -> None:
    x = uid()
    auth = await seed(gw, "sign-d", x)
    token = (await mint(gw, auth, x))["token"]
    suspended = await gw.client.post("/admin/tenants/sign-d/suspend", headers=gw.admin())
    assert suspended.status_code == 200
    gw.app.state.tenant_cache._entries.clear()  # the TTL would do it within seconds
    response = await gw.client.get(f"/med/wado/studies/{x}", params={"token": token})
    assert (response.status_code, response.json()["code"]) == (403, "TENANT_SUSPENDED")


async def test_token_never_reaches_a_log_line(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    x = uid()
    auth = await seed(gw, "sign-e", x)
    token = (await mint(gw, auth, x))["token"]
    caplog.set_level(logging.DEBUG)
    await gw.client.get(f"/med/wado/studies/{x}", params={"token": token})
    await gw.client.get(
        f"/med/qido/studies/{x}/series", headers={"Authorization": f"Bearer {token}"}
    )
    await gw.client.get(f"/med/wado/studies/{x}", params={"token": token + "tampered"})
    await gw.client.get(f"/med/wado/studies/{uid()}", params={"token": token})
    # The test's own client (logger "httpx") prints its request URLs; the gateway's lines:
    records = [r for r in caplog.records if r.name != "httpx"]
    assert any(r.name == "novaza.access" for r in records), "the access log wrote no line"
    signature = token.rsplit(".", 1)[1]
    for record in records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert signature not in text and "token=" not in text


def test_rotation_old_key_verifies_until_removed() -> None:
    old_signer = UrlSigner(parse_keys("k1:0123456789abcdef-old"))
    token = old_signer.token(old_signer.sign("t1", "1.2.3", 600, "u"))
    rotated = UrlSigner(parse_keys("k2:0123456789abcdef-new,k1:0123456789abcdef-old"))
    assert rotated.verify(token).study_uid == "1.2.3"
    assert rotated.current.kid == "k2"
    assert rotated.verify(rotated.token(rotated.sign("t1", "1.2.3", 600, "u"))).kid == "k2"
    retired = UrlSigner(parse_keys("k2:0123456789abcdef-new"))
    with pytest.raises(SignedUrlInvalid):
        retired.verify(token)
    with pytest.raises(ValueError):
        parse_keys("short:abc")


def test_grant_scope_is_exact() -> None:
    signer = UrlSigner([SigningKey("k", b"0123456789abcdef")])
    grant = signer.verify(signer.token(signer.sign("t", "1.2.3", 60, "u")))
    grant.check("GET", "/med/wado/studies/1.2.3/series/4", b"")
    for method, path, query in [
        ("POST", "/med/wado/studies/1.2.3", b""),
        ("GET", "/med/wado/studies/1.2.34", b""),  # a UID that only starts the same
        ("GET", "/med/qido/studies", b"StudyInstanceUID=1.2.34"),
        ("GET", "/med/imaging/study/1.2.3", b""),
    ]:
        with pytest.raises(SignedUrlScope):
            grant.check(method, path, query)


def test_dev_key_is_created_once_and_shared(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: dev_keys(tmp_path)[0], range(16)))
    assert len({(k.kid, k.secret) for k in keys}) == 1
    assert (tmp_path / "imaging-signing.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imaging-signing.key"]
