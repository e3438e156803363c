"""STOW-RS (PS3.18 section 10.5): what one stored file is, and the store response.

``inspect`` reads a staged file's header (pixel data is not loaded: large values are
deferred) into an ``InstanceInfo``: the keys, the attributes the index matches on, the
DICOM JSON of each level's tags and, for native pixel data, where the frames sit in the file.
Blocking (pydicom): the service runs it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from novaza_gateway.imaging.dicomweb.attributes import (
    INSTANCE_TAGS,
    PATIENT_TAGS,
    RETRIEVE_URL,
    SERIES_TAGS,
    STUDY_TAGS,
    JsonDataset,
    key,
    normalize_name,
    normalize_time,
    tags,
    valid_uid,
)

# Failure reasons (PS3.4 Annex B / PS3.18 Table 10.5.3-1).
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
PIXEL_DATA = Tag(0x7FE00010)
DEFER_BYTES = 1024
(REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE, REF_SOP_CLASS, REF_SOP_INSTANCE, FAILURE_REASON) = (
    tags(
        "ReferencedSOPSequence",
        "FailedSOPSequence",
        "ReferencedSOPClassUID",
        "ReferencedSOPInstanceUID",
        "FailureReason",
    )
)


class Unstorable(Exception):
    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class InstanceInfo:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int = 1
    pixel_offset: int | None = None
    pixel_length: int | None = None
    frame_bytes: int | None = None
    study_attributes: JsonDataset = field(default_factory=dict)
    series_attributes: JsonDataset = field(default_factory=dict)
    instance_attributes: JsonDataset = field(default_factory=dict)

    @property
    def patient_name_norm(self) -> str:
        return normalize_name(self.patient_name)

    @property
    def referring_physician_norm(self) -> str:
        return normalize_name(self.referring_physician)


def inspect(path: Path) -> InstanceInfo:
    try:
        ds = dcmread(path, defer_size=DEFER_BYTES)
    except (InvalidDicomError, EOFError, ValueError, TypeError, OSError, KeyError) as exc:
        raise Unstorable(
            CANNOT_UNDERSTAND, f"not a DICOM PS3.10 file ({type(exc).__name__})"
        ) from None
    try:
        return _describe(ds)
    except Unstorable:
        raise
    except Exception as exc:  # a malformed element deep in the header
        raise Unstorable(
            CANNOT_UNDERSTAND, f"unreadable DICOM header ({type(exc).__name__})"
        ) from None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _describe(ds: Dataset) -> InstanceInfo:
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    info = InstanceInfo(
        sop_class_uid=_text(ds, "SOPClassUID") or str(getattr(meta, "MediaStorageSOPClassUID", "")),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=ts,
    )
    for name, value in (
        ("SOPInstanceUID", info.sop_instance_uid),
        ("SOPClassUID", info.sop_class_uid),
        ("StudyInstanceUID", info.study_uid),
        ("SeriesInstanceUID", info.series_uid),
        ("TransferSyntaxUID", ts),
    ):
        if not valid_uid(value):
            raise Unstorable(CANNOT_UNDERSTAND, f"{name} missing or not a valid UID")
    info.patient_id = _text(ds, "PatientID")
    info.patient_name = _text(ds, "PatientName")
    info.birth_date = _text(ds, "PatientBirthDate")[:8]
    info.sex = _text(ds, "PatientSex")[:16]
    info.study_date = _text(ds, "StudyDate")[:8]
    try:
        info.study_time = normalize_time(_text(ds, "StudyTime")) if ds.get("StudyTime") else ""
    except ValueError:
        info.study_time = ""
    info.accession_number = _text(ds, "AccessionNumber")[:64]
    info.study_id = _text(ds, "StudyID")[:16]
    info.study_description = _text(ds, "StudyDescription")[:128]
    info.referring_physician = _text(ds, "ReferringPhysicianName")
    info.modality = _text(ds, "Modality")[:16]
    info.series_number = _int(ds, "SeriesNumber")
    info.series_description = _text(ds, "SeriesDescription")[:128]
    info.instance_number = _int(ds, "InstanceNumber")
    info.rows, info.columns = _int(ds, "Rows"), _int(ds, "Columns")
    info.number_of_frames = _int(ds, "NumberOfFrames") or 1
    _locate_pixels(ds, info)
    info.study_attributes = subset_json(ds, PATIENT_TAGS + STUDY_TAGS)
    info.series_attributes = subset_json(ds, SERIES_TAGS)
    info.instance_attributes = subset_json(ds, INSTANCE_TAGS)
    return info


def _locate_pixels(ds: Dataset, info: InstanceInfo) -> None:
    """For native little-endian pixel data: the value's file offset and each frame's size."""
    raw = ds._dict.get(PIXEL_DATA)
    if not isinstance(raw, RawDataElement) or info.transfer_syntax_uid not in NATIVE_LITTLE_ENDIAN:
        return
    if raw.length in (None, 0xFFFFFFFF) or raw.value_tell is None:
        return
    bits, samples = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel") or 1
    if not (info.rows and info.columns and bits) or bits % 8:
        return
    frame = info.rows * info.columns * samples * bits // 8
    if frame * info.number_of_frames > raw.length:
        return
    info.pixel_offset, info.pixel_length, info.frame_bytes = raw.value_tell, raw.length, frame


def subset_json(ds: Dataset, wanted: tuple[int, ...]) -> JsonDataset:
    sub = Dataset()
    for tag in wanted:
        if tag in ds:
            sub[tag] = ds[tag]
    try:
        result: JsonDataset = sub.to_json_dict(bulk_data_threshold=DEFER_BYTES)
        return result
    except Exception:  # an unencodable value: keep what can be said per element
        kept: JsonDataset = {}
        for tag in wanted:
            if tag in ds:
                one = Dataset()
                one[tag] = ds[tag]
                try:
                    kept.update(one.to_json_dict(bulk_data_threshold=DEFER_BYTES))
                except Exception:  # noqa: S112 - an element pydicom cannot encode is left out
                    continue
        return kept


# ------------------------------------------------------------------------- the response


@dataclass(frozen=True, slots=True)
class Stored:
    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str


@dataclass(frozen=True, slots=True)
class Failed:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int


def response_json(study_url: str | None, stored: list[Stored], failed: list[Failed]) -> JsonDataset:
    """The Store Instances Response Module as DICOM JSON."""
    body: JsonDataset = {}
    if study_url:
        body[key(RETRIEVE_URL)] = {"vr": "UR", "Value": [study_url]}
    if failed:
        body[key(FAILED_SOP_SEQUENCE)] = {
            "vr": "SQ",
            "Value": [
                {
                    key(REF_SOP_CLASS): _ui(f.sop_class_uid),
                    key(REF_SOP_INSTANCE): _ui(f.sop_instance_uid),
                    key(FAILURE_REASON): {"vr": "US", "Value": [f.reason]},
                }
                for f in failed
            ],
        }
    body[key(REFERENCED_SOP_SEQUENCE)] = {
        "vr": "SQ",
        "Value": [
            {
                key(REF_SOP_CLASS): _ui(s.sop_class_uid),
                key(REF_SOP_INSTANCE): _ui(s.sop_instance_uid),
                key(RETRIEVE_URL): {"vr": "UR", "Value": [s.retrieve_url]},
            }
            for s in stored
        ],
    }
    return body


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def status_for(stored: int, failed: int) -> int:
    """200 all stored, 202 some failed, 409 none stored (PS3.18 Table 10.5.3-1)."""
    if failed == 0:
        return 200
    return 202 if stored else 409
