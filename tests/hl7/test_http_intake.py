"""ADT and ORM intake over HTTP, on SQLite and PostgreSQL: ACKs, errors, durability, duplicates."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway
from tests.hl7.corpus import HL7_SETTINGS, fixture

ER7 = {"Content-Type": "application/hl7-v2"}


async def hl7_tenant(gw: Gateway, slug: str = "stmarys", **settings: Any) -> dict[str, str]:
    await gw.create_tenant(
        slug,
        addons=["hl7_fhir", "medical_imaging"],
        settings={"hl7": {**HL7_SETTINGS, **settings}},
        rateLimit={"ratePerSecond": 1000, "burst": 1000},
    )
    return gw.auth(slug)


async def post(
    gw: Gateway, path: str, auth: dict[str, str], body: bytes, **headers: str
) -> httpx.Response:
    return await gw.client.post(
        f"/med/hl7/{path}", content=body, headers={**auth, **ER7, **headers}
    )


async def stored(gw: Gateway) -> list[InboundMessage]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(select(InboundMessage).order_by(InboundMessage.received_at))
        return list(rows.scalars())


async def test_adt_a01_answers_aa_after_storing_the_raw_message(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    raw = fixture("adt_a01_v251_epic.hl7")
    response = await post(gateway, "adt", auth, raw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ackCode"] == "AA"
    assert body["controlId"] == "EPA01000001"
    assert "MSA|AA|EPA01000001" in body["ack"]
    assert body["duplicate"] is False
    rows = await stored(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert row.raw == raw
    assert row.id == body["messageId"]
    assert (row.sending_application, row.sending_facility) == ("EPIC", "STMARYS")
    assert (row.message_type, row.trigger_event, row.status) == ("ADT", "A01", "processed")
    assert row.ack is not None and row.ack.decode() == body["ack"]
    assert row.patient_id is not None
    async with gateway.app.state.db.sessionmaker() as session:
        actions = (
            await session.execute(
                select(AuditEvent.action).where(AuditEvent.patient_id == row.patient_id)
            )
        ).scalars()
        assert set(actions) >= {"patient.create", "encounter.admit", "hl7.adt.a01"}


async def test_bare_ack_with_accept_and_duplicate_is_byte_for_byte(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    raw = fixture("adt_a04_v23_meditech.hl7")
    accept = {"Accept": "application/hl7-v2"}
    first = await post(gateway, "adt", auth, raw, **accept)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/hl7-v2")
    assert first.content.startswith(b"MSH|^~\\&|NOVAZA|RIVERSIDE|MEDITECH|RIVERSIDE|")
    # the same message again, even with other line endings: the original ACK, not reprocessed
    again = await post(gateway, "adt", auth, raw.replace(b"\n", b"\r\n"), **accept)
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["x-hl7-duplicate"] == "true"
    assert len(await stored(gateway)) == 1
    # the same key with other content is AE (205)
    changed = raw.replace(b"NGUYEN^THANH", b"NGUYEN^TAN")
    conflict = await post(gateway, "adt", auth, changed)
    assert conflict.status_code == 422
    assert conflict.json()["code"] == "HL7_APPLICATION_ERROR"
    assert conflict.json()["details"]["hl7ErrorCode"] == "205"
    assert "MSA|AE|MT20260302101512001" in conflict.json()["details"]["ack"]


async def test_json_body_and_text_plain(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    text = fixture("adt_a28_v231_allscripts.hl7").decode()
    response = await gateway.client.post("/med/hl7/adt", json={"message": text}, headers=auth)
    assert response.status_code == 200, response.text
    plain = fixture("adt_a31_v24.hl7")
    response = await post(gateway, "adt", auth, plain, **{"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    bad_json = await gateway.client.post("/med/hl7/adt", json={"msg": text}, headers=auth)
    assert bad_json.status_code == 422
    assert bad_json.json()["code"] == "VALIDATION_FAILED"
    xml = await post(gateway, "adt", auth, b"<x/>", **{"Content-Type": "application/xml"})
    assert xml.status_code == 415


async def test_rejections_are_400_with_the_ar_ack(gw: Gateway) -> None:
    auth = await hl7_tenant(gw)
    cases = {
        "bad_no_msh.hl7": "101",
        "bad_encoding_chars.hl7": "102",
        "bad_truncated.hl7": "101",
        "bad_version_22.hl7": "203",
        "bad_unknown_event_a99.hl7": "201",
        "bad_binary_noise.bin": "101",
        "orm_o01_nw_v251_epic.hl7": "200",  # an order sent to the ADT endpoint
    }
    for name, code in cases.items():
        response = await post(gw, "adt", auth, fixture(name))
        assert response.status_code == 400, name
        body = response.json()
        assert body["code"] == "HL7_REJECTED"
        assert body["details"]["ackCode"] == "AR"
        assert body["details"]["hl7ErrorCode"] == code, name
        assert "MSA|AR|" in body["details"]["ack"]
    wrong = await post(gw, "orm", auth, fixture("adt_a02_v251.hl7"), Accept="application/hl7-v2")
    assert wrong.status_code == 400
    assert b"MSA|AR|EPA02000001" in wrong.content
    assert await stored(gw) == []  # rejected messages are not taken


async def test_application_errors_are_422_and_stored(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    for name, code, location in [
        ("bad_invalid_birth_date.hl7", "102", "PID^2^7"),
        ("bad_no_pid.hl7", "100", "PID"),
    ]:
        response = await post(gateway, "adt", auth, fixture(name))
        assert response.status_code == 422, name
        details = response.json()["details"]
        assert details["hl7ErrorCode"] == code
        assert f"ERR||{location}|{code}^" in details["ack"]
    unknown = await post(gateway, "orm", auth, fixture("bad_orm_unknown_order_ca.hl7"))
    assert unknown.status_code == 422
    assert unknown.json()["details"]["hl7ErrorCode"] == "204"
    rows = await stored(gateway)
    assert [r.status for r in rows] == ["failed", "failed", "failed"]
    assert [r.ack_code for r in rows] == ["AE", "AE", "AE"]
    # an AE answer is kept too: the duplicate gets it again
    again = await post(gateway, "orm", auth, fixture("bad_orm_unknown_order_ca.hl7"))
    assert again.status_code == 422
    assert again.json()["details"]["ack"] == unknown.json()["details"]["ack"]


async def test_policy_scope_addon_and_size_limit(gw: Gateway) -> None:
    await gw.create_tenant("noaddon", addons=["emr"])
    raw = fixture("adt_a01_v251_epic.hl7")
    no_addon = await post(gw, "adt", gw.auth("noaddon"), raw)
    assert no_addon.status_code == 403
    assert no_addon.json()["code"] == "ADDON_REQUIRED"
    auth = await hl7_tenant(gw)
    no_scope = await post(gw, "adt", gw.auth("stmarys", scopes="imaging:read"), raw)
    assert no_scope.status_code == 403
    huge_obx = raw + b"\rOBX|1|TX|NOTE||" + b"x" * (1024 * 1024) + b"\r"
    too_big = await post(gw, "adt", auth, huge_obx)
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "PAYLOAD_TOO_LARGE"
    unauthenticated = await gw.client.post("/med/hl7/adt", content=raw, headers=ER7)
    assert unauthenticated.status_code == 401


async def test_tenants_do_not_see_each_others_duplicates(gateway: Gateway) -> None:
    first = await hl7_tenant(gateway, "stmarys")
    second = await hl7_tenant(gateway, "riverside")
    raw = fixture("adt_a01_v251_epic.hl7")
    assert (await post(gateway, "adt", first, raw)).status_code == 200
    response = await post(gateway, "adt", second, raw)
    assert response.status_code == 200
    assert "x-hl7-duplicate" not in response.headers
    async with gateway.app.state.db.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(InboundMessage))
    assert count == 2


async def test_a_processing_bug_keeps_the_message_answers_ae_and_logs_no_content(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from novaza_gateway.hl7 import intake

    async def broken(*_: Any) -> str:
        raise KeyError("O'Brien")  # an exception whose text carries patient data

    monkeypatch.setattr(intake, "process_adt", broken)
    auth = await hl7_tenant(gw)
    response = await post(gw, "adt", auth, fixture("adt_a01_v251_epic.hl7"))
    assert response.status_code == 422
    assert response.json()["details"]["hl7ErrorCode"] == "207"
    assert "Brien" not in response.text
    rows = await stored(gw)
    assert [(r.status, r.ack_code) for r in rows] == [("failed", "AE")]
    assert "hl7 processing failed" in caplog.text
    assert "Brien" not in caplog.text


async def test_concurrent_twins_are_processed_once(gateway: Gateway) -> None:
    import asyncio

    auth = await hl7_tenant(gateway)
    raw = fixture("adt_a01_v251_epic.hl7")
    bare = {"Accept": "application/hl7-v2"}
    answers = await asyncio.gather(*(post(gateway, "adt", auth, raw, **bare) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4  # one group commit: no twin waits
    acks = {a.content for a in answers}
    assert len(acks) == 1  # every twin got the first one's ACK, byte for byte
    again = await post(gateway, "adt", auth, raw, **bare)
    assert again.content in acks
    assert len(await stored(gateway)) == 1
    async with gateway.app.state.db.sessionmaker() as session:
        audits = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "hl7.adt.a01")
        )
    assert audits == 1


async def test_concurrent_messages_for_one_new_patient_make_one_patient(gateway: Gateway) -> None:
    import asyncio

    from novaza_gateway.clinical.models import Patient

    auth = await hl7_tenant(gateway)
    raw = fixture("adt_a28_v231_allscripts.hl7")
    bodies = [raw.replace(b"AS-000123", f"AS-9{n}".encode()) for n in range(4)]
    answers = await asyncio.gather(*(post(gateway, "adt", auth, b) for b in bodies))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    async with gateway.app.state.db.sessionmaker() as session:
        patients = await session.scalar(select(func.count()).select_from(Patient))
    assert patients == 1


async def test_concurrent_requests_share_a_group_commit(gateway: Gateway) -> None:
    """HTTP messages join the intake batcher's groups (ADR 0016): twenty concurrent requests
    take fewer than twenty transactions, and each is answered only after its commit."""
    import asyncio

    from prometheus_client import REGISTRY

    def groups() -> float:
        return REGISTRY.get_sample_value("novaza_hl7_intake_group_messages_count") or 0.0

    auth = await hl7_tenant(gateway)
    base = fixture("adt_a08_v24_cerner.hl7")
    bodies = [base.replace(b"Q7845120T8521", f"GRP{n:04d}".encode()) for n in range(20)]
    before = groups()
    answers = await asyncio.gather(*(post(gateway, "adt", auth, body) for body in bodies))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    await gateway.client.get("/metrics")  # applies the tally
    assert 1 <= groups() - before < 20
    ids = {a.json()["messageId"] for a in answers}
    async with gateway.app.state.db.sessionmaker() as session:
        rows = await session.execute(select(InboundMessage.id, InboundMessage.status))
        assert {i for i, status in rows if status == "processed"} >= ids


async def test_a_store_failure_answers_503_and_the_retry_stores_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = await hl7_tenant(gateway)
    batcher = gateway.app.state.hl7.batcher
    real = batcher._store

    async def failing(group: Any) -> Any:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(batcher, "_store", failing)
    raw = fixture("adt_a01_v251_epic.hl7")
    down = await post(gateway, "adt", auth, raw)
    assert down.status_code == 503
    assert down.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert "EPA01000001" not in down.text and "traceback" not in down.text.lower()
    monkeypatch.setattr(batcher, "_store", real)
    again = await post(gateway, "adt", auth, raw)  # the sender retries: stored now, once
    assert again.status_code == 200 and again.json()["ackCode"] == "AA"
    assert [r.control_id for r in await stored(gateway)] == ["EPA01000001"]
