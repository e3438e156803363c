"""Shared parameter types: DICOM UIDs, bounded integers, representable instants (ADR 0008).

Each class of input is bounded once, here, and routes declare it by type, so a value the
stores cannot hold (a 4,001-character UID for a ``varchar(64)``, an offset past 2^63 for a
``bigint``, an instant that overflows when moved to UTC) is refused as a 4xx before any query
instead of failing inside the database driver as a 500. Control characters are refused even
earlier, for every parameter, by the front door (``core.controlchars``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from novaza_gateway.core.errors import InvalidUid, ValidationFailed

# ---------------------------------------------------------------------------- DICOM UIDs
# PS3.5 9.1: components of digits separated by dots, 64 characters at most. Leading zeros
# within a component are not refused: archives hold real-world UIDs that carry them.
UID_MAX_LENGTH = 64
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
UID_REASON = "a DICOM UID: digits and dots, at most 64 characters (PS3.5 9.1)"


def is_dicom_uid(value: str) -> bool:
    return len(value) <= UID_MAX_LENGTH and _UID.fullmatch(value) is not None


def _dicom_uid(value: str) -> str:
    if not is_dicom_uid(value):  # the error type names the code the handler answers with
        raise PydanticCustomError(InvalidUid.code, UID_REASON)
    return value


# The schema is documentation only: checked as constraints, a bad UID would be a 422
# string_too_long before the validator could answer INVALID_UID.
_UID_SCHEMA = {"pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": UID_MAX_LENGTH}
DicomUid = Annotated[str, AfterValidator(_dicom_uid)]
UidPath = Annotated[
    DicomUid,
    Path(description="A DICOM UID (digits and dots, up to 64)", json_schema_extra=_UID_SCHEMA),
]

# ---------------------------------------------------------------------------- integers
INT32_MAX = 2**31 - 1  # DICOM IS values, frame numbers, offsets into any list we serve
INT64_MAX = 2**63 - 1  # the widest integer column (bigint, SQLite INTEGER)
_DIGITS = re.compile(r"-?[0-9]{1,19}")  # ASCII only: str.isdigit() takes '²' and '٣'


def bounded_int(
    name: str, raw: str, low: int, high: int, error: type[ValidationFailed] = ValidationFailed
) -> int:
    """A hand-parsed integer parameter (QIDO's ``offset``, ``SeriesNumber``) within
    [low, high], or 422 naming it (as the area's own ``error`` when it has one); never a
    ``ValueError`` from ``int()`` on 5,000 digits."""
    value = raw.strip()
    if _DIGITS.fullmatch(value) is None or not low <= int(value) <= high:
        raise error.field(name, f"an integer from {low} to {high}")
    return int(value)


FramePath = Annotated[int, Path(ge=1, le=INT32_MAX, description="A frame number, from 1")]
FrameListPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9]{1,10}(,[0-9]{1,10}){0,999}$",
        max_length=11_000,
        description="Comma-separated frame numbers, from 1",
    ),
]

# ---------------------------------------------------------------------------- instants
# Python holds years 1 to 9999; a day of margin at each end keeps UTC conversion and the
# arithmetic services do on a bound (a period's next hour, a day's bucket) representable.
MIN_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 30, tzinfo=UTC)
INSTANT_REASON = "a date-time from 0001-01-02T00:00:00Z to 9999-12-30T00:00:00Z"


def in_range(value: datetime) -> bool:
    try:
        utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except OverflowError:  # year 1 at +14:00, year 9999 at -14:00
        return False
    return MIN_INSTANT <= utc <= MAX_INSTANT


def _instant(value: datetime) -> datetime:
    """The instant as given (a naive value stays naive: each area says what it means)."""
    if not in_range(value):
        raise PydanticCustomError("instant_range", INSTANT_REASON)
    return value


Instant = Annotated[datetime, AfterValidator(_instant)]
