"""MWL identifiers <-> worklist filters and answers: the pure half of the SCP."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from pydicom.dataset import Dataset

from novaza_gateway.imaging import mwl
from novaza_gateway.imaging.worklist import PatientRef, WorklistEntry

UTC_ZONE = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def identifier(**step: object) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    sps = Dataset()
    for key, value in step.items():
        setattr(sps, key, value)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "clock", "zone", "expected"),
    [
        ("20260301", None, UTC_ZONE, (at(2026, 3, 1), at(2026, 3, 2))),
        ("20260301-20260303", None, UTC_ZONE, (at(2026, 3, 1), at(2026, 3, 4))),
        ("20260301-", None, UTC_ZONE, (at(2026, 3, 1), None)),
        ("-20260301", None, UTC_ZONE, (None, at(2026, 3, 2))),
        ("20260301", "10", UTC_ZONE, (at(2026, 3, 1, 10), at(2026, 3, 1, 11))),
        ("20260301", "1030", UTC_ZONE, (at(2026, 3, 1, 10, 30), at(2026, 3, 1, 10, 31))),
        ("20260301", "0800-1200", UTC_ZONE, (at(2026, 3, 1, 8), at(2026, 3, 1, 12, 1))),
        ("20260301-20260302", "0800-", UTC_ZONE, (at(2026, 3, 1, 8), at(2026, 3, 3))),
        # Paris: UTC+1 in winter, UTC+2 from 2026-03-29 (the local day is 23 hours long)
        ("20260301", None, PARIS, (at(2026, 2, 28, 23), at(2026, 3, 1, 23))),
        ("20260329", None, PARIS, (at(2026, 3, 28, 23), at(2026, 3, 29, 22))),
        (None, "0800", UTC_ZONE, (None, None)),  # a time alone is not matched on
    ],
)
def test_start_date_and_time_as_a_utc_window(
    day: str | None,
    clock: str | None,
    zone: ZoneInfo,
    expected: tuple[datetime | None, datetime | None],
) -> None:
    assert mwl.window(day, clock, zone) == expected


@pytest.mark.parametrize("day", ["2026-03-01", "20260231", "2026030", "x"])
def test_malformed_dates_cannot_be_matched(day: str) -> None:
    with pytest.raises(mwl.MwlQueryError):
        mwl.parse(identifier(ScheduledProcedureStepStartDate=day), UTC_ZONE)


def test_parse_maps_keys_statuses_and_universal_values() -> None:
    ds = identifier(
        Modality="CT",
        ScheduledStationAETitle="*",
        ScheduledProcedureStepStatus="STARTED",
    )
    ds.PatientName = "DOE^J*"
    ds.PatientID = "100234"
    ds.IssuerOfPatientID = "STMARYS"
    ds.AccessionNumber = ""
    wanted = mwl.parse(ds, UTC_ZONE)
    assert wanted.modality == "CT"
    assert wanted.station_ae_title is None  # a lone '*' is universal matching
    assert wanted.statuses == ("in_progress",)
    assert (wanted.patient_id, wanted.issuer, wanted.patient_name) == (
        "100234",
        "STMARYS",
        "DOE^J*",
    )
    assert wanted.accession_number is None
    default = mwl.parse(Dataset(), UTC_ZONE)
    assert default.statuses == ("scheduled", "in_progress")
    unknown = mwl.parse(identifier(ScheduledProcedureStepStatus="BOGUS"), UTC_ZONE)
    assert unknown.statuses == ()  # matches nothing
    listed = identifier(Modality=["CT", "MR"])
    with pytest.raises(mwl.MwlQueryError):
        mwl.parse(listed, UTC_ZONE)


def entry() -> WorklistEntry:
    return WorklistEntry(
        id="0" * 32,
        accession_number="ACC1",
        study_instance_uid="2.25.1",
        status="in_progress",
        placer_order_number="P1",
        filler_order_number="F1",
        requested_procedure_id="RP1",
        requested_procedure_code="CT-HEAD",
        requested_procedure_scheme="LOCAL",
        requested_procedure_description="CT head \\ neck " + "x" * 80,
        scheduled_procedure_step_id="SPS1",
        modality="CT",
        station_ae_title="CT1",
        scheduled_start=at(2026, 7, 1, 22, 30),
        description="CT head",
        reason="",
        ordering_provider="",
        patient=PatientRef(
            id="p" * 32,
            identifier="MRN1",
            issuer="HOSP",
            family_name="Müller",
            given_name="José",
            middle_name="",
            birth_date=date(1970, 1, 2),
            sex="U",
        ),
    )


def test_answer_holds_the_requested_keys_in_local_time() -> None:
    request = identifier(
        ScheduledProcedureStepStartDate="",
        ScheduledProcedureStepStartTime="",
        ScheduledProcedureStepStatus="",
    )
    request.RequestedProcedureDescription = ""
    request.PatientSex = ""
    answer = mwl.answer(entry(), request, PARIS)
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert (str(answer.PatientName), answer.PatientID) == ("Müller^José", "MRN1")
    assert answer.PatientSex == ""  # HL7 'U' has no DICOM code
    description = answer.RequestedProcedureDescription
    assert len(description) == 64 and "\\" not in description  # an LO value
    step = answer.ScheduledProcedureStepSequence[0]
    # 22:30 UTC on July 1 is 00:30 on July 2 in Paris (UTC+2)
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20260702",
        "003000",
    )
    assert step.ScheduledProcedureStepStatus == "STARTED"
    assert "Modality" not in step and "AccessionNumber" not in answer  # not asked for
    encoded = answer.copy()
    encoded.is_little_endian, encoded.is_implicit_VR = True, True
    assert "Müller" in str(encoded.PatientName)
