"""Metering: counted on metered routes, flushed idempotently, visible in /usage, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.models import UsageHourly, UsageRecord
from novaza_gateway.core.db import Database
from novaza_gateway.core.metering import dimensions
from tests.billing.conftest import Clock
from tests.conftest import Gateway, gateway_settings, start_gateway

T0 = datetime(2026, 3, 31, 22, 30, tzinfo=UTC).timestamp()


class CrashAfterCommit:
    """A database whose first transaction commits and then 'loses' the acknowledgement."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.crashes = 1

    @asynccontextmanager
    async def session_scope(self) -> AsyncIterator[AsyncSession]:
        async with self.db.session_scope() as session:
            yield session
        if self.crashes:
            self.crashes -= 1
            raise ConnectionResetError("connection lost after COMMIT")


async def stored(gw: Gateway, tenant_id: str, meter: str = "api_requests") -> int:
    async with gw.app.state.db.sessionmaker() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(UsageRecord.quantity), 0)).where(
                UsageRecord.tenant_id == tenant_id, UsageRecord.meter == meter
            )
        )
        return int(total or 0)


async def test_metered_route_usage_is_visible_in_usage(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    await gw.create_tenant("meter-site", plan="starter")
    headers = gw.auth("meter-site")
    for _ in range(5):
        assert (await gw.client.get("/probe/metered", headers=headers)).status_code == 200
    # neither unmetered routes nor refused requests count
    await gw.client.get("/api/v1/whoami", headers=headers)
    await gw.client.get("/probe/imaging", headers=headers)  # 403 ADDON_REQUIRED
    body: dict[str, Any] = {}
    for _ in range(50):  # the flusher runs every second; poll instead of sleeping blindly
        response = await gw.client.get(
            "/api/v1/billing/usage",
            params={"meter": "api_requests", "granularity": "hour"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        if body["meters"][0]["total"] == 5:
            break
        await asyncio.sleep(0.1)
    [api] = body["meters"]
    assert api["total"] == 5
    assert api["byDimensions"] == [{"dimensions": {"area": "imaging"}, "total": 5}]
    assert sum(p["quantity"] for p in api["series"]) == 5
    assert api["included"] == 100_000
    assert api["usedThisPeriod"] == 5 and api["remaining"] == 99_995
    assert "from" in body and "to" in body


async def test_retried_flush_after_a_crash_counts_nothing_twice(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("crashy")
    meter = UsageMeter(instance="test-instance")
    for _ in range(7):
        meter.record(tenant["id"], "api_requests", dimensions=dimensions(area="hl7"))
    meter.record(tenant["id"], "ai_tokens", 1200, source="ai", event_id="chatcmpl-1")
    with pytest.raises(ConnectionResetError):
        await meter.flush(CrashAfterCommit(gw.app.state.db))  # type: ignore[arg-type]
    assert meter.pending, "an unacknowledged batch stays pending"
    assert await stored(gw, tenant["id"]) == 7  # it did commit
    meter.record(tenant["id"], "api_requests", 3, dimensions=dimensions(area="hl7"))
    await meter.flush(gw.app.state.db)
    assert not meter.pending
    assert await stored(gw, tenant["id"]) == 10
    assert await stored(gw, tenant["id"], "ai_tokens") == 1200
    usage = await gw.client.get("/api/v1/billing/usage", headers=gw.auth("crashy"))
    totals = {m["meter"]: m["total"] for m in usage.json()["meters"]}
    assert totals["api_requests"] == 10 and totals["ai_tokens"] == 1200  # the rollup too


async def test_keyed_events_count_once_per_tenant_and_source(
    billed: tuple[Gateway, Clock],
) -> None:
    gw, _ = billed
    a = await gw.create_tenant("keyed-a")
    b = await gw.create_tenant("keyed-b")
    meter = UsageMeter()
    db = gw.app.state.db
    meter.record(a["id"], "hl7_messages", source="hl7", event_id="MSG-1")
    meter.record(a["id"], "hl7_messages", source="hl7", event_id="MSG-1")  # same buffer
    await meter.flush(db)
    meter.record(a["id"], "hl7_messages", source="hl7", event_id="MSG-1")  # a later retry
    meter.record(b["id"], "hl7_messages", source="hl7", event_id="MSG-1")  # not global
    meter.record(a["id"], "hl7_messages", source="mllp", event_id="MSG-1")  # other source
    await meter.flush(db)
    assert await stored(gw, a["id"], "hl7_messages") == 2
    assert await stored(gw, b["id"], "hl7_messages") == 1
    usage = await gw.client.get(
        "/api/v1/billing/usage", params={"meter": "hl7_messages"}, headers=gw.auth("keyed-a")
    )
    assert usage.json()["meters"][0]["total"] == 2


async def test_spooled_usage_survives_a_restart_without_the_database(
    tmp_path: Path, billed_lite: tuple[Gateway, Clock]
) -> None:
    gw, _ = billed_lite
    tenant = await gw.create_tenant("spooler")
    spool = tmp_path / "spool"
    first = UsageMeter(instance="before-restart")
    first.record(tenant["id"], "api_requests", 4)
    assert first.spool(spool) is not None
    second = UsageMeter(instance="after-restart")
    files = second.load_spool(spool)
    assert len(files) == 1
    await second.flush(gw.app.state.db)
    await second.flush(gw.app.state.db)
    # replaying the same spool again (a crash before the files were removed) is harmless
    third = UsageMeter()
    third.load_spool(spool)
    await third.flush(gw.app.state.db)
    assert await stored(gw, tenant["id"]) == 4


async def test_shutdown_drains_the_meter(tmp_path: Path, sqlite_url: str) -> None:
    gen = start_gateway(gateway_settings(tmp_path / "data", sqlite_url))
    gw = await anext(gen)
    tenant_id = (await gw.create_tenant("drain-site"))["id"]
    gw.app.state.billing.meter.record(tenant_id, "api_requests", 11)
    await gen.aclose()  # lifespan shutdown: cancel the loop, final flush
    db = Database(gw.app.state.db.engine)
    async with db.sessionmaker() as session:
        total = await session.scalar(
            select(func.sum(UsageRecord.quantity)).where(UsageRecord.tenant_id == tenant_id)
        )
    assert total == 11


async def test_series_by_hour_day_and_month(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("series-site")
    now = [T0]
    meter = UsageMeter(clock=lambda: now[0])
    for hours, quantity in [(0, 1), (1, 2), (2, 4), (26, 8)]:  # 22:30 Mar 31 onwards
        now[0] = T0 + hours * 3600
        meter.record(tenant["id"], "ai_tokens", quantity, dimensions=dimensions(kind="prompt"))
    await meter.flush(gw.app.state.db)
    start = datetime(2026, 3, 31, tzinfo=UTC)
    end = start + timedelta(days=3)

    async def series(granularity: str) -> list[tuple[str, int]]:
        response = await gw.client.get(
            "/api/v1/billing/usage",
            params={
                "from": start.isoformat(),
                "to": end.isoformat(),
                "granularity": granularity,
                "meter": "ai_tokens",
            },
            headers=gw.auth("series-site"),
        )
        assert response.status_code == 200, response.text
        [ai] = response.json()["meters"]
        assert ai["total"] == 15
        return [(p["start"][:13], p["quantity"]) for p in ai["series"]]

    assert await series("hour") == [
        ("2026-03-31T22", 1),
        ("2026-03-31T23", 2),
        ("2026-04-01T00", 4),
        ("2026-04-02T00", 8),
    ]
    assert await series("day") == [("2026-03-31T00", 3), ("2026-04-01T00", 4), ("2026-04-02T00", 8)]
    assert await series("month") == [("2026-03-01T00", 3), ("2026-04-01T00", 12)]


async def test_usage_query_is_validated(billed_lite: tuple[Gateway, Clock]) -> None:
    gw, _ = billed_lite
    await gw.create_tenant("v-site")
    headers = gw.auth("v-site")
    cases = [
        {"meter": "nope"},
        {"granularity": "week"},
        {"from": "2026-04-02T00:00:00Z", "to": "2026-04-01T00:00:00Z"},
        {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "granularity": "hour"},
    ]
    for params in cases:
        response = await gw.client.get("/api/v1/billing/usage", params=params, headers=headers)
        assert response.status_code == 422, params
        assert response.json()["code"] == "VALIDATION_FAILED"


async def test_oversized_labels_never_block_a_flush(billed: tuple[Gateway, Clock]) -> None:
    gw, _ = billed
    tenant = await gw.create_tenant("long-labels")
    meter = UsageMeter()
    meter.record(tenant["id"], "ai_tokens", 5, dimensions=dimensions(model="m" * 400))
    meter.record(tenant["id"], "ai_tokens", 7, source="s" * 100, event_id="e" * 300)
    await meter.flush(gw.app.state.db)
    assert not meter.pending
    assert await stored(gw, tenant["id"], "ai_tokens") == 12


async def test_one_flush_rolls_up_hours_dimensions_and_duplicates(
    billed: tuple[Gateway, Clock],
) -> None:
    """A batch of mixed hours, dimensions and keyed events: the hourly rows hold exactly
    what was inserted, and a batch flushed twice adds nothing the second time."""
    gw, _ = billed
    tenant = await gw.create_tenant("rollup")
    now = [T0]
    meter = UsageMeter(instance="rollup", clock=lambda: now[0])
    inbound, outbound = dimensions(direction="inbound"), dimensions(direction="outbound")
    for n in range(300):
        now[0] = T0 + n * 60  # 22:30 to 03:29: six hours, across midnight and a month
        dims = inbound if n % 3 else outbound
        meter.record(tenant["id"], "hl7_messages", dimensions=dims, source="hl7", event_id=f"m{n}")
    meter.record(tenant["id"], "hl7_messages", source="hl7", event_id="m7")  # already there
    meter.seal()
    batch = list(meter.pending[0])
    await meter.flush(gw.app.state.db)
    meter.pending.append(batch)  # the same batch again, as after a lost acknowledgement
    await meter.flush(gw.app.state.db)
    assert await stored(gw, tenant["id"], "hl7_messages") == 300
    async with gw.app.state.db.sessionmaker() as session:
        rows = (
            await session.execute(
                select(UsageHourly.hour, UsageHourly.dimensions, UsageHourly.quantity).where(
                    UsageHourly.tenant_id == tenant["id"]
                )
            )
        ).all()
    expected: dict[tuple[datetime, str], int] = {}
    for n in range(300):
        hour = datetime.fromtimestamp((T0 + n * 60) // 3600 * 3600, UTC)
        key = (hour, "direction=inbound" if n % 3 else "direction=outbound")
        expected[key] = expected.get(key, 0) + 1
    assert {(hour, dims): quantity for hour, dims, quantity in rows} == expected
    assert len(expected) == 12


async def test_product_area_routes_are_billed_to_their_area(
    billed_lite: tuple[Gateway, Clock],
) -> None:
    """The real routes meter api_requests by area; identity and billing's own reads do not."""
    gw, _ = billed_lite
    tenant = await gw.create_tenant(
        "area-site", plan="starter", addons=["medical_imaging", "emr", "hl7_fhir"]
    )
    headers = gw.auth("area-site")
    for _ in range(3):
        assert (await gw.client.get("/med/qido/studies", headers=headers)).status_code == 200
    missing = await gw.client.get("/med/imaging/study/1.2.3", headers=headers)
    assert missing.status_code == 404  # admitted, then not found: still a billed request
    assert (await gw.client.get("/api/v1/whoami", headers=headers)).status_code == 200
    assert (await gw.client.get("/api/v1/billing/wallet", headers=headers)).status_code == 200
    refused = await gw.client.get("/med/qido/studies", headers=gw.auth("area-site", "emr:none"))
    assert refused.status_code == 403  # refused by the guard: not billed

    for _ in range(50):  # the flusher runs every second
        if await stored(gw, tenant["id"]) >= 4:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # nothing else trickles in
    assert await stored(gw, tenant["id"]) == 4
    doc = (await gw.client.get("/openapi.json")).json()
    assert doc["paths"]["/med/qido/studies"]["get"]["x-novaza-policy"]["meter"] == "imaging"
    assert doc["paths"]["/api/v1/billing/wallet"]["get"]["x-novaza-policy"].get("meter") is None
