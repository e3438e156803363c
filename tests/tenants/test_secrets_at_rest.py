"""Tenant integration secrets are sealed in the database and open only through the directory;
``novaza secrets rotate`` re-seals them under a new key (both stores)."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from typer.testing import CliRunner

from novaza_gateway import cli
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.secretbox import SecretBox, parse_keys
from novaza_gateway.tenants.directory import TenantSettingsDirectory
from novaza_gateway.tenants.models import Tenant
from tests.conftest import Gateway, gateway_settings, start_gateway

DESK_KEY = "DESK-SECRET-MARKER-41c7"
PACS_PASSWORD = "PACS-SECRET-MARKER-9e02"


def key(kid: str) -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def with_secrets() -> dict[str, Any]:
    return {
        "desk": {"baseUrl": "http://desk.example", "apiKey": DESK_KEY},
        "imaging": {
            "mode": "proxy",
            "upstreamUrl": "http://pacs.example:8042/dicom-web",
            "upstreamUsername": "gw",
            "upstreamPassword": PACS_PASSWORD,
        },
    }


async def dump(gw: Gateway) -> str:
    """What a database dump shows: every tenant row and audit row as text."""
    async with gw.app.state.db.sessionmaker() as session:
        tenants = (await session.execute(text("SELECT * FROM tenants"))).all()
        audits = (await session.execute(text("SELECT * FROM audit_events"))).all()
    return repr(tenants) + repr(audits)


def directory(gw: Gateway, box: SecretBox | None = None) -> TenantSettingsDirectory:
    return TenantSettingsDirectory(gw.app.state.db, box or gw.app.state.runtime.secrets)


async def test_a_dump_shows_ciphertext_only(gateway: Gateway) -> None:
    tenant = await gateway.create_tenant("clinic", settings=with_secrets())
    text_of_db = await dump(gateway)
    assert DESK_KEY not in text_of_db and PACS_PASSWORD not in text_of_db
    assert text_of_db.count("enc:v1:") == 2
    desk = await directory(gateway).section(tenant["id"], "desk")
    imaging = await directory(gateway).section(tenant["id"], "imaging")
    assert desk is not None and desk["apiKey"] == DESK_KEY
    assert imaging is not None and imaging["upstreamPassword"] == PACS_PASSWORD
    listed = dict(await directory(gateway).sections("desk"))
    assert listed[tenant["id"]]["apiKey"] == DESK_KEY

    # An update that omits the secret keeps its sealed value; a new value is sealed anew.
    admin = gateway.admin()
    kept = {"desk": {"baseUrl": "http://desk2.example"}}
    assert (
        await gateway.client.put("/admin/tenants/clinic", json={"settings": kept}, headers=admin)
    ).status_code == 200
    desk = await directory(gateway).section(tenant["id"], "desk")
    assert desk is not None and desk["apiKey"] == DESK_KEY
    assert desk["baseUrl"].startswith("http://desk2.example")
    changed = {"desk": {"baseUrl": "http://desk2.example", "apiKey": "NEW-DESK-KEY-77"}}
    await gateway.client.put("/admin/tenants/clinic", json={"settings": changed}, headers=admin)
    desk = await directory(gateway).section(tenant["id"], "desk")
    assert desk is not None and desk["apiKey"] == "NEW-DESK-KEY-77"
    assert "NEW-DESK-KEY-77" not in await dump(gateway)


async def test_a_ciphertext_moved_to_another_tenant_does_not_open(gateway: Gateway) -> None:
    first = await gateway.create_tenant("first", settings={"desk": with_secrets()["desk"]})
    second = await gateway.create_tenant("second", settings={"desk": {"baseUrl": "http://d.x"}})
    async with gateway.app.state.db.session_scope() as session:
        owner = await session.get(Tenant, first["id"])
        assert owner is not None
        stolen = owner.settings["desk"]["apiKey"]
        victim = await session.get(Tenant, second["id"])
        assert victim is not None
        victim.settings = {"desk": {"baseUrl": "http://d.x", "apiKey": stolen}}
    desk = await directory(gateway).section(second["id"], "desk")
    assert desk == {"baseUrl": "http://d.x"}  # left out, as if never set


async def test_rotate_reseals_under_the_new_key_and_the_old_key_can_go(
    tmp_path: Path, db_url: str
) -> None:
    old, new = key("old"), key("new")
    settings = gateway_settings(tmp_path / "a", db_url, secrets_keys=old)
    async for gw in start_gateway(settings):
        tenant = await gw.create_tenant("clinic", settings=with_secrets())
        async with gw.app.state.db.session_scope() as session:  # a row from before sealing
            legacy = await gw.create_tenant("legacy")
            row = await session.get(Tenant, legacy["id"])
            assert row is not None
            row.settings = {"desk": {"baseUrl": "http://d.x", "apiKey": "LEGACY-PLAIN-KEY"}}
    # `novaza secrets rotate` with the new key first, the old one still there to open
    env = {"NOVAZA_DATABASE_URL": db_url, "NOVAZA_DATA_DIR": str(tmp_path / "b")}
    for run, expected in ((1, "3 tenant"), (2, "0 tenant")):  # the second finds nothing to do
        result = await asyncio.to_thread(  # the command runs its own event loop
            CliRunner().invoke,
            cli.app,
            ["secrets", "rotate"],
            env={**env, "NOVAZA_SECRETS_KEYS": f"{new},{old}"},
        )
        assert result.exit_code == 0, (run, result.output)
        assert result.output.startswith(expected), result.output
    async for gw in start_gateway(gateway_settings(tmp_path / "b", db_url, secrets_keys=new)):
        dumped = await dump(gw)
        assert "LEGACY-PLAIN-KEY" not in dumped and "enc:v1:old:" not in dumped
        assert dumped.count("enc:v1:new:") == 3
        async with gw.app.state.db.sessionmaker() as session:
            events = (
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "tenant.secrets_reseal")
                )
            ).all()
        assert sorted(e.after["secretsResealed"] for e in events if e.after) == [1, 2]
    only_new = SecretBox(parse_keys(new))
    async for gw in start_gateway(gateway_settings(tmp_path / "c", db_url, secrets_keys=new)):
        # only the new key now: every secret still opens
        desk = await directory(gw, only_new).section(tenant["id"], "desk")
        assert desk is not None and desk["apiKey"] == DESK_KEY
        legacy_desk = await directory(gw, only_new).section(legacy["id"], "desk")
        assert legacy_desk is not None and legacy_desk["apiKey"] == "LEGACY-PLAIN-KEY"
