"""Where trusted keys come from: a JWKS over real HTTP, OIDC discovery, a file, an HS256 secret.

Covers key rotation without 401s, the unknown-kid refetch throttle, outages and bad answers
from the JWKS endpoint (cached keys keep serving, readiness says degraded), and which
algorithms each published key may verify.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client import REGISTRY

from novaza_gateway.core.jwks import max_age
from tests.conftest import Gateway
from tests.core.jwks_server import (
    AUDIENCE,
    ISSUER,
    TENANT,
    JwksServer,
    b64url,
    bearer,
    claims,
    create_tenant,
    ec_key,
    ed448_key,
    ed25519_key,
    es256_with_p384,
    hs256,
    jwks,
    jwks_server,
    rsa_key,
    running_gateway,
)

WHOAMI = "/api/v1/whoami"
KEY_A = rsa_key("key-a", n=0)
KEY_B = rsa_key("key-b", n=1)
HS_SECRET = "a-shared-secret-of-at-least-32-bytes!!"


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server() as running:
        yield running


async def whoami(gw: Gateway, token: str) -> httpx.Response:
    return await gw.client.get(WHOAMI, headers=bearer(token))


async def status_of(gw: Gateway, token: str) -> int:
    return (await whoami(gw, token)).status_code


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("novaza_auth_failures_total", {"reason": reason}) or 0.0


async def readiness(gw: Gateway) -> tuple[int, dict[str, Any]]:
    response = await gw.client.get("/health/ready")
    return response.status_code, response.json()["checks"]["jwks"]


# ----------------------------------------------------------------------------- algorithms


async def test_each_supported_algorithm_verifies_against_its_jwks_key(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    signers = {
        "RS256": KEY_A,
        "RS384": rsa_key("rs384", "RS384"),
        "RS512": rsa_key("rs512", "RS512"),
        "PS256": rsa_key("ps256", "PS256"),
        "ES256": ec_key("es256", "P-256"),
        "ES384": ec_key("es384", "P-384"),
        "EdDSA/Ed25519": ed25519_key("ed25519"),
        "EdDSA/Ed448": ed448_key("ed448"),
    }
    undeclared = rsa_key("rsa-any-alg", n=1)  # published without "alg": any RSA algorithm fits
    server.serve(
        "/jwks.json",
        {"keys": [k.jwk() for k in signers.values()] + [undeclared.jwk(alg=None)]},
    )
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json", jwt_audience=AUDIENCE
    ) as gw:
        await create_tenant(gw, KEY_A)
        statuses = {name: await status_of(gw, k.sign(claims())) for name, k in signers.items()}
        for alg in ("RS256", "RS384", "RS512", "PS256"):
            statuses[f"{alg}/undeclared"] = await status_of(gw, undeclared.sign(claims(), alg))
        assert statuses == dict.fromkeys(statuses, 200)


async def test_a_token_must_use_an_algorithm_its_key_allows(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    ec256 = ec_key("ec-256", "P-256")
    ec384 = ec_key("ec-384", "P-384")
    declared_rs256 = rsa_key("rsa-rs256", "RS256", n=1)
    ed = ed25519_key("ed")
    secret = b"a-symmetric-key-published-by-mistake!!"
    server.serve(
        "/jwks.json",
        {
            "keys": [
                KEY_A.jwk(),
                ec256.jwk(),
                ec384.jwk(),
                declared_rs256.jwk(),
                ed.jwk(),
                # not usable: a mismatched declaration, an encryption key, a symmetric key
                rsa_key("rsa-says-es256", n=1).jwk(alg="ES256"),
                rsa_key("rsa-for-enc", n=1).jwk(use="enc"),
                {"kty": "oct", "kid": "oct", "k": b64url(secret), "alg": "HS256"},
            ]
        },
    )
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        refused = {
            "RS256 with an ES256 key's kid": KEY_A.with_kid("ec-256").sign(claims()),
            "RS256 with a kid whose RSA key says ES256": rsa_key("rsa-says-es256", n=1).sign(
                claims()
            ),
            "RS256 with an encryption key's kid": rsa_key("rsa-for-enc", n=1).sign(claims()),
            "ES256 signed by the P-384 key": es256_with_p384(ec384, claims()),
            "ES256 with the P-384 key's kid": ec256.with_kid("ec-384").sign(claims()),
            "PS256 against a key declared RS256": declared_rs256.sign(claims(), "PS256"),
            "EdDSA with an EC key's kid": ed.with_kid("ec-256").sign(claims()),
            "HS256 keyed with a JWKS 'oct' key": hs256({"kid": "oct"}, claims(), secret),
        }
        for name, token in refused.items():
            response = await whoami(gw, token)
            assert response.status_code == 401, name
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        # the usable keys of that same document work
        for key in (KEY_A, ec256, ec384, declared_rs256, ed):
            assert await status_of(gw, key.sign(claims())) == 200, key.kid


# ----------------------------------------------------------------------------- rotation


async def test_key_rotation_at_the_jwks_causes_no_401(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        tokens_a = [KEY_A.sign(claims(sub=f"a-{i}")) for i in range(3)]
        assert [await status_of(gw, t) for t in tokens_a] == [200] * 3

        # the issuer publishes B beside A and starts signing with B (default 30 s interval)
        server.publish(KEY_A, KEY_B)
        tokens_b = [KEY_B.sign(claims(sub=f"b-{i}")) for i in range(3)]
        assert [await status_of(gw, t) for t in tokens_b] == [200] * 3
        assert [await status_of(gw, t) for t in tokens_a] == [200] * 3
        assert server.count() == 2  # start-up, then one refetch for B's kid

        # A is withdrawn; the scheduled refresh learns it
        server.publish(KEY_B)
        await gw.app.state.runtime.keys.refresh()
        assert [await status_of(gw, t) for t in tokens_b] == [200] * 3
        assert await status_of(gw, KEY_B.sign(claims(sub="b-new"))) == 200
        # tokens of the withdrawn key no longer pass, even those verified before
        assert [await status_of(gw, t) for t in tokens_a] == [401] * 3


async def test_requests_racing_the_rotation_refetch_all_pass(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    """While the refetch for a new kid is in flight, other requests with that kid wait for it."""
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        server.publish(KEY_A, KEY_B)
        server.delay = 0.3
        tokens = [KEY_B.sign(claims(sub=f"b-{i}")) for i in range(20)]
        statuses = await asyncio.gather(*(status_of(gw, t) for t in tokens))
        assert statuses == [200] * 20
        assert server.count() == 2


async def test_scheduled_refresh_withdraws_keys(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.publish(KEY_A, KEY_B)
    async with running_gateway(
        tmp_path / "data",
        sqlite_url,
        jwks_url=f"{server.url}/jwks.json",
        jwks_refresh_seconds=0.05,
    ) as gw:
        await create_tenant(gw, KEY_A)
        token_a = KEY_A.sign(claims())
        assert await status_of(gw, token_a) == 200
        server.publish(KEY_B)
        seen = server.count()
        deadline = time.monotonic() + 5
        while server.count() < seen + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.count() >= seen + 2, "the refresher did not run"
        assert await status_of(gw, token_a) == 401
        assert await status_of(gw, KEY_B.sign(claims())) == 200


async def test_a_kid_given_new_key_material_invalidates_cached_tokens(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    old, new = KEY_A.with_kid("k1"), KEY_B.with_kid("k1")
    server.publish(old)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, old)
        token_old = old.sign(claims())
        assert await status_of(gw, token_old) == 200  # verified and cached
        server.publish(new)  # same kid, different key (a compromised key replaced in place)
        await gw.app.state.runtime.keys.refresh()
        assert_401(await whoami(gw, token_old))
        assert await status_of(gw, new.sign(claims())) == 200


# ----------------------------------------------------------------------------- the throttle


async def test_unknown_kids_refetch_at_most_once_per_interval(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data",
        sqlite_url,
        jwks_url=f"{server.url}/jwks.json",
        jwks_refetch_interval_seconds=1.5,
    ) as gw:
        await create_tenant(gw, KEY_A)
        assert server.count() == 1
        forged = {
            batch: [KEY_B.with_kid(f"forged-{batch}-{i}").sign(claims()) for i in range(n)]
            for batch, n in (("a", 30), ("b", 10), ("c", 30))
        }

        before = failures("unknown_key")
        started = time.monotonic()
        first = await asyncio.gather(*(whoami(gw, t) for t in forged["a"]))
        for token in forged["b"]:
            first.append(await whoami(gw, token))
        assert time.monotonic() - started < 1.5, "too slow to test the interval"
        for response in first:
            assert_401(response)
        assert failures("unknown_key") == before + 40
        assert server.count() == 2  # one refetch for forty unknown kids

        await asyncio.sleep(max(0.0, started + 1.6 - time.monotonic()))
        second = await asyncio.gather(*(whoami(gw, t) for t in forged["c"]))
        assert {r.status_code for r in second} == {401}
        assert server.count() == 3  # the next interval allows exactly one more
        assert await status_of(gw, KEY_A.sign(claims())) == 200
        assert server.count() == 3  # known kids never refetch


async def test_unknown_kids_are_throttled_at_the_default_interval(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        assert gw.settings.jwks_refetch_interval_seconds == 30
        await create_tenant(gw, KEY_A)
        for i in range(20):
            assert_401(await whoami(gw, KEY_B.with_kid(f"forged-{i}").sign(claims())))
        assert server.count() == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("public, max-age=120", 120.0),
        ("max-age=0, must-revalidate", 0.0),
        ('MAX-AGE="7"', 7.0),
        ("s-maxage=30", None),
        ("no-cache", None),
        (None, None),
    ],
)
def test_max_age_of_cache_control(header: str | None, seconds: float | None) -> None:
    assert max_age(header) == seconds


async def test_a_key_published_before_use_works_right_after_an_unknown_kid_spray(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    """The spray spends the unknown-kid budget (30 s); the provider's max-age (2 s) still
    brings the key it publishes ahead of use, with no token having to ask for it."""
    server.cache_control = "public, max-age=2"
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        for i in range(20):
            assert_401(await whoami(gw, KEY_B.with_kid(f"forged-{i}").sign(claims())))
        fetched = server.count()
        server.publish(KEY_A, KEY_B)
        assert_401(await whoami(gw, KEY_B.sign(claims())))  # the budget is spent: no refetch
        assert server.count() == fetched
        deadline = time.monotonic() + 10
        while server.count() == fetched and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the background refresh, on the provider's schedule
        assert server.count() == fetched + 1
        statuses = []
        while time.monotonic() < deadline + 2:  # until the fetched answer is installed
            statuses.append(await status_of(gw, KEY_B.sign(claims())))
            if statuses[-1] == 200:
                break
            await asyncio.sleep(0.05)
        assert statuses[-1] == 200, statuses
        assert server.count() == fetched + 1  # learnt from the refresh, not a refetch


# ----------------------------------------------------------------------------- outages


async def test_jwks_outage_keeps_cached_keys_and_reports_degraded(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        ready, check = await readiness(gw)
        assert (ready, check["status"]) == (200, "ok")
        server.stop()
        # an unknown kid makes the gateway try the JWKS again, which now fails
        assert_401(await whoami(gw, KEY_B.sign(claims())))
        # fresh tokens of the cached key (never seen, so not in the token cache) still pass
        for i in range(3):
            assert await status_of(gw, KEY_A.sign(claims(sub=f"fresh-{i}"))) == 200
        status, check = await readiness(gw)
        assert status == 200
        assert check["status"] == "degraded"
        assert "cached keys" in check["detail"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error": "boom"}),
        (200, b"<html>maintenance</html>"),
        (200, {"no": "keys"}),
        (200, {"keys": []}),
        (200, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
        (302, b""),
    ],
    ids=["http-500", "not-json", "not-a-jwks", "empty-key-set", "no-usable-key", "redirect"],
)
async def test_a_bad_jwks_answer_keeps_the_cached_keys(
    tmp_path: Path, sqlite_url: str, server: JwksServer, status: int, body: Any
) -> None:
    server.publish(KEY_A)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        server.serve("/jwks.json", body, status=status)
        await gw.app.state.runtime.keys.refresh()
        assert server.count() == 2
        assert await status_of(gw, KEY_A.sign(claims(sub="after-bad-answer"))) == 200
        ready, check = await readiness(gw)
        assert (ready, check["status"]) == (200, "degraded")
        # the endpoint recovers: the next refresh clears the degradation
        server.publish(KEY_A, KEY_B)
        await gw.app.state.runtime.keys.refresh()
        assert await status_of(gw, KEY_B.sign(claims())) == 200
        assert (await readiness(gw))[1]["status"] == "ok"


async def test_one_bad_entry_does_not_spoil_the_key_set(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.serve(
        "/jwks.json",
        {"keys": ["not-an-object", None, {"kty": "RSA", "kid": "broken"}, KEY_A.jwk()]},
    )
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        await create_tenant(gw, KEY_A)
        assert await status_of(gw, KEY_A.sign(claims())) == 200
        assert (await readiness(gw))[1]["status"] == "ok"


async def test_gateway_started_during_an_outage_recovers_when_the_jwks_answers(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    server.serve("/jwks.json", {"error": "starting"}, status=503)
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json"
    ) as gw:
        ready, check = await readiness(gw)
        assert (ready, check["status"]) == (503, "fail")
        server.publish(KEY_A)
        await create_tenant(gw, KEY_A)  # the unknown kid fetches the now-available keys
        assert await status_of(gw, KEY_A.sign(claims())) == 200
        assert (await readiness(gw))[0] == 200


# ----------------------------------------------------------------------------- other sources


async def test_discovery_from_the_issuer_finds_the_jwks_and_iss_is_enforced(
    tmp_path: Path, sqlite_url: str, server: JwksServer
) -> None:
    issuer = f"{server.url}/realms/clinic"
    server.serve(
        "/realms/clinic/.well-known/openid-configuration",
        {"issuer": issuer, "jwks_uri": f"{server.url}/realms/clinic/certs"},
    )
    server.publish(KEY_A, path="/realms/clinic/certs")
    async with running_gateway(tmp_path / "data", sqlite_url, jwt_issuer=issuer) as gw:
        assert server.requests == [
            "/realms/clinic/.well-known/openid-configuration",
            "/realms/clinic/certs",
        ]
        admin = KEY_A.sign(claims(sub="admin-1", tenant=None, scope="platform:admin", iss=issuer))
        created = await gw.client.post(
            "/admin/tenants/",
            json={"slug": TENANT, "name": "Acme", "status": "active"},
            headers=bearer(admin),
        )
        assert created.status_code == 201, created.text
        assert await status_of(gw, KEY_A.sign(claims(iss=issuer))) == 200
        before = failures("wrong_issuer")
        assert_401(await whoami(gw, KEY_A.sign(claims(iss=ISSUER))))
        assert_401(await whoami(gw, KEY_A.sign(claims(iss=issuer + "/"))))
        assert failures("wrong_issuer") == before + 2
        assert_401(await whoami(gw, KEY_A.sign(claims(iss=None))))
        # a rotation refetches the JWKS itself; discovery is not repeated
        server.publish(KEY_A, KEY_B, path="/realms/clinic/certs")
        assert await status_of(gw, KEY_B.sign(claims(iss=issuer))) == 200
        assert server.requests.count("/realms/clinic/.well-known/openid-configuration") == 1


async def test_jwks_file_source(tmp_path: Path, sqlite_url: str) -> None:
    jwks_file = tmp_path / "trusted-keys.json"
    jwks_file.write_text(json.dumps(jwks(KEY_A)))
    async with running_gateway(tmp_path / "data", sqlite_url, jwks_file=jwks_file) as gw:
        assert gw.app.state.runtime.keys.source == "file"
        await create_tenant(gw, KEY_A)
        assert await status_of(gw, KEY_A.sign(claims())) == 200
        # the operator adds B to the file; B's first token makes the gateway re-read it
        jwks_file.write_text(json.dumps(jwks(KEY_A, KEY_B)))
        assert await status_of(gw, KEY_B.sign(claims(sub="b"))) == 200
        # keys not in the file are refused, the dev key included
        assert_401(await whoami(gw, rsa_key("key-c", n=2).sign(claims())))
        assert_401(await gw.client.get(WHOAMI, headers=gw.auth(TENANT)))


@pytest.mark.parametrize("with_secret", [True, False], ids=["secret-set", "no-secret"])
async def test_hs256_only_with_the_configured_secret(
    tmp_path: Path, sqlite_url: str, server: JwksServer, with_secret: bool
) -> None:
    server.publish(KEY_A)
    extra = {"jwt_hs256_secret": HS_SECRET} if with_secret else {}
    async with running_gateway(
        tmp_path / "data", sqlite_url, jwks_url=f"{server.url}/jwks.json", **extra
    ) as gw:
        await create_tenant(gw, KEY_A)
        good = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
        before = failures("algorithm_not_allowed")
        response = await whoami(gw, good)
        if with_secret:
            assert response.status_code == 200, response.text
            assert response.json()["tenant"] == TENANT
        else:
            assert_401(response)
            assert failures("algorithm_not_allowed") == before + 1
        wrong = jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
        assert_401(await whoami(gw, wrong))
        # asymmetric keys keep working beside the secret
        assert await status_of(gw, KEY_A.sign(claims())) == 200


def test_signing_keys_are_distinct() -> None:
    """The tests above rely on A and B (and the cached RSA keys) being different keys."""
    assert KEY_A.jwk()["n"] != KEY_B.jwk()["n"]
