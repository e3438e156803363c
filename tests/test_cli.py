"""The ``novaza`` command as an operator runs it: ``python -m novaza_gateway ...``."""

from __future__ import annotations

import getpass
import json
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from alembic.script import ScriptDirectory

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import ADMIN_SCOPE, TENANT_SCOPES
from novaza_gateway.migrate import alembic_config
from tests import procs
from tests.conftest import free_port, need


def sqlite_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def mint(data_dir: Path, tenant: str) -> str:
    return devkeys.mint_token(data_dir, subject="u", scopes=TENANT_SCOPES, tenant=tenant)


def verified_claims(data_dir: Path, token: str) -> dict[str, Any]:
    """The token's claims, checked against the dev key under ``data_dir`` (not just decoded)."""
    token = token.strip()
    jwk = devkeys.dev_jwks(data_dir)["keys"][0]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    key = jwt.PyJWK(jwk).key
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["EdDSA"], options={"verify_aud": False}
    )
    return claims


# ----------------------------------------------------------------------------- migrate


def test_migrate_twice_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    env = procs.novaza_env(tmp_path / "data")  # no database URL: DATA_DIR/novaza.db
    first = procs.run_cli(env, "migrate")
    second = procs.run_cli(env, "migrate")
    assert "latest revision" in first.stdout
    assert "latest revision" in second.stdout
    db = tmp_path / "data" / "novaza.db"
    tables = {r[0] for r in sqlite_rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tenants", "audit_events", "alembic_version"} <= tables
    # at every head the package ships, once each
    heads = ScriptDirectory.from_config(alembic_config(f"sqlite:///{db}")).get_heads()
    versions = [r[0] for r in sqlite_rows(db, "SELECT version_num FROM alembic_version")]
    assert sorted(versions) == sorted(heads)


def test_migrate_again_on_a_migrated_postgres(tmp_path: Path, pg_database: str | None) -> None:
    need(pg_database is not None, "PostgreSQL not reachable")
    assert pg_database is not None  # the session fixture migrated it once already
    env = procs.novaza_env(tmp_path / "data", pg_database)
    assert "latest revision" in procs.run_cli(env, "migrate").stdout
    assert not (tmp_path / "data" / "novaza.db").exists()  # it used PostgreSQL, not SQLite


# ----------------------------------------------------------------------------- tenants


def test_tenant_lifecycle_from_the_shell_is_audited(tmp_path: Path, sqlite_url: str) -> None:
    env = procs.novaza_env(tmp_path / "data", sqlite_url)
    db = Path(sqlite_url.removeprefix("sqlite:///"))

    created = json.loads(
        procs.run_cli(
            env,
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme Clinic",
            "--plan",
            "professional",
            "--addon",
            "emr",
            "--addon",
            "medical_imaging",
            "--activate",
        ).stdout
    )
    assert created["slug"] == "acme"
    assert created["status"] == "active"
    assert created["plan"] == "professional"
    assert created["addons"] == ["emr", "medical_imaging"]
    assert set(created["effectiveRateLimit"]) == {"ratePerSecond", "burst"}  # the plan's

    again, quiet, pending, missing = procs.run_cli_parallel(
        (env, ("tenants", "create", "acme", "--name", "Other")),
        (env, ("tenants", "create", "acme", "--name", "Other", "--if-missing")),
        (env, ("tenants", "create", "zeta", "--name", "Zeta")),
        (env, ("tenants", "suspend", "nobody")),
    )
    assert again.returncode == 1
    assert "CONFLICT" in again.stderr
    assert "Traceback" not in again.stderr
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["id"] == created["id"]  # the existing one, unchanged
    assert json.loads(quiet.stdout)["name"] == "Acme Clinic"
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)["status"] == "pending"
    assert json.loads(pending.stdout)["plan"] == "starter"
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr

    suspended = json.loads(procs.run_cli(env, "tenants", "suspend", "acme").stdout)
    assert suspended["status"] == "suspended"
    assert suspended["suspendedAt"] is not None
    assert sqlite_rows(db, "SELECT status FROM tenants WHERE slug='acme'") == [("suspended",)]

    listed, only_suspended = procs.run_cli_parallel(
        (env, ("tenants", "list")),
        (env, ("tenants", "list", "--status", "suspended")),
    )
    assert listed.stdout.splitlines() == [
        "acme\tsuspended\tprofessional\temr,medical_imaging",
        "zeta\tpending\tstarter\t",
    ]
    assert only_suspended.stdout.splitlines() == [
        "acme\tsuspended\tprofessional\temr,medical_imaging"
    ]

    activated_run = procs.run_cli(env, "tenants", "activate", "acme")
    activated = json.loads(activated_run.stdout)
    assert activated["status"] == "active"
    assert activated["suspendedAt"] is None
    assert sqlite_rows(db, "SELECT status FROM tenants WHERE slug='acme'") == [("active",)]

    events = sqlite_rows(
        db,
        "SELECT action, actor, resource_type, tenant_id, outcome, before, after "
        "FROM audit_events WHERE resource_id='acme' ORDER BY at",
    )
    assert [e[0] for e in events] == ["tenant.create", "tenant.suspend", "tenant.activate"]
    for action, actor, resource_type, tenant_id, outcome, _, _ in events:
        assert actor == f"cli:{getpass.getuser()}", action
        assert resource_type == "tenant"
        assert tenant_id == created["id"]
        assert outcome == "success"
    create_event, suspend_event, _ = events
    assert create_event[5] is None  # no before-image: SQL NULL, not the JSON text null
    assert json.loads(create_event[6])["status"] == "active"
    assert json.loads(suspend_event[5])["status"] == "active"
    assert json.loads(suspend_event[6])["status"] == "suspended"
    # the refused duplicate and the --if-missing no-op left no trace; zeta has its create
    all_actions = sqlite_rows(
        db, "SELECT resource_id, action FROM audit_events WHERE resource_type='tenant'"
    )
    assert sorted(all_actions) == sorted(
        [
            ("acme", "tenant.create"),
            ("acme", "tenant.suspend"),
            ("acme", "tenant.activate"),
            ("zeta", "tenant.create"),
        ]
    )


def test_suspend_from_the_shell_reaches_a_running_gateway(
    tmp_path: Path, sqlite_url: str, redis_url: str
) -> None:
    """The CLI announces the change on Redis: the server's cache (TTL 60 s) drops it at once."""
    data_dir = tmp_path / "data"
    env = procs.novaza_env(data_dir, sqlite_url, redis_url, tenant_cache_ttl_seconds="60")
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    server = procs.start(env, wait_ready=False)
    try:
        procs.run_cli(env, "tenants", "create", slug, "--name", "Shell", "--activate")
        procs.wait_healthy(server)
        whoami = f"{server.url}/api/v1/whoami"
        headers = {"Authorization": f"Bearer {mint(data_dir, slug)}"}
        assert httpx.get(whoami, headers=headers).status_code == 200  # now cached
        procs.run_cli(env, "tenants", "suspend", slug)
        deadline = time.monotonic() + 2.0
        while True:
            response = httpx.get(whoami, headers=headers)
            if response.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status_code == 403, "suspension from the shell not seen within 2 s"
        assert response.json()["code"] == "TENANT_SUSPENDED"
    finally:
        server.stop()
        server.kill_group()


# ----------------------------------------------------------------------------- token


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every ``novaza token`` variant, run at once; each test checks its own."""
    data_dir = tmp_path_factory.mktemp("tokens") / "data"
    jwks = data_dir.parent / "jwks.json"
    jwks.write_text(json.dumps({"keys": []}))
    dev = procs.novaza_env(data_dir)
    claim_env = procs.novaza_env(data_dir, tenant_claim="org", jwt_audience="novaza-api")
    no_dev = procs.novaza_env(data_dir.parent / "no-dev", jwks_file=str(jwks))
    devkeys.load_or_create_key(data_dir)  # one key for all, not a race between commands
    commands = {
        "tenant": (dev, ("token", "--tenant", "acme")),
        "custom": (
            dev,
            (
                "token",
                "--tenant",
                "acme",
                "--scope",
                "imaging:read desk:write",
                "--sub",
                "alice@example.org",
                "--ttl",
                "120",
            ),
        ),
        "admin": (dev, ("token", "--admin")),
        "neither": (dev, ("token",)),
        "claim": (claim_env, ("token", "--tenant", "acme")),
        "no_dev": (no_dev, ("token", "--tenant", "acme")),
    }
    before = int(time.time())
    results = procs.run_cli_parallel(*commands.values())
    return {
        "data_dir": data_dir,
        "no_dev_dir": data_dir.parent / "no-dev",
        "before": before,
        **dict(zip(commands, results, strict=True)),
    }


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_token_for_a_tenant_carries_the_tenant_and_every_tenant_scope(
    tokens: dict[str, Any],
) -> None:
    claims = verified_claims(tokens["data_dir"], ok(tokens["tenant"]))
    assert claims["tenant_id"] == "acme"
    assert claims["scope"].split() == sorted(TENANT_SCOPES)
    assert claims["sub"] == "dev-user"
    assert claims["iss"] == devkeys.DEV_ISSUER
    assert claims["exp"] - claims["iat"] == 3600
    assert tokens["before"] - 5 <= claims["iat"] <= time.time() + 5
    assert "aud" not in claims


def test_token_scope_sub_and_ttl_options(tokens: dict[str, Any]) -> None:
    claims = verified_claims(tokens["data_dir"], ok(tokens["custom"]))
    assert claims["scope"].split() == ["desk:write", "imaging:read"]
    assert claims["sub"] == "alice@example.org"
    assert claims["exp"] - claims["iat"] == 120
    assert claims["tenant_id"] == "acme"


def test_token_follows_the_configured_tenant_claim_and_audience(tokens: dict[str, Any]) -> None:
    claims = verified_claims(tokens["data_dir"], ok(tokens["claim"]))
    assert claims["org"] == "acme"
    assert "tenant_id" not in claims
    assert claims["aud"] == "novaza-api"


def test_admin_token_has_platform_admin_and_no_tenant(tokens: dict[str, Any]) -> None:
    claims = verified_claims(tokens["data_dir"], ok(tokens["admin"]))
    assert claims["scope"] == ADMIN_SCOPE
    assert "tenant_id" not in claims


def test_token_needs_a_tenant_or_admin(tokens: dict[str, Any]) -> None:
    neither = tokens["neither"]
    assert neither.returncode == 2
    assert "--tenant" in neither.stderr
    assert neither.stdout == ""


def test_token_refuses_outside_dev_mode(tokens: dict[str, Any]) -> None:
    result = tokens["no_dev"]
    assert result.returncode == 2
    assert "dev mode" in result.stderr
    assert result.stdout == ""  # no token printed
    assert not (tokens["no_dev_dir"] / devkeys.KEY_FILE).exists()


# ----------------------------------------------------------------------------- serve


def test_production_without_an_issuer_refuses_to_serve(tmp_path: Path) -> None:
    port = free_port()
    env = procs.novaza_env(
        tmp_path / "data",
        env="production",
        jwt_hs256_secret="s3cr3t-never-print-me",
        database_url="postgresql://novaza:db-pa55word@127.0.0.1:1/novaza",
    )
    begin = time.monotonic()
    result = procs.run_cli(env, "serve", "--port", str(port), check=False, timeout=30)
    assert result.returncode != 0
    assert time.monotonic() - begin < 15  # refused at once, did not start serving
    assert "Traceback" not in result.stderr
    assert "NOVAZA_ENV=production" in result.stderr
    assert "NOVAZA_JWT_ISSUER" in result.stderr
    # the message names the problem, not the values it read
    assert "s3cr3t-never-print-me" not in result.stderr + result.stdout
    assert "db-pa55word" not in result.stderr + result.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)


def test_invalid_setting_is_named_without_its_value(tmp_path: Path) -> None:
    env = procs.novaza_env(tmp_path / "data", env="staging-secret-value")
    result = procs.run_cli(env, "migrate", check=False)
    assert result.returncode == 2
    assert "NOVAZA_ENV" in result.stderr
    assert "staging-secret-value" not in result.stderr
    assert "Traceback" not in result.stderr
