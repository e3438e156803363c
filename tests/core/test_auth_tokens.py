"""Token authentication under attack: a corpus of crafted tokens, tenant override, admin scope,
and the verified-token cache.

The corpus runs against a gateway that trusts a JWKS file (RSA, Ed25519 and P-256 keys) with
issuer and audience configured, once without and once with an HS256 secret. Every crafted
token must get 401 with ``WWW-Authenticate: Bearer error="invalid_token"``, count under the
expected reason in ``novaza_auth_failures_total``, and never show up in a log record or in
the response. An attacker's server, named by ``jku``/``x5u`` headers, must receive nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from novaza_gateway.core.logging import JsonFormatter
from novaza_gateway.core.policy import TENANT_SCOPES
from tests.conftest import Gateway
from tests.core.jwks_server import (
    AUDIENCE,
    ISSUER,
    TENANT,
    JwksServer,
    b64json,
    bearer,
    claims,
    create_tenant,
    ec_key,
    ed25519_key,
    hs256,
    jwks,
    jwks_server,
    rsa_key,
    running_gateway,
    self_signed_cert,
    unsigned,
)

RSA = rsa_key("rsa-1", n=0)
ED = ed25519_key("ed-1")
EC = ec_key("ec-1")
ATTACKER = rsa_key("attacker-1", n=1)
ATTACKER_ED = ed25519_key("attacker-ed")
HS_SECRET = "a-shared-secret-of-at-least-32-bytes!!"
WHOAMI = "/api/v1/whoami"
UNAUTHENTICATED_HEADER = 'Bearer error="invalid_token"'


@dataclass
class Secure:
    gw: Gateway
    attacker: JwksServer
    jwks_file: Path
    hs256: bool


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=[False, True], ids=["no-hs256", "hs256"]
)
async def secure(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> AsyncIterator[Secure]:
    """One gateway per mode for the whole corpus: each case sends a token no other sends."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    (tmp_path / "data").mkdir()
    shutil.copy(sqlite_template, tmp_path / "data" / "novaza.db")
    sqlite_url = f"sqlite:///{tmp_path / 'data' / 'novaza.db'}"
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(RSA, ED, EC)))
    overrides: dict[str, Any] = {
        "jwks_file": jwks_file,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
    }
    if request.param:
        overrides["jwt_hs256_secret"] = HS_SECRET
    with jwks_server() as attacker:
        attacker.publish(ATTACKER, ATTACKER_ED)
        attacker.serve(
            "/cert.pem", self_signed_cert(ATTACKER).public_bytes(serialization.Encoding.PEM)
        )
        async with running_gateway(tmp_path / "data", sqlite_url, **overrides) as gw:
            await create_tenant(gw, RSA)
            yield Secure(gw, attacker, jwks_file, bool(request.param))


# ----------------------------------------------------------------------------- the corpus


def _now() -> int:
    return int(time.time())


def _swap_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json(payload)}.{signature}"


def _flip_signature(token: str) -> str:
    """Change one character in the middle of the signature (the last may be padding bits)."""
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _x5c(key: Any) -> list[str]:
    der = self_signed_cert(key).public_bytes(serialization.Encoding.DER)
    return [base64.b64encode(der).decode()]


def _none(spelling: str, kid: str | None = "rsa-1", signature: str = "") -> Callable[[Secure], str]:
    header = {"alg": spelling, "typ": "JWT", **({"kid": kid} if kid else {})}
    return lambda s: unsigned(header, claims(scope="platform:admin"), signature)


def _none_with_real_signature(s: Secure) -> str:
    signature = RSA.sign(claims()).split(".")[2]
    return unsigned({"alg": "none", "kid": "rsa-1"}, claims(), signature)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Secure], str]
    reason: str
    reason_with_hs256: str | None = None

    def expected(self, hs256_enabled: bool) -> str:
        return (self.reason_with_hs256 or self.reason) if hs256_enabled else self.reason


CORPUS = [
    # alg none, in every spelling, with or without a kid or a signature
    *(
        Case(f"alg-{s}", _none(s), "algorithm_not_allowed")
        for s in ("none", "None", "NONE", "nOnE")
    ),
    Case("alg-none-no-kid", _none("none", kid=None), "algorithm_not_allowed"),
    Case("alg-none-real-signature", _none_with_real_signature, "algorithm_not_allowed"),
    Case("alg-empty", _none(""), "algorithm_not_allowed"),
    Case("alg-missing", lambda s: unsigned({"kid": "rsa-1"}, claims()), "algorithm_not_allowed"),
    # key confusion: HMAC keyed with a public key the gateway trusts
    Case(
        "hs256-keyed-with-rsa-public-pem",
        lambda s: hs256({"kid": "rsa-1", "typ": "JWT"}, claims(), RSA.public_pem()),
        "algorithm_not_allowed",
        "bad_signature",
    ),
    Case(
        "hs256-keyed-with-rsa-public-pem-no-kid",
        lambda s: hs256({"typ": "JWT"}, claims(), RSA.public_pem()),
        "algorithm_not_allowed",
        "bad_signature",
    ),
    Case(
        "hs256-keyed-with-ed25519-public-pem",
        lambda s: hs256({"kid": "ed-1"}, claims(), ED.public_pem()),
        "algorithm_not_allowed",
        "bad_signature",
    ),
    Case(
        "hs256-keyed-with-rsa-jwk-json",
        lambda s: hs256({"kid": "rsa-1"}, claims(), json.dumps(RSA.jwk()).encode()),
        "algorithm_not_allowed",
        "bad_signature",
    ),
    Case(
        "hs512-keyed-with-the-hs256-secret",
        lambda s: jwt.encode(claims(), HS_SECRET * 2, algorithm="HS512"),
        "algorithm_not_allowed",
    ),
    # algorithms that do not fit the key the kid names, or are not on the allow-list
    Case("rs256-with-ec-kid", lambda s: RSA.with_kid("ec-1").sign(claims()), "unknown_key"),
    Case("rs256-with-ed25519-kid", lambda s: RSA.with_kid("ed-1").sign(claims()), "unknown_key"),
    Case("es256-with-rsa-kid", lambda s: EC.with_kid("rsa-1").sign(claims()), "unknown_key"),
    Case("eddsa-with-ec-kid", lambda s: ED.with_kid("ec-1").sign(claims()), "unknown_key"),
    Case(
        "ps256-against-key-declared-rs256",
        lambda s: RSA.sign(claims(), alg="PS256"),
        "unknown_key",
    ),
    Case("ps512-not-allowed", lambda s: RSA.sign(claims(), alg="PS512"), "algorithm_not_allowed"),
    Case(
        "es512-not-allowed",
        lambda s: unsigned({"alg": "ES512"}, claims(), "AAAA"),
        "algorithm_not_allowed",
    ),
    # tampering
    Case(
        "tampered-payload",
        lambda s: _swap_payload(RSA.sign(claims()), claims(scope="platform:admin tenant:override")),
        "bad_signature",
    ),
    Case(
        "tampered-payload-other-tenant",
        lambda s: _swap_payload(RSA.sign(claims(tenant="beta")), claims()),
        "bad_signature",
    ),
    Case(
        "tampered-signature-rs256", lambda s: _flip_signature(RSA.sign(claims())), "bad_signature"
    ),
    Case("tampered-signature-eddsa", lambda s: _flip_signature(ED.sign(claims())), "bad_signature"),
    Case("tampered-signature-es256", lambda s: _flip_signature(EC.sign(claims())), "bad_signature"),
    Case(
        "signature-stripped", lambda s: RSA.sign(claims()).rsplit(".", 1)[0] + ".", "bad_signature"
    ),
    # time claims
    Case(
        "expired-past-leeway",
        lambda s: RSA.sign(claims(iat=_now() - 900, nbf=_now() - 900, exp=_now() - 90)),
        "expired",
    ),
    Case("nbf-in-the-future", lambda s: RSA.sign(claims(nbf=_now() + 300)), "not_yet_valid"),
    Case("iat-in-the-future", lambda s: RSA.sign(claims(iat=_now() + 300)), "not_yet_valid"),
    Case("exp-missing", lambda s: RSA.sign(claims(exp=None)), "missing_claim"),
    Case("exp-not-a-number", lambda s: RSA.sign(claims(exp="tomorrow")), "invalid"),
    # the claims profile (core.claims): NumericDate is a JSON number, never a numeric string
    Case("exp-numeric-string", lambda s: RSA.sign(claims(exp=str(_now() + 600))), "invalid_claims"),
    Case("iat-numeric-string", lambda s: RSA.sign(claims(iat=str(_now()))), "invalid_claims"),
    Case("nbf-boolean", lambda s: RSA.sign(claims(nbf=True)), "invalid_claims"),
    Case("sub-empty", lambda s: RSA.sign(claims(sub="")), "invalid_claims"),
    Case("sub-blank", lambda s: RSA.sign(claims(sub="   ")), "invalid_claims"),
    Case("typ-logout-token", lambda s: RSA.sign(claims(), typ="logout+jwt"), "wrong_type"),
    Case("typ-id-token", lambda s: RSA.sign(claims(), typ="id_token+jwt"), "wrong_type"),
    # issuer, audience, subject
    Case("iss-wrong", lambda s: RSA.sign(claims(iss="https://evil.example")), "wrong_issuer"),
    Case("iss-missing", lambda s: RSA.sign(claims(iss=None)), "missing_claim"),
    Case("aud-wrong", lambda s: RSA.sign(claims(aud="another-api")), "wrong_audience"),
    Case("aud-missing", lambda s: RSA.sign(claims(aud=None)), "missing_claim"),
    Case("sub-missing", lambda s: RSA.sign(claims(sub=None)), "missing_claim"),
    # kid games: the kid is a lookup key, never a path or a query
    Case(
        "kid-path-traversal",
        lambda s: ATTACKER.with_kid("../../etc/passwd").sign(claims()),
        "unknown_key",
    ),
    Case("kid-dev-null", lambda s: ATTACKER.with_kid("/dev/null").sign(claims()), "unknown_key"),
    Case(
        "kid-dev-null-hs256-empty-key",
        lambda s: hs256({"kid": "/dev/null"}, claims(), b""),
        "algorithm_not_allowed",
        "bad_signature",
    ),
    Case(
        "kid-names-the-jwks-file",
        lambda s: ATTACKER.with_kid(str(s.jwks_file)).sign(claims()),
        "unknown_key",
    ),
    Case(
        "kid-names-the-jwks-file-hs256-keyed-with-its-content",
        lambda s: hs256({"kid": str(s.jwks_file)}, claims(), s.jwks_file.read_bytes()),
        "algorithm_not_allowed",
        "bad_signature",
    ),
    Case(
        "kid-relative-path-to-jwks-file",
        lambda s: ATTACKER.with_kid("../jwks.json").sign(claims()),
        "unknown_key",
    ),
    Case("kid-sql", lambda s: ATTACKER.with_kid("x' OR '1'='1").sign(claims()), "unknown_key"),
    Case(
        "kid-not-a-string",
        lambda s: unsigned({"alg": "RS256", "kid": {"path": "/"}}, claims(), "c2ln"),
        "malformed",
    ),
    # key-fetching headers point at the attacker: never followed
    Case(
        "jku-attacker-kid",
        lambda s: ATTACKER.sign(claims(), jku=f"{s.attacker.url}/jwks.json"),
        "unknown_key",
    ),
    Case(
        "jku-trusted-kid",
        lambda s: ATTACKER.with_kid("rsa-1").sign(claims(), jku=f"{s.attacker.url}/jwks.json"),
        "bad_signature",
    ),
    Case(
        "x5u-attacker-kid",
        lambda s: ATTACKER.sign(claims(), x5u=f"{s.attacker.url}/cert.pem"),
        "unknown_key",
    ),
    Case(
        "x5u-no-kid",
        lambda s: ATTACKER.with_kid(None).sign(claims(), x5u=f"{s.attacker.url}/cert.pem"),
        "bad_signature",
    ),
    Case(
        "jwk-embedded-attacker-key",
        lambda s: ATTACKER.sign(claims(), jwk=ATTACKER.jwk()),
        "unknown_key",
    ),
    Case(
        "jwk-embedded-trusted-kid",
        lambda s: ATTACKER.with_kid("rsa-1").sign(claims(), jwk=ATTACKER.jwk(kid="rsa-1")),
        "bad_signature",
    ),
    Case(
        "x5c-attacker-cert",
        lambda s: ATTACKER.with_kid(None).sign(claims(), x5c=_x5c(ATTACKER)),
        "bad_signature",
    ),
    Case(
        "every-key-header-eddsa",
        lambda s: ATTACKER_ED.with_kid("ed-1").sign(
            claims(),
            jku=f"{s.attacker.url}/jwks.json",
            x5u=f"{s.attacker.url}/cert.pem",
            jwk=ATTACKER_ED.jwk(kid="ed-1"),
        ),
        "bad_signature",
    ),
    # a key the gateway does not trust, under a kid it does
    Case(
        "untrusted-rsa-trusted-kid",
        lambda s: ATTACKER.with_kid("rsa-1").sign(claims()),
        "bad_signature",
    ),
    Case("untrusted-rsa-no-kid", lambda s: ATTACKER.with_kid(None).sign(claims()), "bad_signature"),
    Case(
        "untrusted-ed25519-trusted-kid",
        lambda s: ATTACKER_ED.with_kid("ed-1").sign(claims()),
        "bad_signature",
    ),
    Case(
        "untrusted-ec-trusted-kid",
        lambda s: ec_key("ec-1", n=1).sign(claims()),
        "bad_signature",
    ),
    # not a JWT at all
    Case("garbage", lambda s: "not-a-token", "malformed"),
    Case("three-dots", lambda s: "a.b.c", "malformed"),
    Case("header-not-json", lambda s: "eyJub3Q.eyJzdWIiOiJ4In0.c2ln", "malformed"),
    Case("too-large", lambda s: RSA.sign(claims(padding="x" * 9000)), "too_large"),
]


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("novaza_auth_failures_total", {"reason": reason}) or 0.0


def everything_logged(records: list[logging.LogRecord]) -> str:
    """Each record in full: message, arguments and every extra field."""
    formatter = JsonFormatter()
    return "\n".join(f"{formatter.format(r)}\n{vars(r)!r}" for r in records)


def assert_refused(response: httpx.Response, token: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == UNAUTHENTICATED_HEADER
    assert response.json()["code"] == "UNAUTHENTICATED"
    _assert_not_disclosed(token, response.text + repr(response.headers.multi_items()))


def _assert_not_disclosed(token: str, text: str) -> None:
    assert token not in text
    for segment in token.split(".")[1:]:  # the claims and the signature
        if len(segment) >= 16:
            assert segment not in text


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
async def test_crafted_token_is_refused(
    case: Case, secure: Secure, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = case.build(secure)
    reason = case.expected(secure.hs256)
    before = failures(reason)

    response = await secure.gw.client.get(WHOAMI, headers=bearer(token))

    assert_refused(response, token)
    assert failures(reason) == before + 1
    auth_records = [r for r in caplog.records if r.name == "novaza.auth"]
    assert [getattr(r, "reason", None) for r in auth_records] == [reason]
    _assert_not_disclosed(token, everything_logged(caplog.records))
    assert secure.attacker.requests == []


@pytest.mark.asyncio(loop_scope="module")
async def test_the_corpus_gateway_accepts_genuine_tokens(secure: Secure) -> None:
    """The control: the same gateway admits well-formed tokens, so the 401s mean something."""
    now = _now()
    genuine = [
        RSA.sign(claims()),
        ED.sign(claims()),
        EC.sign(claims()),
        RSA.with_kid(None).sign(claims()),  # no kid: every key that fits the algorithm is tried
        # within the 60 s leeway
        RSA.sign(claims(iat=now - 900, nbf=now - 900, exp=now - 30)),
        RSA.sign(claims(nbf=now + 30)),
        RSA.sign(claims(iat=now + 30)),
        RSA.sign(claims(aud=[AUDIENCE, "another-api"])),
        RSA.sign(claims(), typ="at+jwt"),  # RFC 9068 access tokens
        RSA.sign(claims(), typ="application/at+jwt"),
        RSA.sign(claims(exp=now + 600.5)),  # NumericDate may carry a fraction
    ]
    for token in genuine:
        response = await secure.gw.client.get(WHOAMI, headers=bearer(token))
        assert response.status_code == 200, (jwt.get_unverified_header(token), response.text)
        assert response.json()["tenant"] == TENANT
    hs = hs256({"typ": "JWT"}, claims(), HS_SECRET.encode())
    response = await secure.gw.client.get(WHOAMI, headers=bearer(hs))
    assert response.status_code == (200 if secure.hs256 else 401)


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc.def.ghi", "bearer"],
)
async def test_malformed_authorization_header_is_401(gw: Gateway, authorization: str) -> None:
    await gw.create_tenant("acme")
    response = await gw.client.get(WHOAMI, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == UNAUTHENTICATED_HEADER
    assert response.json()["code"] == "UNAUTHENTICATED"


async def test_missing_token_is_401_with_challenge(gw: Gateway) -> None:
    await gw.create_tenant("acme")
    response = await gw.client.get(WHOAMI)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == UNAUTHENTICATED_HEADER


# ----------------------------------------------------------------------------- tenant override


async def test_x_tenant_id_from_a_normal_token_is_forbidden(gw: Gateway) -> None:
    await gw.create_tenant("acme")
    await gw.create_tenant("beta")
    token = gw.token("acme")
    for target in ("beta", "acme", gw.tenants["beta"]["id"]):
        response = await gw.client.get(WHOAMI, headers={**bearer(token), "X-Tenant-ID": target})
        assert response.status_code == 403, target
        assert response.json()["code"] == "FORBIDDEN"
    # without the header the same token is fine
    response = await gw.client.get(WHOAMI, headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["tenant"] == "acme"


async def test_x_tenant_id_with_override_scope_selects_that_tenant(gw: Gateway) -> None:
    await gw.create_tenant("acme")
    await gw.create_tenant("beta")
    service = gw.token("acme", "tenant:override imaging:read", sub="svc-1")
    response = await gw.client.get(WHOAMI, headers={**bearer(service), "X-Tenant-ID": "beta"})
    assert response.status_code == 200, response.text
    assert response.json()["tenant"] == "beta"
    assert response.json()["subject"] == "svc-1"
    # a service token naming no tenant at all works through the header alone
    tenantless = gw.token(None, "tenant:override", sub="svc-2")
    response = await gw.client.get(WHOAMI, headers={**bearer(tenantless), "X-Tenant-ID": "acme"})
    assert response.json()["tenant"] == "acme"
    # ... and still cannot reach a tenant that does not exist
    response = await gw.client.get(WHOAMI, headers={**bearer(tenantless), "X-Tenant-ID": "nope"})
    assert response.status_code == 403
    assert response.json()["code"] == "TENANT_UNKNOWN"


# ----------------------------------------------------------------------------- admin scope

ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/tenants/", None),
    ("POST", "/admin/tenants/", {"slug": "evil", "name": "Evil", "status": "active"}),
    ("GET", "/admin/tenants/{slug}", None),
    ("GET", "/admin/tenants/{slug}/audit", None),
    ("PUT", "/admin/tenants/{slug}", {"name": "Pwned", "plan": "enterprise"}),
    ("DELETE", "/admin/tenants/{slug}", None),
    ("POST", "/admin/tenants/{slug}/activate", None),
    ("POST", "/admin/tenants/{slug}/suspend", None),
    ("POST", "/admin/tenants/{slug}/wallet/credits", {"amount": 100, "currency": "EUR"}),
    ("PUT", "/admin/tenants/{slug}/entitlements/overrides", {"addons": ["priority_support"]}),
    ("PUT", "/admin/tenants/{slug}/wallet/floor", {"floor": -100000}),
    ("POST", "/admin/tenants/{slug}/invoices/{invoice_id}/void", None),
    ("POST", "/admin/tenants/{slug}/invoices/{invoice_id}/mark-uncollectible", None),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ADMIN_ROUTES]
SOME_INVOICE = "0b9d2c1e-3f4a-4b5c-8d6e-7f8091a2b3c4"  # the guard refuses before any lookup


def test_the_admin_route_table_is_complete(gw: Gateway) -> None:
    """A new admin route must join ADMIN_ROUTES, so the scope tests below cover it."""
    served = {
        (method, route.path)
        for route in gw.app.routes
        if getattr(route, "path", "").startswith("/admin")
        for method in getattr(route, "methods", set()) - {"HEAD"}
    }
    assert served == {(m, p) for m, p, _ in ADMIN_ROUTES}


async def _tenant_unchanged(gw: Gateway) -> None:
    listed = await gw.client.get("/admin/tenants/", headers=gw.admin())
    assert [(t["slug"], t["name"], t["status"]) for t in listed.json()["data"]] == [
        ("acme", "Acme", "active")
    ]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_admin_route_refuses_tenant_tokens(
    gw: Gateway, method: str, path: str, body: dict[str, Any] | None
) -> None:
    await gw.create_tenant("acme")
    url = path.format(slug="acme", invoice_id=SOME_INVOICE)
    every_tenant_scope = " ".join((*TENANT_SCOPES, "tenant:override"))
    for token in (gw.token("acme"), gw.token("acme", every_tenant_scope), gw.token(None, "")):
        response = await gw.client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "FORBIDDEN"
    await _tenant_unchanged(gw)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_admin_route_refuses_anonymous_callers(
    gw: Gateway, method: str, path: str, body: dict[str, Any] | None
) -> None:
    await gw.create_tenant("acme")
    response = await gw.client.request(
        method, path.format(slug="acme", invoice_id=SOME_INVOICE), json=body
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == UNAUTHENTICATED_HEADER
    assert response.json()["code"] == "UNAUTHENTICATED"
    await _tenant_unchanged(gw)


async def test_admin_scope_is_what_opens_the_admin_routes(gw: Gateway) -> None:
    await gw.create_tenant("acme")
    response = await gw.client.get("/admin/tenants/acme", headers=gw.admin())
    assert response.status_code == 200
    assert response.json()["slug"] == "acme"


# ----------------------------------------------------------------------------- the cache


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return calls


async def test_repeat_call_with_a_verified_token_does_no_signature_math(
    gw: Gateway, decode_calls: list[str]
) -> None:
    await gw.create_tenant("acme")
    decode_calls.clear()
    token = gw.token("acme")
    for _ in range(3):
        response = await gw.client.get(WHOAMI, headers=bearer(token))
        assert response.status_code == 200
    assert decode_calls == [token]
    other = gw.token("acme", sub="user-2")
    response = await gw.client.get(WHOAMI, headers=bearer(other))
    assert response.json()["subject"] == "user-2"
    assert decode_calls == [token, other]


async def test_refused_tokens_are_not_cached_as_good(gw: Gateway, decode_calls: list[str]) -> None:
    await gw.create_tenant("acme")
    forged = _flip_signature(gw.token("acme"))
    for _ in range(2):
        response = await gw.client.get(WHOAMI, headers=bearer(forged))
        assert response.status_code == 401
    assert decode_calls.count(forged) == 2


async def test_a_cached_token_is_refused_once_it_expires(
    tmp_path: Path, sqlite_url: str, decode_calls: list[str]
) -> None:
    async with running_gateway(tmp_path / "data", sqlite_url, jwt_leeway_seconds=0) as gw:
        await gw.create_tenant("acme")
        token = gw.token("acme", ttl=2)  # at least a second to live: exp is whole seconds
        exp = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
        decode_calls.clear()
        for _ in range(2):
            response = await gw.client.get(WHOAMI, headers=bearer(token))
            assert response.status_code == 200
        assert decode_calls == [token]  # the second answer came from the cache
        time.sleep(max(0.0, exp - time.time()) + 0.05)
        response = await gw.client.get(WHOAMI, headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == UNAUTHENTICATED_HEADER
