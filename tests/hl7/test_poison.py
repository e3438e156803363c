"""A poison message fails alone (issue 11, ADR 0018), on SQLite and PostgreSQL.

A message whose values the database refuses shares its group commit with other tenants'
messages: the group is redone with a SAVEPOINT per message, the poison message is answered
AE (stored, failed), and every other message commits. When the store refuses a message even
outside its SAVEPOINT (its own row), each message runs alone: the poison one is answered AR
(nothing stored). Control characters never reach the store: the parser refuses them, naming
the field.

The store's refusal is real: a trigger the test installs raises a data error in the database
(PostgreSQL: SQLSTATE 22023 through asyncpg; SQLite: a RAISE(ABORT)). On PostgreSQL the
issue's own failure, a NUL in PID-5, is replayed with the parser's check turned off.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text

from novaza_gateway.clinical.models import Patient, WorklistItem
from novaza_gateway.hl7 import parser
from novaza_gateway.hl7.mllp import frame
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.hl7.corpus import HL7_SETTINGS
from tests.hl7.messages import a08, orm
from tests.hl7.test_mllp_listener import RawClient

ER7 = {"Content-Type": "application/hl7-v2"}
RIVERSIDE = "NOVAZA^CLINIC"  # riverside's messages: routed by MSH-4, not stmarys' route

PG_POISON = [
    """CREATE OR REPLACE FUNCTION novaza_test_poison() RETURNS trigger AS $$
    BEGIN
      IF NEW.family_name = 'POISON' THEN
        RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER novaza_test_poison BEFORE INSERT OR UPDATE ON clinical_patients "
    "FOR EACH ROW EXECUTE FUNCTION novaza_test_poison()",
    """CREATE OR REPLACE FUNCTION novaza_test_poison_row() RETURNS trigger AS $$
    BEGIN
      IF NEW.control_id LIKE 'POISONROW%' THEN
        RAISE EXCEPTION 'refused' USING ERRCODE = '22001';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER novaza_test_poison_row BEFORE INSERT ON hl7_inbound_messages "
    "FOR EACH ROW EXECUTE FUNCTION novaza_test_poison_row()",
    """CREATE OR REPLACE FUNCTION novaza_test_poison_outcome() RETURNS trigger AS $$
    BEGIN
      IF NEW.control_id LIKE 'POISONUPD%' THEN
        RAISE EXCEPTION 'refused' USING ERRCODE = '22003';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER novaza_test_poison_outcome BEFORE UPDATE ON hl7_inbound_messages "
    "FOR EACH ROW EXECUTE FUNCTION novaza_test_poison_outcome()",
]
SQLITE_POISON = [
    "CREATE TRIGGER novaza_test_poison BEFORE INSERT ON clinical_patients "
    "WHEN NEW.family_name = 'POISON' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    "CREATE TRIGGER novaza_test_poison_update BEFORE UPDATE ON clinical_patients "
    "WHEN NEW.family_name = 'POISON' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    "CREATE TRIGGER novaza_test_poison_row BEFORE INSERT ON hl7_inbound_messages "
    "WHEN NEW.control_id LIKE 'POISONROW%' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    "CREATE TRIGGER novaza_test_poison_outcome BEFORE UPDATE ON hl7_inbound_messages "
    "WHEN NEW.control_id LIKE 'POISONUPD%' BEGIN SELECT RAISE(ABORT, 'refused'); END",
]


async def install_poison(gw: Gateway) -> None:
    """Triggers that make the store refuse a patient named POISON, a message row whose
    control id starts with POISONROW, and the outcome of one that starts with POISONUPD."""
    engine = gw.app.state.db.engine
    statements = PG_POISON if engine.dialect.name == "postgresql" else SQLITE_POISON
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))


async def remove_poison(gw: Gateway) -> None:
    engine = gw.app.state.db.engine
    pg = engine.dialect.name == "postgresql"
    async with engine.begin() as connection:
        for name, table in (
            ("novaza_test_poison", "clinical_patients"),
            ("novaza_test_poison_update", "clinical_patients"),
            ("novaza_test_poison_row", "hl7_inbound_messages"),
            ("novaza_test_poison_outcome", "hl7_inbound_messages"),
        ):
            on = f" ON {table}" if pg else ""
            await connection.execute(text(f"DROP TRIGGER IF EXISTS {name}{on}"))


@pytest.fixture
async def mllp(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    async for gw in await_gateway(tmp_path, db_url):
        yield gw


async def await_gateway(tmp_path: Path, url: str) -> AsyncIterator[Gateway]:
    settings = gateway_settings(tmp_path / "data", url, mllp_port=0)
    async for gw in start_gateway(settings):
        limit = {"ratePerSecond": 10000, "burst": 10000}
        await gw.create_tenant(
            "stmarys", addons=["hl7_fhir"], settings={"hl7": HL7_SETTINGS}, rateLimit=limit
        )
        riverside = {**HL7_SETTINGS, "mllpRoutes": [{"sendingFacility": "RIVERSIDE"}]}
        await gw.create_tenant(
            "riverside", addons=["hl7_fhir"], settings={"hl7": riverside}, rateLimit=limit
        )
        await install_poison(gw)
        yield gw
        await remove_poison(gw)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def msa(ack: bytes) -> tuple[str, str]:
    fields = ack.split(b"MSA|", 1)[1].split(b"\r", 1)[0].split(b"|")
    return fields[0].decode(), fields[1].decode()


def err(ack: bytes | str) -> str:
    data = ack.decode() if isinstance(ack, bytes) else ack
    return data.split("\rERR|", 1)[1].split("\r", 1)[0]


async def one_group(gw: Gateway, *messages: bytes) -> list[bytes]:
    """Warm the caches, then send ``messages`` in one write: they land in one group."""
    client = await RawClient.connect(gw)
    await client.send(
        frame(a08("WARM1", "W1"))
        + frame(a08("WARM2", "W2", facility="RIVERSIDE", receiver=RIVERSIDE))
    )
    assert [msa(await client.ack())[0] for _ in range(2)] == ["AA", "AA"]
    await client.send(b"".join(frame(m) for m in messages))
    acks = [await client.ack() for _ in messages]
    await client.close()
    return acks


async def post(gw: Gateway, tenant: str, message: bytes, path: str = "adt") -> httpx.Response:
    return await gw.client.post(
        f"/med/hl7/{path}", content=message, headers={**gw.auth(tenant), **ER7}
    )


async def rows(gw: Gateway) -> dict[str, InboundMessage]:
    async with gw.app.state.db.sessionmaker() as session:
        found = await session.execute(select(InboundMessage))
        return {r.control_id: r for r in found.scalars()}


async def family_names(gw: Gateway) -> set[str]:
    async with gw.app.state.db.sessionmaker() as session:
        return set((await session.execute(select(Patient.family_name))).scalars())


async def test_a_value_the_store_refuses_fails_alone_in_its_group(mllp: Gateway) -> None:
    redone = sample("novaza_hl7_intake_redo_total")
    acks = await one_group(
        mllp,
        a08("OK1", "M1", "ALPHA"),
        a08("POISON1", "M2", "POISON", facility="RIVERSIDE", receiver=RIVERSIDE),
        orm("OK2", "M3", "ORD1"),
        a08("OK3", "M4", "GAMMA", facility="RIVERSIDE", receiver=RIVERSIDE),
    )
    assert [msa(a) for a in acks] == [
        ("AA", "OK1"),
        ("AE", "POISON1"),
        ("AA", "OK2"),
        ("AA", "OK3"),
    ]
    assert err(acks[1]).split("|")[2].startswith("207^The store refused a value")
    assert sample("novaza_hl7_intake_redo_total") == redone + 1
    stored = await rows(mllp)
    assert {k: (r.status, r.ack_code) for k, r in stored.items() if not k.startswith("WARM")} == {
        "OK1": ("processed", "AA"),
        "POISON1": ("failed", "AE"),
        "OK2": ("processed", "AA"),
        "OK3": ("processed", "AA"),
    }
    assert stored["POISON1"].ack == acks[1]  # a resend gets this AE, byte for byte
    names = await family_names(mllp)
    assert {"ALPHA", "GAMMA", "DOE"} <= names and "POISON" not in names


async def test_a_message_row_the_store_refuses_is_answered_ar_and_the_rest_commit(
    mllp: Gateway,
) -> None:
    """The redone group inserts its rows in a SAVEPOINT, then each in its own."""
    alone = sample("novaza_hl7_intake_alone_total")
    acks = await one_group(
        mllp,
        a08("OK1", "M1", "ALPHA"),
        a08("POISONROW1", "M2", "BETA", facility="RIVERSIDE", receiver=RIVERSIDE),
        orm("OK2", "M3", "ORD1"),
    )
    assert [msa(a) for a in acks] == [("AA", "OK1"), ("AR", "POISONROW1"), ("AA", "OK2")]
    assert "207^The store refused a value of the message" in err(acks[1])
    assert sample("novaza_hl7_intake_alone_total") == alone  # one transaction did it
    stored = await rows(mllp)
    assert "POISONROW1" not in stored
    assert stored["OK1"].status == stored["OK2"].status == "processed"
    assert "BETA" not in await family_names(mllp)  # nothing of the refused message stayed


async def test_a_group_refused_outside_every_savepoint_runs_each_message_alone(
    mllp: Gateway,
) -> None:
    """The outcomes' UPDATE (one statement for the group) is refused for one message: each
    message runs in a transaction of its own; the one at fault is answered AR."""
    alone = sample("novaza_hl7_intake_alone_total")
    acks = await one_group(
        mllp,
        a08("OK1", "M1", "ALPHA"),
        orm("OK2", "M3", "ORD1", procedures=2),  # several steps: SAVEPOINTs from the start
        a08("POISONUPD1", "M2", "BETA", facility="RIVERSIDE", receiver=RIVERSIDE),
        a08("OK3", "M4", "GAMMA", facility="RIVERSIDE", receiver=RIVERSIDE),
    )
    assert [msa(a) for a in acks] == [
        ("AA", "OK1"),
        ("AA", "OK2"),
        ("AR", "POISONUPD1"),
        ("AA", "OK3"),
    ]
    assert sample("novaza_hl7_intake_alone_total") == alone + 1
    stored = await rows(mllp)
    assert "POISONUPD1" not in stored
    assert {stored[k].status for k in ("OK1", "OK2", "OK3")} == {"processed"}
    names = await family_names(mllp)
    assert "BETA" not in names and {"ALPHA", "GAMMA"} <= names


async def test_http_poison_fails_alone_while_another_tenant_commits(mllp: Gateway) -> None:
    row_poison = a08("POISONROW2", "X2", "BETA", "RIVERSIDE", RIVERSIDE)
    answers = await asyncio.gather(
        post(mllp, "riverside", a08("P1", "X1", "POISON", "RIVERSIDE", RIVERSIDE)),
        *(post(mllp, "stmarys", a08(f"G{n}", f"Y{n}", "GOOD")) for n in range(6)),
        post(mllp, "riverside", row_poison),
    )
    assert answers[0].status_code == 422
    assert answers[0].json()["details"]["hl7ErrorCode"] == "207"
    assert [a.status_code for a in answers[1:-1]] == [200] * 6
    assert answers[-1].status_code == 400 and answers[-1].json()["code"] == "HL7_REJECTED"
    stored = await rows(mllp)
    assert {f"G{n}" for n in range(6)} <= set(stored) and "POISONROW2" not in stored
    assert stored["P1"].status == "failed"


async def test_control_characters_are_refused_before_the_store_naming_the_field(
    mllp: Gateway,
) -> None:
    """The issue's poison: PID-5 ``POISONNAME^O<NUL>NE``. AR, ERR-2 names PID-5.2; nothing is
    stored, on either store; the other tenant's messages meanwhile are answered AA."""
    nul = a08("NUL1", "X1", "POISONNAME^O\x00NE", "RIVERSIDE", RIVERSIDE)
    answers = await asyncio.gather(
        post(mllp, "riverside", nul),
        *(post(mllp, "stmarys", a08(f"G{n}", f"Y{n}")) for n in range(4)),
    )
    refused = answers[0]
    assert refused.status_code == 400 and refused.json()["code"] == "HL7_REJECTED"
    details = refused.json()["details"]
    assert details["hl7ErrorCode"] == "102" and details["messageId"] is None
    assert err(details["ack"]).startswith("|PID^3^5^^2|102^PID-5 holds a control character")
    assert "\x00" not in details["ack"]
    assert [a.status_code for a in answers[1:]] == [200] * 4
    acks = await one_group(mllp, nul.replace(b"NUL1", b"NUL2"), a08("G9", "Y9"))  # over MLLP
    assert [msa(a) for a in acks] == [("AR", "NUL2"), ("AA", "G9")]
    stored = await rows(mllp)
    assert "NUL1" not in stored and "NUL2" not in stored


async def test_the_issue_nul_reaching_postgresql_fails_alone(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the parser's check, the NUL reaches PostgreSQL as in the issue (asyncpg's
    CharacterNotInRepertoireError, a plain DBAPIError): the poison message is answered AE,
    the other tenant's messages in its group commit."""
    monkeypatch.setattr(parser, "_CONTROL", re.compile(r"(?!)"))  # matches nothing
    async for gw in await_gateway(tmp_path, pg_url):
        acks = await one_group(
            gw,
            a08("OK1", "M1", "ALPHA"),
            a08("NUL1", "M2", "POISONNAME^O\x00NE", facility="RIVERSIDE", receiver=RIVERSIDE),
            orm("OK2", "M3", "ORD1"),
        )
        assert [msa(a) for a in acks] == [("AA", "OK1"), ("AE", "NUL1"), ("AA", "OK2")]
        stored = await rows(gw)
        assert stored["NUL1"].status == "failed" and stored["OK2"].status == "processed"


async def test_an_order_past_the_cap_is_answered_ar_over_http(mllp: Gateway) -> None:
    answer = await post(mllp, "stmarys", orm("BIG1", "M1", "ORD1", procedures=51), "orm")
    assert answer.status_code == 400 and answer.json()["code"] == "HL7_REJECTED"
    details = answer.json()["details"]
    assert details["hl7ErrorCode"] == "207" and details["messageId"] is None
    assert "51 order steps (ORC/OBR); at most 50" in details["ack"]
    fifty = await post(mllp, "stmarys", orm("BIG2", "M1", "ORD2", procedures=50), "orm")
    assert fifty.status_code == 200
    assert "BIG1" not in await rows(mllp)


async def test_a_big_order_is_a_group_of_its_own_on_the_fast_path(mllp: Gateway) -> None:
    """More than 8 steps: its own group, alone, so without a SAVEPOINT; one whose last step
    fails after the others' changes is redone with it: AE, none of its items kept."""
    redone = sample("novaza_hl7_intake_redo_total")
    lone = {"le": "1.0"}
    groups = REGISTRY.get_sample_value("novaza_hl7_intake_group_messages_bucket", lone) or 0
    broken = orm("BIG2", "M5", "ORD2", procedures=9).decode() + "ORC|CA|NOPE|||CA\rOBR|1|NOPE\r"
    acks = await one_group(
        mllp,
        a08("OK1", "M1", "ALPHA"),
        orm("BIG1", "M2", "ORD1", procedures=12),
        a08("OK2", "M3", "BETA"),
        broken.encode(),
        a08("OK3", "M4", "GAMMA"),
    )
    assert [msa(a) for a in acks] == [
        ("AA", "OK1"),
        ("AA", "BIG1"),
        ("AA", "OK2"),
        ("AE", "BIG2"),
        ("AA", "OK3"),
    ]
    # OK1 | BIG1 | OK2 | BIG2 (run again with its SAVEPOINT) | OK3: five groups of one
    after = REGISTRY.get_sample_value("novaza_hl7_intake_group_messages_bucket", lone) or 0
    assert after - groups >= 5
    assert sample("novaza_hl7_intake_redo_total") == redone + 1
    async with mllp.app.state.db.sessionmaker() as session:
        placers = await session.execute(select(WorklistItem.placer_order_number))
        items = Counter(placers.scalars())
    assert items == Counter({"ORD1": 12})
