"""The DICOM MWL SCP over TCP: dcmtk's findscu and pynetdicom as modalities, on SQLite and
PostgreSQL. The same filter gives the same items as GET /med/imaging/worklist."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from novaza_gateway.imaging.mwl_scp import MWL_FIND, VERIFICATION
from tests.conftest import Gateway, gateway_settings, need_tool, start_gateway
from tests.imaging.workflow import audit_events, hl7, schedule, workflow_tenant

MODALITY = "CT_ROOM_1"
WORKLIST = "/med/imaging/worklist"
RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
)
STEP_KEYS = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)


@pytest.fixture
async def mwl(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    """A gateway with the MWL SCP on a free port; settings refresh within 0.2 s."""
    settings = gateway_settings(tmp_path / "data", db_url, mwl_port=0, tenant_cache_ttl_seconds=0.2)
    async for gw in start_gateway(settings):
        yield gw


SETTLE = 0.3  # the SCP reads tenant settings at most every 0.2 s (the fixture's TTL)


async def configured(gw: Gateway, slug: str = "stmarys", **kwargs: Any) -> dict[str, str]:
    """A workflow tenant with its orders, once the SCP has seen its settings."""
    auth = await workflow_tenant(gw, slug, **kwargs)
    await schedule(gw, auth)
    await asyncio.sleep(SETTLE)
    return auth


def port(gw: Gateway) -> int:
    server = gw.app.state.mwl
    assert server is not None and server.port
    return int(server.port)


def query(**matching: str) -> Dataset:
    """A worklist identifier: the return keys, with ``matching`` values (SPS keys go into
    the Scheduled Procedure Step Sequence)."""
    ds = Dataset()
    for key in RETURN_KEYS:
        setattr(ds, key, matching.get(key, ""))
    step = Dataset()
    for key in STEP_KEYS:
        setattr(step, key, matching.get(key, ""))
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def pynetdicom_find(
    mwl_port: int, identifier: Dataset, calling: str = MODALITY
) -> tuple[list[Dataset], list[int]]:
    """C-FIND as a modality would: answers and every status received."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(MWL_FIND)
    assoc = ae.associate("127.0.0.1", mwl_port, ae_title="NOVAZA_MWL")
    assert assoc.is_established, "association not established"
    found: list[Dataset] = []
    statuses: list[int] = []
    try:
        for status, answer in assoc.send_c_find(identifier, MWL_FIND):
            statuses.append(int(status.Status))
            if answer is not None and int(status.Status) in (0xFF00, 0xFF01):
                found.append(answer)
    finally:
        assoc.release()
    return found, statuses


async def find(gw: Gateway, identifier: Dataset, calling: str = MODALITY) -> list[Dataset]:
    answers, statuses = await asyncio.to_thread(pynetdicom_find, port(gw), identifier, calling)
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    return answers


async def rest(gw: Gateway, auth: dict[str, str], **params: Any) -> list[str]:
    response = await gw.client.get(WORKLIST, params=params, headers=auth)
    assert response.status_code == 200, response.text
    return [item["accessionNumber"] for item in response.json()["data"]]


def accessions(answers: Sequence[Dataset]) -> list[str]:
    return [str(a.AccessionNumber) for a in answers]


async def test_findscu_gets_what_the_rest_worklist_lists(mwl: Gateway, tmp_path: Path) -> None:
    findscu = need_tool("findscu")
    auth = await configured(mwl, ae_titles=(MODALITY,), timeZone="America/New_York")
    out = tmp_path / "rsp"
    out.mkdir()
    keys = [
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepSequence[0].Modality=CT",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    ]
    args = [findscu, "-W", "-X", "-od", str(out), "-aet", MODALITY, "-aec", "NOVAZA_MWL"]
    for key in keys:
        args += ["-k", key]
    process = await asyncio.create_subprocess_exec(
        *args,
        "127.0.0.1",
        str(port(mwl)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert accessions(answers) == await rest(mwl, auth, modality="CT") == ["ACC7001"]
    (ct,) = answers
    listed = (await mwl.client.get(WORKLIST, params={"modality": "CT"}, headers=auth)).json()
    item = listed["data"][0]
    assert str(ct.PatientName) == item["patient"]["name"] == "O'Brien^Margaret^Ann"
    assert ct.PatientID == item["patient"]["patientID"] == "100234"
    assert ct.StudyInstanceUID == item["studyInstanceUID"]
    assert ct.RequestedProcedureDescription == "CT chest with contrast"
    step = ct.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle) == ("CT", "CT_SCANNER_1")
    assert step.ScheduledProcedureStepID == "SPS7001"
    # 2026-03-01T16:00Z is 11:00 in New York (EST, before the March 8 change)
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20260301",
        "110000",
    )
    assert "ReasonForTheRequestedProcedure" not in ct  # only the requested keys come back
    (event,) = [e for e in await audit_events(mwl, "imaging.worklist") if e.actor != "user-1"]
    assert event.actor == f"mwl:{MODALITY}"
    assert event.tenant_id == mwl.tenants["stmarys"]["id"]
    assert event.after == {"channel": "mwl", "results": 1, "accessionNumbers": ["ACC7001"]}
    assert event.request_id and event.request_id.startswith("mwl-")


async def test_unknown_calling_ae_is_rejected(mwl: Gateway, tmp_path: Path) -> None:
    findscu = need_tool("findscu")
    await configured(mwl, ae_titles=(MODALITY,))
    process = await asyncio.create_subprocess_exec(
        findscu,
        "-W",
        "-aet",
        "STRANGER",
        "-k",
        "PatientName",
        "127.0.0.1",
        str(port(mwl)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0
    assert b"Association Rejected" in output, output.decode()
    assert b"Calling AE Title Not Recognized" in output, output.decode()

    def associate(calling: str) -> tuple[bool, int | None, int | None, int | None]:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MWL_FIND)
        assoc = ae.associate("127.0.0.1", port(mwl))
        if assoc.is_established:
            assoc.release()
            return (False, 0, 0, 0)
        answer = assoc.acceptor.primitive  # the A-ASSOCIATE-RJ
        assert answer is not None
        return (assoc.is_rejected, answer.result, answer.result_source, answer.diagnostic)

    assert await asyncio.to_thread(associate, "STRANGER") == (True, 1, 1, 3)
    assert (await asyncio.to_thread(associate, MODALITY))[0] is False
    assert [e.actor for e in await audit_events(mwl, "imaging.worklist")] == []


async def test_filters_match_the_rest_worklist(mwl: Gateway) -> None:
    auth = await configured(mwl, ae_titles=(MODALITY,), timeZone="America/New_York")
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),
        ({"Modality": "MR"}, {"modality": "MR"}),
        ({"Modality": "M*"}, {"modality": "M*"}),
        ({"ScheduledStationAETitle": "RAD_DEFAULT"}, {"stationAETitle": "RAD_DEFAULT"}),
        ({"PatientID": "100234"}, {"patientID": "100234"}),
        ({"PatientID": "200500", "IssuerOfPatientID": "STMARYS"}, {"patientID": "200500"}),
        ({"PatientName": "O'B*"}, {"patientName": "O'B*"}),
        ({"AccessionNumber": "ACC8001"}, {"accessionNumber": "ACC8001"}),
        (
            {"StudyInstanceUID": "1.2.840.113619.2.55.3.9001"},
            {"studyInstanceUID": "1.2.840.113619.2.55.3.9001"},
        ),
        # local days in New York: 03-01 is 05:00Z..05:00Z (03-02 08:00Z is 03:00 local)
        (
            {"ScheduledProcedureStepStartDate": "20260301"},
            {"scheduledFrom": "2026-03-01T05:00:00Z", "scheduledTo": "2026-03-02T05:00:00Z"},
        ),
        (
            {"ScheduledProcedureStepStartDate": "20260302-20260311"},
            {"scheduledFrom": "2026-03-02T05:00:00Z", "scheduledTo": "2026-03-12T04:00:00Z"},
        ),
        (
            {"ScheduledProcedureStepStartDate": "20260311-"},
            {"scheduledFrom": "2026-03-11T04:00:00Z"},
        ),
        (
            {
                "ScheduledProcedureStepStartDate": "20260311",
                "ScheduledProcedureStepStartTime": "05-06",
            },
            {"scheduledFrom": "2026-03-11T09:00:00Z", "scheduledTo": "2026-03-11T11:00:00Z"},
        ),
        ({"ScheduledProcedureStepStatus": "COMPLETED"}, {"status": "completed"}),
    ]
    for matching, params in cases:
        over_dicom = accessions(await find(mwl, query(**matching)))
        assert over_dicom == await rest(mwl, auth, **params), (matching, over_dicom)
    expected = {
        "": ["ACC7001", "ACC7002", "ACC8001", "ACC9001"],
        "20260301": ["ACC7001"],
        "20260311-": ["ACC8001", "ACC9001"],
    }
    for day, wanted in expected.items():
        answers = await find(mwl, query(ScheduledProcedureStepStartDate=day))
        assert accessions(answers) == wanted, day


async def test_answers_carry_the_worklist_values(mwl: Gateway) -> None:
    await configured(mwl, ae_titles=(MODALITY,))
    identifier = query(AccessionNumber="ACC9001")
    identifier.ReasonForTheRequestedProcedure = ""
    identifier.RequestedProcedureCodeSequence = []  # empty: the whole sequence
    identifier.add_new(0x00211010, "LO", None)  # a key the gateway does not know
    (mg,) = await find(mwl, identifier)
    assert mg.SpecificCharacterSet == "ISO_IR 192"
    assert (mg.PatientName, mg.PatientID, mg.IssuerOfPatientID) == (
        "O'Brien^Margaret^Ann",
        "100234",
        "STMARYS",
    )
    assert (mg.PatientBirthDate, mg.PatientSex) == ("19580412", "F")
    assert mg.StudyInstanceUID == "1.2.840.113619.2.55.3.9001"
    assert mg.RequestedProcedureID == "RP9001"
    (code,) = mg.RequestedProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("MG-SCREEN", "STMARYSPROC")
    step = mg.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle) == ("MG", "RAD_DEFAULT")
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20260313",
        "074500",
    )  # UTC: the tenant sets no time zone
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert step.ScheduledProcedureStepID == "SPS9001"
    assert mg[0x00211010].value in (None, "")


async def test_each_ae_sees_its_own_tenant(mwl: Gateway) -> None:
    theirs = await workflow_tenant(mwl, "riverside", ae_titles=("RV_CR_1", "SHARED"))
    await configured(mwl, "stmarys", ae_titles=(MODALITY, "SHARED"))
    assert accessions(await find(mwl, query(), "RV_CR_1")) == []
    assert accessions(await find(mwl, query(PatientID="100234"), "RV_CR_1")) == []
    await hl7(mwl, theirs, "orm", "orm_o01_nw_v251_epic.hl7")  # same accession, other tenant
    (theirs_ct,) = await find(mwl, query(), "RV_CR_1")
    mine_ct = [a for a in await find(mwl, query()) if a.AccessionNumber == "ACC7001"]
    assert theirs_ct.StudyInstanceUID != mine_ct[0].StudyInstanceUID

    def rejected(calling: str) -> bool:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MWL_FIND)
        assoc = ae.associate("127.0.0.1", port(mwl))
        if assoc.is_established:
            assoc.release()
        return bool(assoc.is_rejected)

    assert await asyncio.to_thread(rejected, "SHARED")  # two tenants claim it: nobody gets it
    # a suspended tenant's modalities are turned away within the settings TTL
    suspended = await mwl.client.post("/admin/tenants/riverside/suspend", headers=mwl.admin())
    assert suspended.status_code == 200, suspended.text
    await asyncio.sleep(0.5)
    assert await asyncio.to_thread(rejected, "RV_CR_1")
    assert not await asyncio.to_thread(rejected, MODALITY)


async def test_echo_malformed_query_and_shutdown(tmp_path: Path, sqlite_url: str) -> None:
    settings = gateway_settings(tmp_path / "data", sqlite_url, mwl_port=0)
    async for gw in start_gateway(settings):
        await workflow_tenant(gw, ae_titles=(MODALITY,))
        await asyncio.sleep(2.2)  # the default settings TTL (2 s)
        mwl_port = port(gw)
        ready = await gw.client.get("/health/ready")
        assert ready.json()["checks"]["mwl"]["status"] == "ok", ready.text

        def echo(mwl_port: int = mwl_port) -> int:
            ae = AE(ae_title=MODALITY)
            ae.add_requested_context(VERIFICATION)
            assoc = ae.associate("127.0.0.1", mwl_port)
            status = assoc.send_c_echo()
            assoc.release()
            return int(status.Status)

        assert await asyncio.to_thread(echo) == 0
        bad = query(ScheduledProcedureStepStartDate="2026-03-01")
        _, statuses = await asyncio.to_thread(pynetdicom_find, mwl_port, bad)
        assert statuses == [0xA900]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", mwl_port), timeout=2):
        pass


async def test_off_without_a_port(gw: Gateway) -> None:
    assert gw.app.state.mwl is None
