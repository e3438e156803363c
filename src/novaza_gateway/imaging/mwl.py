"""DICOM Modality Worklist (PS3.4 Annex K) C-FIND identifiers <-> the worklist. Pure.

``parse()`` turns a request identifier into the ``WorklistFilter`` the REST worklist uses
too; ``answer()`` turns one worklist entry into the response identifier, holding the keys
the request asked for (with values where the gateway has them, empty otherwise).

Matching keys: Patient ID (+ Issuer of Patient ID), Patient's Name, Accession Number,
Study Instance UID, and in the Scheduled Procedure Step Sequence: Modality, Scheduled
Station AE Title, Scheduled Procedure Step Start Date (+ Time: a single value or a range,
combined as one datetime range), Scheduled Procedure Step Status. Wildcards ``*``/``?``
as in the REST worklist; an empty value or a lone ``*`` matches anything. Other keys are
return keys. Dates and times are the tenant's local time (``imaging.timeZone``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from novaza_gateway.imaging.worklist import OPEN, WorklistEntry, WorklistFilter

CHARSET = "ISO_IR 192"  # UTF-8: names as HL7 delivered them
SPS = "ScheduledProcedureStepSequence"
# DICOM Scheduled Procedure Step Status (0040,0020) <-> worklist item status
STATUS_OUT = {
    "scheduled": "SCHEDULED",
    "in_progress": "STARTED",
    "completed": "COMPLETED",
    "canceled": "CANCELED",
    "discontinued": "DISCONTINUED",
}
STATUS_IN = {
    **{dicom: (ours,) for ours, dicom in STATUS_OUT.items()},
    "ARRIVED": ("scheduled",),
    "READY": ("scheduled",),
}
SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O"}
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")


class MwlQueryError(ValueError):
    """The identifier cannot be matched (malformed date, several values where one goes)."""


# ----------------------------------------------------------------------------- request


def parse(identifier: Dataset, zone: ZoneInfo) -> WorklistFilter:
    step = _step(identifier)
    status = _value(step, "ScheduledProcedureStepStatus")
    statuses = OPEN
    if status is not None:
        statuses = STATUS_IN.get(status.upper(), ())
    start_from, start_to = window(
        _value(step, "ScheduledProcedureStepStartDate"),
        _value(step, "ScheduledProcedureStepStartTime"),
        zone,
    )
    patient_id = _value(identifier, "PatientID")
    return WorklistFilter(
        statuses=statuses,
        modality=_value(step, "Modality"),
        station_ae_title=_value(step, "ScheduledStationAETitle"),
        start_from=start_from,
        start_to=start_to,
        accession_number=_value(identifier, "AccessionNumber"),
        study_instance_uid=_value(identifier, "StudyInstanceUID"),
        patient_id=patient_id,
        issuer=_value(identifier, "IssuerOfPatientID") if patient_id else None,
        patient_name=_value(identifier, "PatientName"),
    )


def _step(identifier: Dataset) -> Dataset:
    sequence = identifier.get(Tag(SPS))  # by tag: the element, not its value
    if sequence is None or not sequence.value:
        return Dataset()
    if len(sequence.value) > 1:
        raise MwlQueryError("one Scheduled Procedure Step item is matched on")
    item: Dataset = sequence.value[0]
    return item


def _value(dataset: Dataset, keyword: str) -> str | None:
    """The matching value of a key; None for universal matching (absent, empty, ``*``)."""
    element = dataset.get(Tag(keyword))  # by tag: the element, not its value
    if element is None or element.value is None:
        return None
    value = element.value
    if isinstance(value, MultiValue):
        if len(value) > 1:
            raise MwlQueryError(f"{keyword}: list matching is not supported")
        value = value[0] if value else ""
    text = str(value).strip()
    return None if text in ("", "*") else text


def window(
    day: str | None, clock: str | None, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """Start Date (+ Time) as a UTC range [from, to): ``20260301``, ``20260301-20260305``,
    ``20260301-``, ``-20260305``; a time (``0800``, ``0800-1200``) narrows the first and
    last day. A time without a date is not matched on (it would be a window on every day)."""
    if day is None:
        return None, None
    first, last = _dates(day)
    early, late = _times(clock) if clock else (timedelta(), timedelta(days=1))
    start = datetime.combine(first, time(), zone) + early if first else None
    end = datetime.combine(last, time(), zone) + late if last else None
    return (
        start.astimezone(UTC) if start else None,
        end.astimezone(UTC) if end else None,
    )


def _dates(text: str) -> tuple[date | None, date | None]:
    low, dash, high = text.partition("-")
    if not dash:
        single = _date(text)
        return single, single
    return (_date(low) if low else None, _date(high) if high else None)


def _date(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise MwlQueryError("ScheduledProcedureStepStartDate: not a DICOM date (YYYYMMDD)")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise MwlQueryError("ScheduledProcedureStepStartDate: no such date") from None


def _times(text: str) -> tuple[timedelta, timedelta]:
    """A time or time range as offsets from midnight: [start, end)."""
    low, dash, high = text.partition("-")
    if not dash:
        return _time(text)
    return (
        _time(low)[0] if low else timedelta(),
        _time(high)[1] if high else timedelta(days=1),
    )


def _time(text: str) -> tuple[timedelta, timedelta]:
    """``HH[MM[SS[.F]]]``: the span the value covers at its precision (``10`` is 10:00 to
    11:00)."""
    match = _TIME.fullmatch(text.replace(":", ""))
    if match is None:
        raise MwlQueryError("ScheduledProcedureStepStartTime: not a DICOM time (HHMMSS)")
    hours, minutes, seconds, _ = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise MwlQueryError("ScheduledProcedureStepStartTime: no such time")
    start = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
    if seconds is not None:
        return start, start + timedelta(seconds=1)
    if minutes is not None:
        return start, start + timedelta(minutes=1)
    return start, start + timedelta(hours=1)


# ----------------------------------------------------------------------------- response


def answer(entry: WorklistEntry, identifier: Dataset, zone: ZoneInfo) -> Dataset:
    """The response identifier: the requested keys, valued from ``entry``."""
    found = project(complete(entry, zone), identifier)
    found.SpecificCharacterSet = CHARSET
    return found


def complete(entry: WorklistEntry, zone: ZoneInfo) -> Dataset:
    """Every attribute the gateway knows of an entry."""
    patient = entry.patient
    ds = Dataset()
    ds.SpecificCharacterSet = CHARSET
    ds.AccessionNumber = entry.accession_number
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.identifier
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ds.PatientSex = SEX.get(patient.sex.upper(), "")
    ds.StudyInstanceUID = entry.study_instance_uid
    ds.RequestedProcedureID = entry.requested_procedure_id
    ds.RequestedProcedureDescription = _lo(entry.requested_procedure_description)
    code = Dataset()
    code.CodeValue = entry.requested_procedure_code
    code.CodingSchemeDesignator = entry.requested_procedure_scheme
    code.CodeMeaning = _lo(entry.requested_procedure_description)
    ds.RequestedProcedureCodeSequence = [code] if entry.requested_procedure_code else []
    ds.ReasonForTheRequestedProcedure = _lo(entry.reason)
    ds.PlacerOrderNumberImagingServiceRequest = _lo(entry.placer_order_number)
    ds.FillerOrderNumberImagingServiceRequest = _lo(entry.filler_order_number)
    step = Dataset()
    step.Modality = entry.modality
    step.ScheduledStationAETitle = entry.station_ae_title
    local = entry.scheduled_start.astimezone(zone) if entry.scheduled_start else None
    step.ScheduledProcedureStepStartDate = local.strftime("%Y%m%d") if local else ""
    step.ScheduledProcedureStepStartTime = local.strftime("%H%M%S") if local else ""
    step.ScheduledProcedureStepDescription = _lo(entry.description)
    step.ScheduledProcedureStepID = entry.scheduled_procedure_step_id
    step.ScheduledProcedureStepStatus = STATUS_OUT.get(entry.status, "")
    step.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def project(known: Dataset, request: Dataset) -> Dataset:
    """The keys of ``request`` (nested sequences too) with ``known``'s values; a key the
    gateway does not know is returned empty. An empty sequence in the request asks for
    the whole sequence."""
    out = Dataset()
    for element in request:
        tag = Tag(element.tag)
        if tag.element == 0 or tag == Tag(0x0008, 0x0005):  # group lengths; charset set later
            continue
        value = known.get(tag)
        if element.VR == "SQ":
            template = element.value[0] if element.value else None
            items = list(value.value) if value is not None and value.VR == "SQ" else []
            shaped = [project(i, template) if template else i for i in items]
            out.add_new(tag, "SQ", shaped)
        elif value is not None:
            out.add(value)
        else:
            out.add_new(tag, element.VR, None)
    return out


def _lo(text: str) -> str:
    """An LO value: at most 64 characters, no backslash (the value separator)."""
    return text.replace("\\", "/")[:64]
