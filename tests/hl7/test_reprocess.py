"""Reprocessing a failed inbound message (ADR 0017), on SQLite and PostgreSQL: an order AE'd
for an unknown patient applies once the patient is admitted; the ACK the sender got stays."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from novaza_gateway.clinical import repository as clinical
from novaza_gateway.clinical.models import Order
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.hl7 import intake
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway
from tests.hl7.corpus import fixture
from tests.hl7.test_http_intake import hl7_tenant, post

ORDER = fixture("orm_o01_nw_unknown_patient_v25.hl7")  # ACC8001, patient MRN 200500 (Haddad)
BARE = {"Accept": "application/hl7-v2"}


def admission() -> bytes:
    """An A01 admitting the order's patient (MRN 200500), its own control id and visit."""
    a01 = fixture("adt_a01_v251_epic.hl7")
    return (
        a01.replace(b"100234^^^STMARYS^MR~998877665^^^USSSA^SS", b"200500^^^STMARYS^MR")
        .replace(b"O'Brien^Margaret^Ann^^Mrs.", b"Haddad^Yusuf")
        .replace(b"|EPA01000001|", b"|EPA01200500|")
        .replace(b"V5001^^^STMARYS^VN", b"V8001^^^STMARYS^VN")
    )


async def reprocess(gw: Gateway, auth: dict[str, str], message_id: str) -> httpx.Response:
    return await gw.client.post(f"/med/hl7/messages/{message_id}/reprocess", headers=auth)


async def refused_order(gw: Gateway, auth: dict[str, str]) -> tuple[str, bytes]:
    """The order sent for an unknown patient: answered AE, stored failed. Its id, its ACK."""
    response = await post(gw, "orm", auth, ORDER, **BARE)
    assert response.status_code == 422
    async with gw.app.state.db.sessionmaker() as session:
        row = (await session.execute(select(InboundMessage))).scalar_one()
    assert (row.status, row.ack_code, row.ack) == ("failed", "AE", response.content)
    return row.id, response.content


async def orders_of(gw: Gateway) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Order))).scalar_one())


async def audits(gw: Gateway, message_id: str) -> list[AuditEvent]:
    async with gw.app.state.db.sessionmaker() as session:
        query = select(AuditEvent).where(
            AuditEvent.action == "hl7.message.reprocess", AuditEvent.resource_id == message_id
        )
        return list((await session.execute(query)).scalars())


async def test_order_for_an_unknown_patient_applies_once_the_patient_is_admitted(
    gateway: Gateway,
) -> None:
    auth = await hl7_tenant(gateway, registerUnknownPatients=False)
    message_id, ack = await refused_order(gateway, auth)
    admitted = await post(gateway, "adt", auth, admission())
    assert admitted.status_code == 200, admitted.text

    response = await reprocess(gateway, auth, message_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "processed"
    assert body["ackCode"] == "AE"  # what the sender was answered
    assert (body["errorCode"], body["lastError"]) == (None, None)
    assert body["reprocessCount"] == 1 and body["reprocessedAt"] is not None
    assert body["patientId"] is not None
    tenant_id = gateway.tenants["stmarys"]["id"]
    async with gateway.app.state.db.sessionmaker() as session:
        item = await clinical.worklist_item(session, tenant_id, "ACC8001")
        row = await session.get(InboundMessage, message_id)
    assert item is not None and item.patient_id == body["patientId"]
    assert row is not None and row.ack == ack and row.status == "processed"
    status = await gateway.client.get(f"/med/hl7/messages/{message_id}", headers=auth)
    assert status.json()["status"] == "processed"
    [event] = await audits(gateway, message_id)
    assert (event.patient_id, event.outcome) == (body["patientId"], "success")

    # a resend is a duplicate: the original AE ACK byte for byte, not applied again
    again = await post(gateway, "orm", auth, ORDER, **BARE)
    assert again.status_code == 422
    assert again.content == ack
    assert again.headers["x-hl7-duplicate"] == "true"
    as_json = await post(gateway, "orm", auth, ORDER)
    assert as_json.json()["details"]["hl7ErrorCode"] == "204"  # read from that ACK
    assert await orders_of(gateway) == 1

    twice = await reprocess(gateway, auth, message_id)
    assert twice.status_code == 409
    assert twice.json()["code"] == "CONFLICT"
    assert "processed" in twice.json()["message"]
    assert await orders_of(gateway) == 1


async def test_a_gateway_bug_then_still_failing_keeps_the_new_error(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    auth = await hl7_tenant(gateway, registerUnknownPatients=False)

    async def bug(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("Haddad")  # an exception that carries message content

    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, "novaza.hl7"):
        patched.setattr(intake, "process_order", bug)
        first = await post(gateway, "orm", auth, ORDER)
    assert first.status_code == 422
    assert first.json()["details"]["hl7ErrorCode"] == "207"
    assert "Haddad" not in caplog.text and "200500" not in caplog.text
    message_id = first.json()["details"]["messageId"]

    # fixed, but the patient is still unknown: failed, with the new error
    response = await reprocess(gateway, auth, message_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["errorCode"], body["ackCode"]) == ("failed", "204", "AE")
    assert "patient" in body["lastError"]
    assert body["reprocessCount"] == 1 and body["patientId"] is None
    [event] = await audits(gateway, message_id)
    assert event.outcome == "error"
    # the sender's resend still gets what it was answered: 207
    again = await post(gateway, "orm", auth, ORDER)
    assert again.json()["details"]["hl7ErrorCode"] == "207"
    assert again.json()["details"]["ack"] == first.json()["details"]["ack"]

    assert (await post(gateway, "adt", auth, admission())).status_code == 200
    done = await reprocess(gateway, auth, message_id)
    assert done.json()["status"] == "processed"
    assert done.json()["reprocessCount"] == 2
    assert len(await audits(gateway, message_id)) == 2
    assert await orders_of(gateway) == 1


async def test_only_this_tenants_failed_inbound_messages(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway, registerUnknownPatients=False)
    message_id, _ = await refused_order(gateway, auth)
    other = await hl7_tenant(gateway, "riverside")
    assert (await reprocess(gateway, other, message_id)).status_code == 404
    assert (await reprocess(gateway, auth, "0" * 32)).status_code == 404
    assert (await reprocess(gateway, auth, "not-an-id")).status_code == 422
    accepted = await post(gateway, "adt", auth, admission())
    conflict = await reprocess(gateway, auth, accepted.json()["messageId"])
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "CONFLICT"
    read_only = gateway.auth("stmarys", scopes="imaging:read patients:read")
    assert (await reprocess(gateway, read_only, message_id)).status_code == 403
    async with gateway.app.state.db.sessionmaker() as session:
        row = await session.get(InboundMessage, message_id)
    assert row is not None and (row.status, row.reprocess_count) == ("failed", 0)


async def test_concurrent_reprocess_applies_once(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway, registerUnknownPatients=False)
    message_id, _ = await refused_order(gateway, auth)
    assert (await post(gateway, "adt", auth, admission())).status_code == 200
    answers = await asyncio.gather(*(reprocess(gateway, auth, message_id) for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409], [a.text for a in answers]
    assert await orders_of(gateway) == 1
    assert len(await audits(gateway, message_id)) == 1
    async with gateway.app.state.db.sessionmaker() as session:
        row = await session.get(InboundMessage, message_id)
        placed = await session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "order.place")
        )
    assert row is not None and (row.status, row.reprocess_count) == ("processed", 1)
    assert placed.scalar_one() == 1
