"""DICOM attributes by query/retrieve level, the QIDO defaults, and value normalization.

Pure: no I/O. The index stores, per level, the DICOM JSON of that level's tags; QIDO answers
from it. Tags are ``int`` (``0x00100010``) and DICOM JSON keys are 8 upper-case hex digits.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

JsonDataset = dict[str, Any]


def tags(*keywords: str) -> tuple[int, ...]:
    found = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(keyword)
        found.append(int(tag))
    return tuple(found)


def key(tag: int) -> str:
    return f"{tag:08X}"


PATIENT_TAGS = tags(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "EthnicGroup",
    "PatientComments",
)
STUDY_TAGS = tags(
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
    "TimezoneOffsetFromUTC",
    "ProcedureCodeSequence",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
SERIES_TAGS = tags(
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "ProtocolName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "StationName",
    "Manufacturer",
    "ManufacturerModelName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
INSTANCE_TAGS = tags(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ImageType",
    "ContentDate",
    "ContentTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "PixelSpacing",
    "SliceThickness",
    "SliceLocation",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "WindowCenter",
    "WindowWidth",
)

(
    STUDY_UID,
    SERIES_UID,
    SOP_INSTANCE_UID,
    SOP_CLASS_UID,
    RETRIEVE_URL,
    MODALITIES_IN_STUDY,
    STUDY_SERIES_COUNT,
    STUDY_INSTANCE_COUNT,
    SERIES_INSTANCE_COUNT,
    INSTANCE_AVAILABILITY,
) = tags(
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "RetrieveURL",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "InstanceAvailability",
)

# PS3.18 Table 6.7.1-2: what a search returns without includefield.
STUDY_DEFAULTS = tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_DEFAULTS = tags(
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "StudyInstanceUID",
)
INSTANCE_DEFAULTS = tags(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def normalize_name(value: str) -> str:
    """Case- and accent-insensitive form of a person name: 'Müller^José' -> 'MULLER JOSE'."""
    text = unicodedata.normalize("NFKD", value)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("^", " ").replace("=", " ")
    return " ".join(text.upper().split())


def normalize_time(value: str, *, upper: bool = False) -> str:
    """DICOM TM as a sortable 'HHMMSS.ffffff'; missing parts are 0, or their maximum for the
    upper end of a range ('10' -> '105959.999999')."""
    raw = value.strip().replace(":", "")
    whole, _, fraction = raw.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        raise ValueError(f"not a DICOM time: {value!r}")
    filler = "5959" if upper else "0000"
    whole = whole + filler[len(whole) - 2 :] if len(whole) < 6 else whole
    if fraction:
        fraction = fraction[:6].ljust(6, "9" if upper else "0")
    else:
        fraction = "999999" if upper else "000000"
    return f"{whole}.{fraction}"


def person_name(element_json: dict[str, Any] | None) -> str:
    """The Alphabetic group of a PN in DICOM JSON ('' when absent)."""
    if not element_json:
        return ""
    values = element_json.get("Value") or []
    if not values or not isinstance(values[0], dict):
        return ""
    return str(values[0].get("Alphabetic", ""))


def first_value(dataset: JsonDataset, tag: int) -> Any:
    values = (dataset.get(key(tag)) or {}).get("Value") or []
    return values[0] if values else None


def element(tag: int, values: list[Any]) -> dict[str, Any]:
    vr = "UR" if tag == RETRIEVE_URL else dictionary_VR(tag)
    return {"vr": vr, "Value": values} if values else {"vr": vr}
