"""ORU send: build, outbox, MLLP delivery to a scripted receiver, retries, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import hl7 as python_hl7
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.hl7.corpus import HL7_SETTINGS, fixture
from tests.hl7.receiver import ScriptedReceiver
from tests.hl7.test_http_intake import post

FAST_RETRIES = {
    "hl7_ack_timeout_seconds": 0.5,
    "hl7_outbox_backoff_seconds": 0.3,
    "hl7_outbox_backoff_max_seconds": 0.6,
    "hl7_outbox_max_attempts": 5,
    "hl7_outbox_poll_seconds": 0.1,
}


@pytest.fixture
async def receiver() -> AsyncIterator[ScriptedReceiver]:
    async with ScriptedReceiver() as r:
        yield r


async def oru_gateway(
    tmp_path: Path, db_url: str, receiver: ScriptedReceiver, **overrides: Any
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(tmp_path / "data", db_url, **FAST_RETRIES, **overrides)
    async for gw in start_gateway(settings):
        destinations = {
            "ris": {
                "host": "127.0.0.1",
                "port": receiver.port,
                "receivingApplication": "RIS",
                "receivingFacility": "STMARYS",
            }
        }
        hl7 = {**HL7_SETTINGS, "destinations": destinations, "defaultDestination": "ris"}
        await gw.create_tenant(
            "stmarys",
            addons=["hl7_fhir"],
            settings={"hl7": hl7},
            rateLimit={"ratePerSecond": 1000, "burst": 1000},  # settled() polls
        )
        auth = gw.auth("stmarys")
        for name in ["adt_a01_v251_epic.hl7", "adt_a28_v231_allscripts.hl7"]:
            assert (await post(gw, "adt", auth, fixture(name))).status_code == 200
        orm = fixture("orm_o01_nw_v251_epic.hl7")
        assert (await post(gw, "orm", auth, orm)).status_code == 200
        yield gw


@pytest.fixture
async def oru(tmp_path: Path, db_url: str, receiver: ScriptedReceiver) -> AsyncIterator[Gateway]:
    async for gw in oru_gateway(tmp_path, db_url, receiver):
        yield gw


@pytest.fixture
async def oru_sqlite(
    tmp_path: Path, sqlite_url: str, receiver: ScriptedReceiver
) -> AsyncIterator[Gateway]:
    async for gw in oru_gateway(tmp_path, sqlite_url, receiver):
        yield gw


RESULT: dict[str, Any] = {
    "patient": {"identifier": "100234", "assigningAuthority": "STMARYS"},
    "order": {"accessionNumber": "ACC7001", "studyInstanceUid": "1.2.840.113619.2.55.3.1"},
    "resultStatus": "F",
    "observations": [
        {
            "code": "IMP",
            "codingSystem": "L",
            "text": "Impression",
            "valueType": "TX",
            "value": "No pulmonary embolism | no effusion",
        },
        {
            "code": "8867-4",
            "codingSystem": "LN",
            "text": "Heart rate",
            "valueType": "NM",
            "value": 72,
            "units": "/min",
            "referenceRange": "60-100",
            "abnormalFlag": "N",
        },
        {
            "code": "DX",
            "valueType": "CE",
            "value": {"code": "R91.8", "text": "Lung finding", "codingSystem": "I10"},
        },
    ],
    "reportText": "CT chest with contrast.\nNo filling defect.",
}


async def send(gw: Gateway, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await gw.client.post(
        "/med/hl7/send-oru", json=body or RESULT, headers=gw.auth("stmarys")
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def settled(gw: Gateway, message_id: str, *states: str) -> dict[str, Any]:
    wanted = states or ("delivered", "dead")
    for _ in range(200):
        response = await gw.client.get(
            f"/med/hl7/messages/{message_id}", headers=gw.auth("stmarys")
        )
        assert response.status_code == 200, response.text
        if response.json()["status"] in wanted:
            return dict(response.json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"message still {response.json()['status']}")


async def test_built_oru_is_delivered_once_with_aa(
    oru: Gateway, receiver: ScriptedReceiver
) -> None:
    queued = await send(oru)
    assert queued["status"] == "queued"
    assert len(queued["controlId"]) == 20
    done = await settled(oru, queued["messageId"])
    assert done["status"] == "delivered"
    assert [a["outcome"] for a in done["attempts"]] == ["AA"]
    assert done["direction"] == "outbound" and done["destination"] == "ris"
    assert len(receiver.received) == 1
    message = python_hl7.parse(receiver.received[0].decode())
    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(message.segment("MSH")[10]) == queued["controlId"]
    assert str(message.segment("MSH")[5]) == "RIS"
    assert "100234^^^STMARYS^MR" in str(message.segment("PID")[3])
    assert str(message.segment("PID")[5]) == "O'Brien^Margaret^Ann"
    obr = message.segment("OBR")
    assert (str(obr[2]), str(obr[18]), str(obr[25])) == ("ORD7001", "ACC7001", "F")
    obx = message.segments("OBX")
    assert [str(o[2]) for o in obx] == ["TX", "NM", "CE", "ST"]
    assert str(obx[0][5]) == "No pulmonary embolism \\F\\ no effusion"  # escaped on the wire
    assert (str(obx[1][5]), str(obx[1][6]), str(obx[1][7])) == ("72", "/min", "60-100")
    assert str(obx[2][5]) == "R91.8^Lung finding^I10"
    assert str(obx[3][5]) == "1.2.840.113619.2.55.3.1"
    assert [str(n[3]) for n in message.segments("NTE")] == [
        "CT chest with contrast.",
        "No filling defect.",
    ]


async def test_ae_stall_drop_are_retried_until_aa(oru: Gateway, receiver: ScriptedReceiver) -> None:
    receiver.script = ["AE", "stall", "drop", "wrong", "AA"]
    queued = await send(oru)
    done = await settled(oru, queued["messageId"])
    assert done["status"] == "delivered"
    outcomes = [a["outcome"] for a in done["attempts"]]
    assert outcomes == ["AE", "timeout", "error", "error", "AA"]
    assert receiver.control_ids() == [queued["controlId"]] * 5
    assert receiver.connections >= 3  # the stalled and dropped connections were replaced


async def test_ar_dead_letters_without_blocking_the_next_and_requeue(
    oru_sqlite: Gateway, receiver: ScriptedReceiver
) -> None:
    gw = oru_sqlite
    receiver.script = ["AR"]
    first = await send(gw)
    dead = await settled(gw, first["messageId"])
    assert dead["status"] == "dead"
    assert dead["ackCode"] == "AR"
    second = await send(gw)
    assert (await settled(gw, second["messageId"]))["status"] == "delivered"
    requeued = await gw.client.post(
        f"/med/hl7/messages/{first['messageId']}/requeue", headers=gw.auth("stmarys")
    )
    assert requeued.status_code == 200
    assert (await settled(gw, first["messageId"]))["status"] == "delivered"
    again = await gw.client.post(
        f"/med/hl7/messages/{first['messageId']}/requeue", headers=gw.auth("stmarys")
    )
    assert again.status_code == 409


async def test_exhausted_retries_go_dead(oru_sqlite: Gateway, receiver: ScriptedReceiver) -> None:
    receiver.script = ["AE"] * 5
    queued = await send(oru_sqlite)
    done = await settled(oru_sqlite, queued["messageId"])
    assert done["status"] == "dead"
    assert len(done["attempts"]) == 5
    assert done["lastError"] == "scripted"


async def test_fifo_per_patient_and_order_must_match_patient(
    oru: Gateway, receiver: ScriptedReceiver
) -> None:
    receiver.script = ["AE"]
    first = await send(oru)
    second = await send(oru)
    other = await oru.client.post(
        "/med/hl7/send-oru",
        json={
            **RESULT,
            "patient": {"identifier": "NC-55012", "assigningAuthority": "NORTHCLINIC"},
            "message": None,
        },
        headers=oru.auth("stmarys"),
    )
    assert other.status_code == 422  # the order belongs to another patient
    await settled(oru, second["messageId"])
    order = receiver.control_ids()
    assert order == [first["controlId"], first["controlId"], second["controlId"]]


async def test_ready_made_oru_and_validation(
    oru_sqlite: Gateway, receiver: ScriptedReceiver
) -> None:
    gw = oru_sqlite
    raw = fixture("oru_r01_v251.hl7").decode().replace("\n", "\r")
    queued = await send(gw, {"message": raw})
    assert queued["controlId"] == "LB000001"
    await settled(gw, queued["messageId"])
    assert receiver.received == [raw.encode()]
    auth = gw.auth("stmarys")
    cases = [
        ({**RESULT, "destination": "nowhere"}, 422, "HL7_DESTINATION_UNKNOWN"),
        ({**RESULT, "order": {"accessionNumber": "NOPE"}}, 404, "NOT_FOUND"),
        ({**RESULT, "patient": {"identifier": "nobody"}}, 404, "NOT_FOUND"),
        ({"message": fixture("adt_a02_v251.hl7").decode()}, 422, "VALIDATION_FAILED"),
        ({"message": raw}, 409, "CONFLICT"),
        ({**RESULT, "observations": [{**RESULT["observations"][1], "value": "x"}]}, 422,
         "VALIDATION_FAILED"),
        ({"patient": RESULT["patient"], "order": RESULT["order"]}, 422, "VALIDATION_FAILED"),
    ]  # fmt: skip
    for body, status, code in cases:
        response = await gw.client.post("/med/hl7/send-oru", json=body, headers=auth)
        assert (response.status_code, response.json()["code"]) == (status, code), body
    missing = await gw.client.get("/med/hl7/messages/" + "0" * 32, headers=auth)
    assert missing.status_code == 404


async def test_inbound_messages_have_a_status_too(oru_sqlite: Gateway) -> None:
    response = await post(
        oru_sqlite, "adt", oru_sqlite.auth("stmarys"), fixture("adt_a02_v251.hl7")
    )
    message_id = response.json()["messageId"]
    got = await oru_sqlite.client.get(
        f"/med/hl7/messages/{message_id}", headers=oru_sqlite.auth("stmarys")
    )
    assert got.json()["direction"] == "inbound"
    assert (got.json()["status"], got.json()["ackCode"]) == ("processed", "AA")
    await oru_sqlite.create_tenant("other", addons=["hl7_fhir"])
    hidden = await oru_sqlite.client.get(
        f"/med/hl7/messages/{message_id}", headers=oru_sqlite.auth("other")
    )
    assert hidden.status_code == 404


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    from novaza_gateway.config import Settings
    from novaza_gateway.hl7.outbox import backoff

    config = Settings(hl7_outbox_backoff_seconds=2, hl7_outbox_backoff_max_seconds=60).hl7
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)]:
        delays = [backoff(attempt, config) for _ in range(200)]
        assert all(2 <= d <= ceiling for d in delays), attempt
        if ceiling > 2:
            assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed delay
