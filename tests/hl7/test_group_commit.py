"""Group commit over MLLP: frames pipelined on one connection are stored and processed in one
transaction, and every message keeps its own outcome.

Frames sent in one write are read before the batcher runs, so they land in one group (the
group-size histogram checks it). An AE in the group undoes nothing of the others and leaves
nothing of itself; twins in a group are processed once and answered with the same bytes; a
message that fails after a change sends the group to its SAVEPOINT-per-message run; a store
failure closes the connection without an ACK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from novaza_gateway.clinical import encounters, repository
from novaza_gateway.clinical.models import Order
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.hl7.mllp import frame
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.hl7.corpus import HL7_SETTINGS, fixture
from tests.hl7.test_mllp_listener import RawClient, stored

A01 = fixture("adt_a01_v251_epic.hl7")
A01_OTHER_CONTENT = A01.replace(b"12 Harbour Road", b"99 Other Road")
A11_UNKNOWN_VISIT = fixture("adt_a11_v25.hl7")  # V5077 was never admitted: AE
CA_UNKNOWN_ORDER = fixture("bad_orm_unknown_order_ca.hl7")  # AE 204
A02 = fixture("adt_a02_v251.hl7")
NW = fixture("orm_o01_nw_v251_epic.hl7")
XO = fixture("orm_o01_xo_v251.hl7")
SC_IN_PROGRESS = fixture("orm_o01_sc_v251.hl7")
WARM = fixture("adt_a04_v23_meditech.hl7")  # another tenant's patient: fills the caches


@pytest.fixture
async def mllp(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    settings = gateway_settings(tmp_path / "data", db_url, mllp_port=0)
    async for gw in start_gateway(settings):
        await gw.create_tenant("stmarys", addons=["hl7_fhir"], settings={"hl7": HL7_SETTINGS})
        riverside = {"mllpRoutes": [{"sendingFacility": "RIVERSIDE"}]}
        await gw.create_tenant("riverside", addons=["hl7_fhir"], settings={"hl7": riverside})
        yield gw


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def msa(ack: bytes) -> tuple[str, str]:
    fields = ack.split(b"MSA|", 1)[1].split(b"\r", 1)[0].split(b"|")
    return fields[0].decode(), fields[1].decode()


async def exchange(gw: Gateway, *messages: bytes) -> list[bytes]:
    """Warm the caches with one message, then send ``messages`` in one write."""
    client = await RawClient.connect(gw)
    await client.send(frame(WARM))
    assert msa(await client.ack())[0] == "AA"
    await client.send(b"".join(frame(m) for m in messages))
    acks = [await client.ack() for _ in messages]
    await client.close()
    return acks


async def count(gw: Gateway, query: Any) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def test_one_group_each_message_its_own_outcome(mllp: Gateway) -> None:
    groups = sample("novaza_hl7_intake_group_messages_count")
    grouped = sample("novaza_hl7_intake_group_messages_sum")
    acks = await exchange(
        mllp, A01, A11_UNKNOWN_VISIT, CA_UNKNOWN_ORDER, A02, A01, A01_OTHER_CONTENT, NW
    )
    assert [msa(a) for a in acks] == [
        ("AA", "EPA01000001"),
        ("AE", "EPA11000001"),
        ("AE", "BAD000102"),
        ("AA", "EPA02000001"),
        ("AA", "EPA01000001"),  # the twin: the first one's ACK, byte for byte
        ("AE", "EPA01000001"),  # same key, other content: 205
        ("AA", "EPO01000001"),
    ]
    assert acks[4] == acks[0]
    assert b"205^" in acks[5]
    # the seven came in one group (after the warm-up message's own)
    assert sample("novaza_hl7_intake_group_messages_count") - groups == 2
    assert sample("novaza_hl7_intake_group_messages_sum") - grouped == 8

    rows = {r.control_id: r for r in await stored(mllp)}
    assert {k: (r.status, r.ack_code) for k, r in rows.items()} == {
        "MT20260302101512001": ("processed", "AA"),
        "EPA01000001": ("processed", "AA"),
        "EPA11000001": ("failed", "AE"),
        "BAD000102": ("failed", "AE"),
        "EPA02000001": ("processed", "AA"),
        "EPO01000001": ("processed", "AA"),
    }
    assert rows["EPA01000001"].ack == acks[0]
    tenant_id = mllp.tenants["stmarys"]["id"]
    async with mllp.app.state.db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None and visit.status == "transferred"
        patient = await repository.patient(session, tenant_id, visit.patient_id)
        assert patient is not None and patient.family_name == "O'Brien-Walsh"
        item = await repository.worklist_item(session, tenant_id, "ACC7001")
        assert item is not None and item.patient_id == patient.id
        # the AE'd A11 registered nobody
        assert not await repository.identifiers_with_value(session, tenant_id, "100777")
    processed_once = select(func.count()).where(AuditEvent.action == "hl7.adt.a01")
    assert await count(mllp, processed_once) == 1


async def test_an_order_placed_changed_and_started_in_one_group(mllp: Gateway) -> None:
    """NW (its patient registered), XO and SC of one order in one group: the rows the group
    creates are written once, as the last message left them (ADR 0014), and audited."""
    redone = sample("novaza_hl7_intake_redo_total")
    acks = await exchange(mllp, NW, XO, SC_IN_PROGRESS)
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AA"]
    assert sample("novaza_hl7_intake_redo_total") == redone
    tenant_id = mllp.tenants["stmarys"]["id"]
    async with mllp.app.state.db.sessionmaker() as session:
        item = await repository.worklist_item(session, tenant_id, "ACC7001")
        assert item is not None
        assert (item.status, item.requested_procedure_code) == ("in_progress", "CT-CHEST-WO")
        assert item.modality == "CT" and item.station_ae_title == "CT_SCANNER_1"
        (ident,) = await repository.identifiers_with_value(session, tenant_id, "100234")
        assert ident.patient_id == item.patient_id
    actions = select(AuditEvent.action, func.count()).group_by(AuditEvent.action)
    async with mllp.app.state.db.sessionmaker() as session:
        counts = {action: n for action, n in (await session.execute(actions)).all()}
    assert counts["order.place"] == 1 and counts["order.change"] == 1
    assert counts["order.in_progress"] == 1 and counts["patient.create"] == 2  # + WARM's
    assert counts["hl7.orm.o01"] == 3


async def test_a_failure_after_a_change_is_undone_by_the_savepoint_run(
    mllp: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before the first change is skipped (a bug): the A11 registers its patient,
    then fails. The group runs again with a SAVEPOINT per message: AE, no patient."""

    async def unchecked(*_: Any) -> None:
        return None

    monkeypatch.setattr(encounters, "check_event", unchecked)
    redone = sample("novaza_hl7_intake_redo_total")
    acks = await exchange(mllp, A01, A11_UNKNOWN_VISIT, A02)
    assert [msa(a)[0] for a in acks] == ["AA", "AE", "AA"]
    assert sample("novaza_hl7_intake_redo_total") == redone + 1
    tenant_id = mllp.tenants["stmarys"]["id"]
    async with mllp.app.state.db.sessionmaker() as session:
        assert not await repository.identifiers_with_value(session, tenant_id, "100777")
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None and visit.status == "transferred"


async def test_a_message_that_may_fail_midway_gets_a_savepoint(mllp: Gateway) -> None:
    """Two order controls: the NW is applied, then the CA fails. AE: the NW is undone."""
    nw = NW.decode().replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")
    ca = "ORC|CA|ORD-NOPE|||CA\rOBR|1|ORD-NOPE||CT-HEAD^CT head"
    both = f"{nw}\r{ca}\r".replace("EPO01000001", "EPO01000002").encode()
    acks = await exchange(mllp, A01, both, A02)
    assert [msa(a)[0] for a in acks] == ["AA", "AE", "AA"]
    assert await count(mllp, select(func.count()).select_from(Order)) == 0
    assert [r.status for r in await stored(mllp)][-3:] == ["processed", "failed", "processed"]


async def test_a_store_failure_closes_the_connection_without_an_ack(
    mllp: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    batcher = mllp.app.state.hl7.listener.batcher
    real = batcher._store

    async def failing(group: Any) -> Any:
        raise ConnectionResetError("the database went away")

    client = await RawClient.connect(mllp)
    await client.send(frame(WARM))
    assert msa(await client.ack())[0] == "AA"
    monkeypatch.setattr(batcher, "_store", failing)
    await client.send(frame(A01))
    assert await client.closed_by_peer()
    monkeypatch.setattr(batcher, "_store", real)
    again = await RawClient.connect(mllp)
    await again.send(frame(A01))  # the sender resends: stored now, once
    assert msa(await again.ack()) == ("AA", "EPA01000001")
    await again.close()
    keys = select(func.count()).where(InboundMessage.control_id == "EPA01000001")
    assert await count(mllp, keys) == 1
