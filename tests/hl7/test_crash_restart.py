"""A gateway process SIGKILLed while messages stream in over MLLP and ORUs are queued.

After a restart: every ACKed message is stored and processed exactly once (resends of
unACKed ones are answered from the store), and every queued ORU is delivered. Sizes are
small by default; NOVAZA_TEST_HL7_CRASH_MESSAGES=2000 NOVAZA_TEST_HL7_CRASH_ORUS=500 runs the
issue's full scenario.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from novaza_gateway.hl7.models import InboundMessage, OutboundMessage
from tests.conftest import free_port, gateway_settings, start_gateway
from tests.hl7.corpus import HL7_SETTINGS, fixture
from tests.hl7.receiver import ScriptedReceiver

MESSAGES = int(os.environ.get("NOVAZA_TEST_HL7_CRASH_MESSAGES", "300"))
ORUS = int(os.environ.get("NOVAZA_TEST_HL7_CRASH_ORUS", "60"))
A08 = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260303140211||ADT^A08^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|A08|20260303140200\r"
    "PID|1||100234^^^STMARYS^MR||O'Brien^Margaret^Ann||19580412|F|||{n} Harbour Road^^Boston\r"
)


def message(n: int) -> bytes:
    return A08.format(cid=f"CRASH{n:05d}", n=n).encode()


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "novaza_gateway", "serve"],
                env=self.env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{self.env['NOVAZA_PORT']}/health"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


async def stream(port: int, numbers: list[int], kill_after: int | None, server: Server) -> set[int]:
    """Pipeline messages over one connection; SIGKILL the server after ``kill_after`` ACKs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    acked: set[int] = set()

    async def send_all() -> None:
        for n in numbers:
            writer.write(frame(message(n)))
            await writer.drain()
            await asyncio.sleep(0)

    sender = asyncio.create_task(send_all())
    decoder = MllpDecoder(1 << 20)
    try:
        while len(acked) < len(numbers):
            chunk = await asyncio.wait_for(reader.read(65536), 20)
            if not chunk:
                break
            for ack in decoder.feed(chunk):
                text = ack.decode()
                assert "MSA|AA|CRASH" in text, text
                acked.add(int(text.split("MSA|AA|CRASH")[1][:5]))
                if kill_after is not None and len(acked) == kill_after:
                    server.kill()
    except ConnectionError:
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return acked


async def test_sigkill_during_mllp_stream_and_oru_delivery(tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "data"
    async with ScriptedReceiver(delay=0.01) as receiver:
        destinations = {"ris": {"host": "127.0.0.1", "port": receiver.port}}
        hl7: dict[str, Any] = {**HL7_SETTINGS, "destinations": destinations}
        hl7["defaultDestination"] = "ris"
        async for gw in start_gateway(gateway_settings(data_dir, db_url)):
            await gw.create_tenant(
                "stmarys",
                addons=["hl7_fhir"],
                settings={"hl7": hl7},
                rateLimit={"ratePerSecond": 100_000, "burst": 100_000},
            )
            token = gw.token("stmarys")
            tenant_id = gw.tenants["stmarys"]["id"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
        mllp_port, http_port = free_port(), free_port()
        env.update(
            NOVAZA_DATA_DIR=str(data_dir), NOVAZA_DATABASE_URL=db_url, NOVAZA_ENV="test",
            NOVAZA_PORT=str(http_port), NOVAZA_MLLP_PORT=str(mllp_port),
            NOVAZA_HL7_ACK_TIMEOUT_SECONDS="0.5", NOVAZA_HL7_OUTBOX_POLL_SECONDS="0.1",
            NOVAZA_HL7_OUTBOX_BACKOFF_SECONDS="0.2", NOVAZA_HL7_OUTBOX_BACKOFF_MAX_SECONDS="0.5",
        )  # fmt: skip
        server = Server(env, tmp_path / "gateway.log")
        server.start()
        try:
            base = f"http://127.0.0.1:{http_port}/med/hl7"
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as client:
                for name, path in [
                    ("adt_a01_v251_epic.hl7", "adt"),
                    ("orm_o01_nw_v251_epic.hl7", "orm"),
                ]:
                    got = await client.post(
                        f"/{path}",
                        content=fixture(name),
                        headers={"Content-Type": "application/hl7-v2"},
                    )
                    assert got.status_code == 200, got.text
                body = {
                    "patient": {"identifier": "100234", "assigningAuthority": "STMARYS"},
                    "order": {"accessionNumber": "ACC7001"},
                    "observations": [{"code": "IMP", "valueType": "TX", "value": "ok"}],
                }
                queued = []
                for _ in range(ORUS):
                    response = await client.post("/send-oru", json=body)
                    assert response.status_code == 202, response.text
                    queued.append(response.json()["controlId"])
            numbers = list(range(MESSAGES))
            acked = await stream(mllp_port, numbers, MESSAGES // 2, server)
            assert len(acked) >= MESSAGES // 2
            server.start()
            # the sender resends what it has no ACK for, and (to prove dedup) a few it has
            resend = [n for n in numbers if n not in acked] + sorted(acked)[:10]
            again = await stream(mllp_port, resend, None, server)
            assert again == set(resend)
            db = Database(
                create_engine(
                    db_url.replace("postgresql://", "postgresql+asyncpg://").replace(
                        "sqlite:///", "sqlite+aiosqlite:///"
                    )
                )
            )
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    async with db.sessionmaker() as session:
                        pending = await session.scalar(
                            select(func.count())
                            .select_from(OutboundMessage)
                            .where(
                                OutboundMessage.tenant_id == tenant_id,
                                OutboundMessage.status != "delivered",
                            )
                        )
                    if pending == 0:
                        break
                    await asyncio.sleep(0.2)
                async with db.sessionmaker() as session:
                    rows = (
                        await session.execute(
                            select(InboundMessage.control_id, InboundMessage.status).where(
                                InboundMessage.tenant_id == tenant_id,
                                InboundMessage.control_id.like("CRASH%"),
                            )
                        )
                    ).all()
                    audits = await session.scalar(
                        select(func.count())
                        .select_from(AuditEvent)
                        .where(
                            AuditEvent.tenant_id == tenant_id, AuditEvent.action == "hl7.adt.a08"
                        )
                    )
            finally:
                await db.dispose()
        finally:
            server.stop()
        assert pending == 0, "ORUs left undelivered after restart"
        control_ids = [c for c, _ in rows]
        assert sorted(control_ids) == [f"CRASH{n:05d}" for n in numbers]  # each stored once
        assert {s for _, s in rows} == {"processed"}
        assert audits == MESSAGES  # and processed once
        delivered = receiver.control_ids()
        assert set(delivered) == set(queued)
        assert len(delivered) - len(set(delivered)) <= 1  # at most the one in flight at the kill
        logs = (tmp_path / "gateway.log").read_text()
        assert "Harbour" not in logs and "Brien" not in logs  # no patient data in the logs
