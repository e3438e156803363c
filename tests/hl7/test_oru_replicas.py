"""The ORU outbox with three replicas on one store (each its own connection pool, as three
processes), delivering over MLLP to a real receiver: every message is sent once, in patient
order; a replica that dies holding claims loses them after the lease; one that stalls past
its lease neither sends nor overwrites the new owner's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from novaza_gateway.config import Settings
from novaza_gateway.core.db import Database, create_engine, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.hl7.models import DeliveryAttempt, OutboundMessage
from novaza_gateway.hl7.outbox import Attempt, OutboxWorker
from novaza_gateway.hl7.routing import TenantHl7Settings
from tests.hl7.corpus import fixture
from tests.hl7.receiver import ScriptedReceiver

TENANT = "tenant-replicas"
ORU = fixture("oru_r01_v251.hl7").decode().replace("\n", "\r")


class Destinations:
    """The tenant settings source (``hl7.routing.SettingsSource``): the receiver, for all."""

    def __init__(self, port: int) -> None:
        ris = {"host": "127.0.0.1", "port": port, "receivingApplication": "RIS"}
        self.hl7 = {"destinations": {"ris": ris}, "defaultDestination": "ris"}

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        return self.hl7 if name == "hl7" else None

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        return []


class ShortLease(OutboxWorker):
    """A replica whose claims lapse after two ACK timeouts (1 s), no margin."""

    lease_margin_seconds = 0.0


@pytest.fixture
async def receiver() -> AsyncIterator[ScriptedReceiver]:
    async with ScriptedReceiver() as r:
        yield r


@pytest.fixture
def config_of(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp_path, hl7_ack_timeout_seconds=0.5)


async def replica(settings: Settings, port: int, kind: type[OutboxWorker] = OutboxWorker) -> Any:
    db = Database(create_engine(settings.sqlalchemy_url))
    return kind(settings.hl7, db, TenantHl7Settings(Destinations(port), 60))


@pytest.fixture
async def three(config_of: Settings, receiver: ScriptedReceiver) -> AsyncIterator[list[Any]]:
    workers = [await replica(config_of, receiver.port) for _ in range(3)]
    yield workers
    for worker in workers:
        await worker.close()
        await worker.db.dispose()


async def queue(db: Database, count: int, patients: int) -> list[tuple[str, str]]:
    """``count`` ORUs for ``patients`` patients, oldest first: (control id, patient key)."""
    now = utcnow()
    queued = [(f"CTL{n:05d}", f"pid:P{n % patients}") for n in range(count)]
    async with db.session_scope() as session:
        for n, (control_id, patient_key) in enumerate(queued):
            session.add(
                OutboundMessage(
                    id=new_id(), tenant_id=TENANT, created_at=now + timedelta(microseconds=n),
                    updated_at=now, message_type="ORU^R01", control_id=control_id,
                    destination="ris", patient_key=patient_key, patient_id=None,
                    raw=ORU.replace("LB000001", control_id).encode(), status="queued",
                    attempts=0, next_attempt_at=now,
                )
            )  # fmt: skip
    return queued


async def messages(db: Database) -> list[OutboundMessage]:
    async with db.sessionmaker() as session:
        query = select(OutboundMessage).where(OutboundMessage.tenant_id == TENANT)
        return list((await session.execute(query)).scalars())


async def attempts(db: Database) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(DeliveryAttempt)) or 0)


async def test_three_replicas_deliver_each_oru_once_in_patient_order(
    three: list[OutboxWorker], receiver: ScriptedReceiver
) -> None:
    queued = await queue(three[0].db, 48, patients=8)
    for _ in range(60):  # passes of all three at once, until every patient's queue is empty
        handled = await asyncio.gather(*(worker.run_once() for worker in three))
        if not sum(handled) and all(m.status == "delivered" for m in await messages(three[0].db)):
            break
    received = receiver.control_ids()
    assert sorted(received) == sorted(c for c, _ in queued)  # each once
    for patient in {p for _, p in queued}:
        in_order = [c for c, p in queued if p == patient]
        assert [c for c in received if c in in_order] == in_order
    rows = await messages(three[0].db)
    assert {(m.status, m.attempts, m.claim, m.lease_until) for m in rows} == {
        ("delivered", 1, None, None)
    }
    assert await attempts(three[0].db) == 48


async def test_claims_of_a_replica_that_died_are_taken_over_after_the_lease(
    three: list[OutboxWorker], config_of: Settings, receiver: ScriptedReceiver
) -> None:
    dead = await replica(config_of, receiver.port, ShortLease)
    try:
        queued = await queue(three[0].db, 3, patients=3)
        lease_until, jobs = await dead._claim()  # then the process is killed
        assert len(jobs) == 3
        assert await asyncio.gather(*(w.run_once() for w in three)) == [0, 0, 0]  # still held
        await asyncio.sleep((lease_until - utcnow()).total_seconds() + 0.1)
        handled = await asyncio.gather(*(w.run_once() for w in three))
        assert sorted(handled) == [0, 0, 3]
        assert sorted(receiver.control_ids()) == [c for c, _ in queued]
        assert {m.status for m in await messages(three[0].db)} == {"delivered"}
    finally:
        await dead.db.dispose()


async def test_a_replica_stalled_past_its_lease_neither_sends_nor_overwrites(
    three: list[OutboxWorker], config_of: Settings, receiver: ScriptedReceiver
) -> None:
    stalled = await replica(config_of, receiver.port, ShortLease)
    try:
        [(control_id, _)] = await queue(three[0].db, 1, patients=1)
        lease_until, [job] = await stalled._claim()
        await asyncio.sleep((lease_until - utcnow()).total_seconds() + 0.1)  # paused
        assert sum(await asyncio.gather(*(w.run_once() for w in three))) == 1
        assert receiver.control_ids() == [control_id]
        # it resumes where it stopped, about to send: its lease is gone, so it sends nothing
        await stalled._drain(lease_until, [job])
        assert receiver.control_ids() == [control_id]
        # had it sent before stalling, its late outcome is an attempt, not the message's state
        await stalled._record(job, Attempt("timeout", None, "no ACK in time", 500))
        [message] = await messages(three[0].db)
        assert (message.status, message.attempts) == ("delivered", 1)
        assert await attempts(three[0].db) == 2
        assert await asyncio.gather(*(w.run_once() for w in three)) == [0, 0, 0]
    finally:
        await stalled.close()
        await stalled.db.dispose()
