"""The MLLP listener over real TCP: python-hl7's mllp_send and asyncio client as senders."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hl7.mllp import open_hl7_connection
from sqlalchemy import select

import hl7 as python_hl7
from novaza_gateway.clinical import repository
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.hl7.corpus import HL7_SETTINGS, fixture


@pytest.fixture
async def mllp(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        tmp_path / "data", db_url, mllp_port=0, mllp_idle_timeout_seconds=1.0,
        mllp_max_frame_bytes=64 * 1024,
    )  # fmt: skip
    async for gw in start_gateway(settings):
        await gw.create_tenant("stmarys", addons=["hl7_fhir"], settings={"hl7": HL7_SETTINGS})
        riverside = {"mllpRoutes": [{"sendingFacility": "RIVERSIDE"}]}
        await gw.create_tenant("riverside", addons=["hl7_fhir"], settings={"hl7": riverside})
        await gw.create_tenant(
            "noaddon", addons=["emr"], settings={"hl7": {"mllpRoutes": [{"sendingFacility": "X"}]}}
        )
        yield gw


def port(gw: Gateway) -> int:
    listener = gw.app.state.hl7.listener
    assert listener is not None and listener.port
    return int(listener.port)


async def stored(gw: Gateway) -> list[InboundMessage]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(select(InboundMessage).order_by(InboundMessage.received_at))
        return list(rows.scalars())


class RawClient:
    """A bare TCP sender for what a polite client would never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = MllpDecoder(1 << 20)
        self.acks: list[bytes] = []

    @classmethod
    async def connect(cls, gw: Gateway) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port(gw)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ack(self) -> bytes:
        while not self.acks:
            chunk = await asyncio.wait_for(self.reader.read(65536), 10)
            if not chunk:
                raise ConnectionError("closed")
            self.acks += self.decoder.feed(chunk)
        return self.acks.pop(0)

    async def closed_by_peer(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()


async def test_mllp_send_streams_a_story_over_one_connection(mllp: Gateway, tmp_path: Path) -> None:
    names = ["adt_a01_v251_epic.hl7", "adt_a08_v24_cerner.hl7", "orm_o01_nw_v251_epic.hl7"]
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(b"\n".join(fixture(n).replace(b"\r\n", b"\n") for n in names))
    mllp_send = shutil.which("mllp_send") or str(Path(sys.executable).parent / "mllp_send")
    process = await asyncio.create_subprocess_exec(
        mllp_send, "--loose", "-f", str(batch), "-p", str(port(mllp)), "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    acks = [
        python_hl7.parse(a.strip(b"\x0b\x1c\r\n").decode("latin-1")) for a in out.split(b"\x0b")[1:]
    ]
    assert [str(a.segment("MSA")[1]) for a in acks] == ["AA", "CA", "AA"]
    assert [str(a.segment("MSA")[2]) for a in acks] == [
        "EPA01000001",
        "Q7845120T8521",
        "EPO01000001",
    ]
    rows = await stored(mllp)
    assert [(r.channel, r.status) for r in rows] == [("mllp", "processed")] * 3
    tenant_id = mllp.tenants["stmarys"]["id"]
    assert {r.tenant_id for r in rows} == {tenant_id}
    async with mllp.app.state.db.sessionmaker() as session:
        item = await repository.worklist_item(session, tenant_id, "ACC7001")
        assert item is not None and item.status == "scheduled"


async def test_python_hl7_async_client_routing_and_duplicates(mllp: Gateway) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", port(mllp), encoding="latin-1")
    try:
        writer.writemessage(fixture("adt_a04_v23_meditech.hl7").decode().replace("\n", "\r"))
        await writer.drain()
        first = await asyncio.wait_for(reader.readmessage(), 10)
        assert str(first.segment("MSA")[1]) == "AA"
        # the same message again: the same ACK, byte for byte, and nothing processed twice
        writer.writemessage(fixture("adt_a04_v23_meditech.hl7").decode().replace("\n", "\r"))
        await writer.drain()
        second = await asyncio.wait_for(reader.readmessage(), 10)
        assert str(second) == str(first)
    finally:
        writer.close()
    rows = await stored(mllp)
    assert len(rows) == 1 and rows[0].tenant_id == mllp.tenants["riverside"]["id"]


async def test_noise_bad_messages_and_unrouted_do_not_break_the_connection(mllp: Gateway) -> None:
    client = await RawClient.connect(mllp)
    await client.send(b"\x00\xffGET / HTTP/1.1\r\n\r\n" + frame(fixture("bad_binary_noise.bin")))
    assert b"MSA|AR|" in await client.ack()
    await client.send(frame(fixture("bad_no_msh.hl7")) + frame(fixture("bad_version_22.hl7")))
    assert b"MSA|AR|" in await client.ack()
    assert b"MSA|AR|OLD000001" in await client.ack()
    unrouted = fixture("adt_a02_v251.hl7").replace(b"NOVAZA|RADIOLOGY", b"OTHER|LAB")
    await client.send(frame(unrouted))
    ack = await client.ack()
    assert b"MSA|AR|EPA02000001" in ack and b"204^" in ack
    no_addon = fixture("adt_a02_v251.hl7").replace(b"|EPIC|STMARYS|NOVAZA|RADIOLOGY|", b"|E|X|||")
    await client.send(frame(no_addon))
    assert b"MSA|AR|" in await client.ack()
    await client.send(frame(fixture("bad_invalid_birth_date.hl7")))
    assert b"MSA|AE|BAD000100" in await client.ack()
    await client.send(frame(fixture("adt_a01_v251_epic.hl7")))
    assert b"MSA|AA|EPA01000001" in await client.ack()
    await client.close()
    assert [r.ack_code for r in await stored(mllp)] == ["AE", "AA"]


async def test_enhanced_mode_never_ack_and_oversized_frame(mllp: Gateway) -> None:
    client = await RawClient.connect(mllp)
    never = fixture("adt_a31_v24.hl7").replace(b"P|2.4", b"P|2.4|||NE|NE")
    never = never.replace(b"NORTHCLINIC|20260308", b"NORTHCLINIC|20260308").replace(
        b"ALLSCRIPTS|NORTHCLINIC|NOVAZA|NORTHCLINIC", b"ALLSCRIPTS|RIVERSIDE|NOVAZA|NORTHCLINIC"
    )
    await client.send(frame(never) + frame(fixture("adt_a04_v23_meditech.hl7")))
    ack = await client.ack()  # the first asked for no ACK: this one answers the second
    assert b"MSA|AA|MT20260302101512001" in ack
    assert [r.control_id for r in await stored(mllp)] == ["AS-000124", "MT20260302101512001"]
    await client.send(b"\x0b" + b"MSH|" + b"x" * (70 * 1024))
    assert b"MSA|AR|" in await client.ack()
    assert await client.closed_by_peer()


async def test_frames_keep_their_order_while_the_routing_table_loads(mllp: Gateway) -> None:
    settings = mllp.app.state.hl7.settings
    assert not settings.route_now("NOVAZA", "RADIOLOGY", "STMARYS")[0]  # nothing loaded yet
    client = await RawClient.connect(mllp)
    a01 = fixture("adt_a01_v251_epic.hl7")
    a04 = fixture("adt_a04_v23_meditech.hl7")  # another tenant (RIVERSIDE)
    await client.send(frame(a01) + frame(b"garbage") + frame(a04) + frame(a01))
    acks = [await client.ack() for _ in range(4)]
    assert b"MSA|AA|EPA01000001" in acks[0]
    assert b"MSA|AR|" in acks[1]
    assert b"MSA|AA|MT20260302101512001" in acks[2]
    assert acks[3] == acks[0]  # the repeat: the original ACK, byte for byte
    await client.close()
    assert [r.control_id for r in await stored(mllp)] == ["EPA01000001", "MT20260302101512001"]


async def test_frames_before_an_oversized_one_are_answered(mllp: Gateway) -> None:
    client = await RawClient.connect(mllp)
    oversized = b"\x0b" + b"MSH|" + b"x" * (70 * 1024) + b"\x1c\r"
    await client.send(frame(fixture("adt_a01_v251_epic.hl7")) + oversized)
    assert b"MSA|AA|EPA01000001" in await client.ack()
    assert b"MSA|AR|" in await client.ack()
    assert await client.closed_by_peer()


async def test_a_sender_that_reads_no_acks_is_paced_not_dropped(mllp: Gateway) -> None:
    """200 frames written before reading one ACK: the listener reads ahead at most its
    pipeline, and every ACK comes back in order once the sender reads."""
    client = await RawClient.connect(mllp)
    base = fixture("adt_a08_v24_cerner.hl7")
    frames = [base.replace(b"Q7845120T8521", f"PIPE{n:05d}".encode()) for n in range(200)]
    await client.send(b"".join(frame(f) for f in frames))
    for n in range(200):
        ack = await client.ack()
        assert f"|PIPE{n:05d}".encode() in ack and b"MSA|" in ack
    await client.close()
    assert len(await stored(mllp)) == 200


async def test_idle_connection_is_closed(mllp: Gateway) -> None:
    client = await RawClient.connect(mllp)
    assert await client.closed_by_peer()  # idle timeout is 1 s in this fixture


async def test_readiness_shows_the_listener_and_the_outbox(mllp: Gateway) -> None:
    body = (await mllp.client.get("/health/ready")).json()
    assert body["checks"]["mllp"]["status"] == "ok"
    assert body["checks"]["mllp"]["detail"] == f"port {port(mllp)}"
    assert body["checks"]["hl7-outbox"]["detail"] == "0 queued, 0 dead"
    await mllp.app.state.hl7.listener.stop()
    down = await mllp.client.get("/health/ready")
    assert down.status_code == 503
    assert down.json()["checks"]["mllp"]["status"] == "fail"


async def test_metrics_count_messages_by_outcome(mllp: Gateway) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    aa = {"channel": "mllp", "type": "ADT", "ack": "AA"}
    ar = {"channel": "mllp", "type": "other", "ack": "AR"}
    before = (sample("novaza_hl7_messages_total", **aa), sample("novaza_hl7_messages_total", **ar))
    observed = sample("novaza_hl7_mllp_ack_seconds_count")
    client = await RawClient.connect(mllp)
    await client.send(frame(fixture("adt_a01_v251_epic.hl7")) + frame(b"garbage"))
    assert b"MSA|AA|" in await client.ack()
    assert b"MSA|AR|" in await client.ack()
    await client.close()
    assert sample("novaza_hl7_messages_total", **aa) == before[0] + 1
    assert sample("novaza_hl7_messages_total", **ar) == before[1] + 1
    assert sample("novaza_hl7_mllp_ack_seconds_count") == observed + 2
    text = (await mllp.client.get("/metrics")).text
    assert 'novaza_hl7_messages_total{ack="AA",channel="mllp",type="ADT"}' in text
