"""PostgreSQL lost in the middle of a group commit (issue 11, ADR 0018): the whole group gets
the answer a sender resends on (HTTP 503 ``UPSTREAM_UNAVAILABLE``, MLLP: the connection
closed without an ACK), and the resend after recovery is processed once, or, when the lost
commit had gone through, answered from the store with the stored ACK.

Real losses: the backend running the group is killed with ``pg_terminate_backend`` while a
trigger holds it (asyncpg raises ``AdminShutdownError``, then the connection is gone), and a
TCP proxy cuts the connection right after it forwarded the group's ``COMMIT``
(``ConnectionDoesNotExistError``, a plain ``DBAPIError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select, text

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.hl7.mllp import frame
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.hl7.corpus import HL7_SETTINGS
from tests.hl7.messages import a08, orm
from tests.hl7.pgproxy import CuttingProxy
from tests.hl7.test_mllp_listener import RawClient
from tests.hl7.test_poison import msa, post

SLOW = [
    """CREATE OR REPLACE FUNCTION novaza_test_slow() RETURNS trigger AS $$
    BEGIN
      IF NEW.family_name = 'SLOWPOKE' THEN PERFORM pg_sleep(20); END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER novaza_test_slow BEFORE INSERT OR UPDATE ON clinical_patients "
    "FOR EACH ROW EXECUTE FUNCTION novaza_test_slow()",
]


async def admin(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def start(tmp_path: Path, url: str) -> AsyncIterator[Gateway]:
    async for gw in start_gateway(gateway_settings(tmp_path / "data", url, mllp_port=0)):
        limit = {"ratePerSecond": 10000, "burst": 10000}
        await gw.create_tenant(
            "stmarys", addons=["hl7_fhir"], settings={"hl7": HL7_SETTINGS}, rateLimit=limit
        )
        yield gw


@pytest.fixture
async def gw(tmp_path: Path, pg_url: str) -> AsyncIterator[Gateway]:
    async for gateway in start(tmp_path, pg_url):
        yield gateway
    await admin(pg_url, "DROP TRIGGER IF EXISTS novaza_test_slow ON clinical_patients")


async def kill_the_sleeper(url: str) -> None:
    """Wait until a backend sleeps in the trigger, then terminate it (as an operator or a
    failover would)."""
    for _ in range(200):
        found = await admin(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE wait_event = 'PgSleep' AND datname = current_database()",
        )
        if found:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no backend ever slept in the trigger")


async def count(gw: Gateway, query: object) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())  # type: ignore[call-overload]


async def test_a_backend_killed_mid_group_fails_the_group_and_resends_store_once(
    gw: Gateway, pg_url: str
) -> None:
    for statement in SLOW:
        await admin(pg_url, statement)
    group = [a08("OK1", "M1", "ALPHA"), a08("SLOW1", "M2", "SLOWPOKE"), orm("OK2", "M3", "O1")]
    client = await RawClient.connect(gw)
    await client.send(frame(a08("WARM", "W1")))
    assert msa(await client.ack())[0] == "AA"
    await client.send(b"".join(frame(m) for m in group))
    over_http = asyncio.create_task(post(gw, "stmarys", a08("SLOW2", "M4", "SLOWPOKE")))
    await kill_the_sleeper(pg_url)
    assert await client.closed_by_peer()  # no ACK for any of the group: the sender resends
    assert not client.acks
    answer = await over_http  # the next group: its backend is killed too
    if answer.status_code != 200:  # (or it came after the kill: then it still sleeps)
        assert answer.status_code == 503
    await admin(pg_url, "DROP TRIGGER novaza_test_slow ON clinical_patients")

    again = await RawClient.connect(gw)  # recovered: the sender resends everything
    await again.send(b"".join(frame(m) for m in group))
    assert [msa(await again.ack()) for _ in group] == [
        ("AA", "OK1"),
        ("AA", "SLOW1"),
        ("AA", "OK2"),
    ]
    await again.close()
    resent = await post(gw, "stmarys", a08("SLOW2", "M4", "SLOWPOKE"))
    assert resent.status_code == 200
    for control in ("OK1", "SLOW1", "OK2", "SLOW2"):
        one = select(func.count()).where(InboundMessage.control_id == control)
        assert await count(gw, one) == 1


async def test_http_group_answers_503_when_its_backend_is_killed(gw: Gateway, pg_url: str) -> None:
    for statement in SLOW:
        await admin(pg_url, statement)
    warm = await post(gw, "stmarys", a08("WARM", "W1"))
    assert warm.status_code == 200
    slow = asyncio.create_task(post(gw, "stmarys", a08("SLOW1", "M1", "SLOWPOKE")))
    await kill_the_sleeper(pg_url)
    answer = await slow
    assert answer.status_code == 503
    assert answer.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert answer.headers["retry-after"] == "1"
    assert "SLOWPOKE" not in answer.text and "Terminat" not in answer.text
    await admin(pg_url, "DROP TRIGGER novaza_test_slow ON clinical_patients")
    again = await post(gw, "stmarys", a08("SLOW1", "M1", "SLOWPOKE"))
    assert again.status_code == 200 and again.headers.get("x-hl7-duplicate") is None


async def test_a_commit_lost_in_flight_is_answered_from_the_store_on_resend(
    tmp_path: Path, pg_url: str
) -> None:
    """The proxy forwards the group's COMMIT and cuts the connection before the answer:
    PostgreSQL committed, the gateway could not know. HTTP 503 / MLLP no ACK; the resends
    are duplicates answered with the stored ACKs, processed once."""
    proxy = CuttingProxy.for_url(pg_url)
    await proxy.start()
    try:
        async for gw in start(tmp_path, proxy.url(pg_url)):
            assert (await post(gw, "stmarys", a08("WARM", "W1"))).status_code == 200
            client = await RawClient.connect(gw)
            await client.send(frame(a08("WARM2", "W2")))
            assert msa(await client.ack())[0] == "AA"
            proxy.marker = b"CUTLOST1"
            cut = orm("CUTLOST1", "M1", "ORD1")
            await client.send(frame(cut) + frame(a08("CUT2", "M2", "BETA")))
            assert await client.closed_by_peer()
            assert proxy.cuts == 1

            proxy.marker = b"CUTLOST3"
            lost = await post(gw, "stmarys", a08("CUTLOST3", "M3", "GAMMA"))
            assert lost.status_code == 503 and lost.json()["code"] == "UPSTREAM_UNAVAILABLE"
            assert proxy.cuts == 2

            again = await RawClient.connect(gw)  # the sender resends what it has no ACK for
            await again.send(frame(cut) + frame(a08("CUT2", "M2", "BETA")))
            acks = [await again.ack() for _ in range(2)]
            await again.close()
            resent = await post(gw, "stmarys", a08("CUTLOST3", "M3", "GAMMA"))
            assert resent.status_code == 200 and resent.headers["x-hl7-duplicate"] == "true"
            async with gw.app.state.db.sessionmaker() as session:
                found = await session.execute(select(InboundMessage))
                stored = {r.control_id: r for r in found.scalars()}
                audits = await session.execute(
                    select(AuditEvent.action, func.count()).group_by(AuditEvent.action)
                )
                actions = dict(audits.all())
            assert [msa(a) for a in acks] == [("AA", "CUTLOST1"), ("AA", "CUT2")]
            assert acks[0] == stored["CUTLOST1"].ack  # the stored ACK, byte for byte
            assert acks[1] == stored["CUT2"].ack
            assert resent.json()["ack"].encode() == stored["CUTLOST3"].ack
            assert actions["hl7.orm.o01"] == 1  # processed once
            assert actions["hl7.adt.a08"] == 4  # WARM, WARM2, CUT2, CUTLOST3
            async with gw.app.state.db.engine.connect() as connection:  # still serving
                assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await proxy.stop()
