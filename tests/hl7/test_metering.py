"""HL7 usage for billing: each stored message once, inbound and outbound, after commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from novaza_gateway.billing.models import UsageRecord
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway
from tests.hl7.corpus import fixture
from tests.hl7.receiver import ScriptedReceiver
from tests.hl7.test_http_intake import hl7_tenant, post
from tests.hl7.test_mllp_listener import port
from tests.hl7.test_oru_delivery import RESULT, oru_gateway, receiver, send

__all__ = ["receiver"]  # the scripted ORU receiver fixture, used by oru_mllp


async def billed(gw: Gateway, tenant_id: str, direction: str) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(UsageRecord.quantity), 0)).where(
                UsageRecord.tenant_id == tenant_id,
                UsageRecord.meter == "hl7_messages",
                UsageRecord.dimensions.contains(direction),
            )
        )
        return int(total or 0)


async def settled(gw: Gateway, tenant_id: str, direction: str, expected: int) -> int:
    for _ in range(60):  # the usage flusher runs every second
        if await billed(gw, tenant_id, direction) >= expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    return await billed(gw, tenant_id, direction)


async def stored_count(gw: Gateway, tenant_id: str) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(InboundMessage.tenant_id == tenant_id)
        )
        return int(count or 0)


async def test_http_intake_bills_each_stored_message_once(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    a01 = fixture("adt_a01_v251_epic.hl7")
    assert (await post(gateway, "adt", auth, a01)).status_code == 200
    assert (await post(gateway, "adt", auth, a01)).status_code == 200  # duplicate: same row
    assert (await post(gateway, "adt", auth, fixture("bad_no_msh.hl7"))).status_code == 400
    orm = fixture("orm_o01_nw_v251_epic.hl7")
    assert (await post(gateway, "orm", auth, orm)).status_code == 200
    stored = await stored_count(gateway, tenant_id)
    assert stored == 2  # the AR was never stored
    assert await settled(gateway, tenant_id, "inbound", stored) == stored
    assert await billed(gateway, tenant_id, "outbound") == 0


@pytest.fixture
async def oru_mllp(
    tmp_path: Path, sqlite_url: str, receiver: ScriptedReceiver
) -> AsyncIterator[Gateway]:
    async for gw in oru_gateway(tmp_path, sqlite_url, receiver, mllp_port=0):
        yield gw


async def test_mllp_and_oru_are_billed_once_each(oru_mllp: Gateway) -> None:
    gw = oru_mllp
    tenant_id = gw.tenants["stmarys"]["id"]
    before = await stored_count(gw, tenant_id)  # the fixture's ADT and ORM over HTTP
    message = fixture("adt_a08_v24_cerner.hl7")
    reader, writer = await asyncio.open_connection("127.0.0.1", port(gw))
    try:
        for _ in range(2):  # a resend after a lost ACK: the same stored message
            writer.write(b"\x0b" + message.replace(b"\n", b"\r") + b"\x1c\r")
            await writer.drain()
            ack = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 10)
            assert b"MSA|CA|" in ack  # enhanced mode (MSH-15 AL): commit accept
    finally:
        writer.close()
    assert await stored_count(gw, tenant_id) == before + 1
    queued = [await send(gw), await send(gw, RESULT)]
    assert len({q["messageId"] for q in queued}) == 2
    assert await settled(gw, tenant_id, "inbound", before + 1) == before + 1
    assert await settled(gw, tenant_id, "outbound", 2) == 2
