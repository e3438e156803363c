"""Accountability (issue 11): override attribution, the gateway's own request id, a per-tenant
hash chain that shows an edited or deleted row, and the admin's view and export of a trail.
Both stores; the concurrent sealers on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select, update
from typer.testing import CliRunner

from novaza_gateway import cli
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.auditchain import AuditSealer, ChainReport, verify
from novaza_gateway.core.db import Database, create_engine
from tests.conftest import Gateway
from tests.imaging.conftest import imaging_tenant

WORKLIST = "/med/imaging/worklist"


async def rows(gw: Gateway, tenant_id: str) -> list[AuditEvent]:
    async with gw.app.state.db.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        return list((await session.scalars(query.order_by(AuditEvent.at))).all())


async def seal(gw: Gateway) -> int:
    return await AuditSealer(gw.app.state.db).seal()


async def settle(gw: Gateway, tenant_id: str) -> None:
    """Until every row of the tenant is sealed (the app's own sealer runs too: a pass here
    may find the lock taken, or nothing left)."""
    for _ in range(100):
        await seal(gw)
        if (await report(gw, tenant_id)).pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("rows stayed unsealed")


async def report(gw: Gateway, tenant_id: str) -> ChainReport:
    async with gw.app.state.db.sessionmaker() as session:
        (found,) = await verify(session, tenant_id)
    return found


async def touch(gw: Gateway, slug: str, times: int) -> None:
    """``times`` audited changes to a tenant (each one row on its trail)."""
    for n in range(times):
        answer = await gw.client.put(
            f"/admin/tenants/{slug}", json={"name": f"Name {n}"}, headers=gw.admin()
        )
        assert answer.status_code == 200, answer.text


def overrides(caller: str) -> float:
    value = REGISTRY.get_sample_value("novaza_tenant_overrides_total", {"caller": caller})
    return value or 0.0


async def test_an_override_names_caller_home_tenant_and_the_override(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    await imaging_tenant(gateway, "acme")
    beta = await gateway.create_tenant("beta", addons=["medical_imaging", "emr"])
    service = gateway.token("acme", "tenant:override imaging:read", sub="svc-7")
    before = overrides("svc-7")
    with caplog.at_level(logging.INFO, logger="novaza.access"):
        answer = await gateway.client.get(
            WORKLIST,
            headers={
                "Authorization": f"Bearer {service}",
                "X-Tenant-ID": "beta",
                "X-Request-Id": "ovr-1",
            },
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "ovr-1"  # the caller's id is echoed
    (event,) = [e for e in await rows(gateway, beta["id"]) if e.caller_request_id == "ovr-1"]
    assert (event.actor, event.home_tenant_id, event.via_override) == ("svc-7", "acme", True)
    assert event.request_id is not None and len(event.request_id) == 32  # the gateway's own
    assert overrides("svc-7") == before + 1
    (line,) = [r for r in caplog.records if getattr(r, "callerRequestId", None) == "ovr-1"]
    assert (line.subject, line.homeTenant, line.override) == ("svc-7", "acme", True)  # type: ignore[attr-defined]

    # the same read with the tenant's own token is no override
    plain = await gateway.client.get(
        WORKLIST, headers={**gateway.auth("beta"), "X-Request-Id": "own-1"}
    )
    assert plain.status_code == 200
    (own,) = [e for e in await rows(gateway, beta["id"]) if e.caller_request_id == "own-1"]
    assert (own.home_tenant_id, own.via_override) == (None, False)
    assert own.request_id != event.request_id


async def test_a_caller_cannot_choose_the_audit_request_id(gateway: Gateway) -> None:
    tenant = await gateway.create_tenant("clinic")
    for _ in range(2):
        await gateway.client.put(
            "/admin/tenants/clinic",
            json={"name": "Same"},
            headers={**gateway.admin(), "X-Request-Id": "same-id"},
        )
    ids = [e.request_id for e in await rows(gateway, tenant["id"]) if e.caller_request_id]
    assert len(ids) == 2 and len(set(ids)) == 2 and "same-id" not in ids


async def test_the_chain_shows_an_edited_or_deleted_row(gateway: Gateway) -> None:
    tenant = await gateway.create_tenant("clinic")
    other = await gateway.create_tenant("other")
    await touch(gateway, "clinic", 5)
    await touch(gateway, "other", 2)
    await settle(gateway, tenant["id"])
    await settle(gateway, other["id"])
    intact = await report(gateway, tenant["id"])
    assert intact.intact and intact.sealed == 6 and intact.pending == 0, intact
    trail = await rows(gateway, tenant["id"])
    assert [e.chain_seq for e in trail] == [1, 2, 3, 4, 5, 6]
    assert all(e.chain_prev == p.chain_hash for p, e in itertools.pairwise(trail))

    db = gateway.app.state.db
    third = trail[2]
    async with db.session_scope() as session:  # someone edits a sealed row
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == third.id).values(actor="someone-else")
        )
    edited = await report(gateway, tenant["id"])
    assert edited.problems == ["row 3 was changed after it was sealed"]
    async with db.session_scope() as session:  # ... and puts it back
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == third.id).values(actor=third.actor)
        )
    assert (await report(gateway, tenant["id"])).intact

    async with db.session_scope() as session:  # a row deleted in the middle, one at the end
        await session.execute(delete(AuditEvent).where(AuditEvent.id == trail[1].id))
        await session.execute(delete(AuditEvent).where(AuditEvent.id == trail[-1].id))
    deleted = await report(gateway, tenant["id"])
    assert deleted.problems == [
        "rows 2..2 are missing (deleted)",
        "rows 6..6 at the end are missing (deleted)",
    ]
    assert (await report(gateway, other["id"])).intact  # chains are per tenant

    # `novaza audit verify` says the same, and exits 1
    env = {"NOVAZA_DATABASE_URL": gateway.settings.database_url or "", "NOVAZA_ENV": "test"}
    env["NOVAZA_DATA_DIR"] = str(gateway.data_dir)
    broken = await asyncio.to_thread(
        CliRunner().invoke, cli.app, ["audit", "verify", "--tenant", "clinic"], env=env
    )
    assert broken.exit_code == 1, broken.output
    assert "BROKEN" in broken.output and "rows 2..2 are missing" in broken.output
    fine = await asyncio.to_thread(
        CliRunner().invoke, cli.app, ["audit", "verify", "--tenant", "other"], env=env
    )
    assert fine.exit_code == 0 and "intact" in fine.output, fine.output


async def test_rows_written_while_sealing_all_join_the_chain(gateway: Gateway) -> None:
    tenant = await gateway.create_tenant("clinic")
    stop = asyncio.Event()

    async def sealing() -> None:
        while not stop.is_set():
            await seal(gateway)
            await asyncio.sleep(0)

    sealer = asyncio.create_task(sealing())
    await asyncio.gather(*(touch(gateway, "clinic", 4) for _ in range(4)))
    stop.set()
    await sealer
    await settle(gateway, tenant["id"])
    found = await report(gateway, tenant["id"])
    assert found.intact and found.sealed == 17 and found.pending == 0, found


async def test_three_replicas_seal_one_chain(pg_url: str, tmp_path: Path) -> None:
    """Three sealers (three engines, as three replicas) racing on one PostgreSQL: each row
    sealed once, the chain intact."""
    from tests.conftest import gateway_settings, start_gateway

    async for gw in start_gateway(gateway_settings(tmp_path / "data", pg_url)):
        tenant = await gw.create_tenant("clinic")
        replicas = [Database(create_engine(gw.settings.sqlalchemy_url)) for _ in range(3)]
        try:
            for _ in range(3):
                await touch(gw, "clinic", 5)
                counts = await asyncio.gather(*(AuditSealer(db).seal() for db in replicas))
                assert sum(1 for count in counts if count) <= 1, counts  # one sealer a round
        finally:
            for db in replicas:
                await db.dispose()
        await settle(gw, tenant["id"])
        found = await report(gw, tenant["id"])
        assert found.intact and found.sealed == 16 and found.pending == 0, found
        async with gw.app.state.db.sessionmaker() as session:
            seqs = select(func.count(func.distinct(AuditEvent.chain_seq))).where(
                AuditEvent.tenant_id == tenant["id"]
            )
            assert await session.scalar(seqs) == 16


async def test_the_admin_pages_and_exports_a_trail(gateway: Gateway) -> None:
    tenant = await gateway.create_tenant("clinic")
    await touch(gateway, "clinic", 4)
    await gateway.client.post("/admin/tenants/clinic/suspend", headers=gateway.admin())
    await settle(gateway, tenant["id"])
    url = "/admin/tenants/clinic/audit"
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = await gateway.client.get(url, params=params, headers=gateway.admin())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [row["action"] for row in body["data"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen[:6] == ["tenant.create", *["tenant.update"] * 4, "tenant.suspend"]
    first = (await gateway.client.get(url, params={"limit": 1}, headers=gateway.admin())).json()
    assert first["data"][0]["chain"]["seq"] == 1 and first["data"][0]["requestId"]

    updates = await gateway.client.get(
        url, params={"action": "tenant.update"}, headers=gateway.admin()
    )
    assert [r["action"] for r in updates.json()["data"]] == ["tenant.update"] * 4
    prefix = await gateway.client.get(url, params={"action": "tenant."}, headers=gateway.admin())
    assert len(prefix.json()["data"]) >= 6
    future = await gateway.client.get(
        url, params={"from": "2999-01-01T00:00:00Z"}, headers=gateway.admin()
    )
    assert future.json()["data"] == []
    edge = await gateway.client.get(
        url, params={"to": "9999-12-31T23:59:59-14:00"}, headers=gateway.admin()
    )
    assert edge.status_code == 422 and edge.json()["code"] == "VALIDATION_FAILED"

    export = await gateway.client.get(
        url, headers={**gateway.admin(), "Accept": "application/x-ndjson"}
    )
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in export.content.splitlines()]
    assert [r["action"] for r in lines][:6] == seen[:6]
    trail = await rows(gateway, tenant["id"])
    assert {r["id"] for r in lines} <= {e.id for e in trail}
    assert any(e.action == "tenant.audit_read" for e in trail)  # reading is audited

    refused = await gateway.client.get(url, headers=gateway.auth("clinic"))
    assert refused.status_code == 403
    missing = await gateway.client.get("/admin/tenants/nope/audit", headers=gateway.admin())
    assert missing.status_code == 404
