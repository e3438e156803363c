"""QIDO-RS query parameters (PS3.18 section 8.3.4) -> a typed ``QidoQuery``. Pure: no I/O.

Matching keys by keyword or tag (``PatientID`` or ``00100020``); values use DICOM matching:
single value, ``*``/``?`` wildcards, lists (``a,b`` or ``a\\b``) for UIDs and modalities,
ranges ``a-b``, ``a-``, ``-b`` for dates and times, an empty value for universal matching
(returned, not filtered). ``fuzzymatching=true`` makes person names case- and
accent-insensitive and lets a value match any name component's start. ``includefield``
takes keywords, tags or ``all``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from novaza_gateway.core.params import INT32_MAX, bounded_int
from novaza_gateway.imaging.dicomweb.attributes import normalize_name, normalize_time
from novaza_gateway.imaging.errors import InvalidQuery

Level = Literal["study", "series", "instance"]
MAX_LIMIT = 1000
RESERVED = frozenset({"limit", "offset", "fuzzymatching", "includefield", "token"})

# What each level may match on. Study-level keys work at every level (series and instance
# searches join their study); series keys at series and instance level.
STUDY_KEYS = frozenset(
    {
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
    }
)
SERIES_KEYS = frozenset({"SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"})
INSTANCE_KEYS = frozenset({"SOPInstanceUID", "SOPClassUID", "InstanceNumber"})
LIST_KEYS = frozenset(
    {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality"}
    | {"ModalitiesInStudy"}
)
NAME_KEYS = frozenset({"PatientName", "ReferringPhysicianName"})
INT_KEYS = frozenset({"SeriesNumber", "InstanceNumber"})
_DATE = re.compile(r"^\d{8}$")
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True, slots=True)
class Equals:
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Wildcard:
    pattern: str  # DICOM '*' and '?', otherwise literal


@dataclass(frozen=True, slots=True)
class Range:
    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class FuzzyName:
    value: str  # normalized; may hold '*' and '?'


Condition = Equals | Wildcard | Range | FuzzyName


@dataclass(frozen=True, slots=True)
class Criterion:
    keyword: str
    condition: Condition


@dataclass(frozen=True, slots=True)
class QidoQuery:
    level: Level
    criteria: tuple[Criterion, ...] = ()
    include_all: bool = False
    include: frozenset[int] = field(default_factory=frozenset)  # named + matched tags
    fuzzy: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0

    def with_study(self, study_uid: str) -> QidoQuery:
        """The same query within one study (a path segment or a signed URL's grant)."""
        criterion = Criterion("StudyInstanceUID", Equals((study_uid,)))
        return QidoQuery(
            self.level,
            (*self.criteria, criterion),
            self.include_all,
            self.include,
            self.fuzzy,
            self.limit,
            self.offset,
        )

    def with_series(self, series_uid: str) -> QidoQuery:
        criterion = Criterion("SeriesInstanceUID", Equals((series_uid,)))
        return QidoQuery(
            self.level,
            (*self.criteria, criterion),
            self.include_all,
            self.include,
            self.fuzzy,
            self.limit,
            self.offset,
        )


def allowed_keys(level: Level) -> frozenset[str]:
    if level == "study":
        return STUDY_KEYS | {"Modality"}  # a study search on Modality means ModalitiesInStudy
    if level == "series":
        return STUDY_KEYS | SERIES_KEYS
    return STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS


def keyword_of(name: str) -> str | None:
    if _HEX_TAG.match(name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def parse(level: Level, params: Iterable[tuple[str, str]]) -> QidoQuery:
    values: dict[str, list[str]] = {}
    include: set[int] = set()
    include_all = fuzzy = False
    limit, offset, cut = MAX_LIMIT, 0, False
    for name, value in params:
        if name == "limit":
            limit = _non_negative(name, value)
            limit, cut = min(limit, MAX_LIMIT), cut or limit > MAX_LIMIT
        elif name == "offset":
            offset = _non_negative(name, value)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidQuery.field(name, "true or false")
            fuzzy = value.lower() == "true"
        elif name == "includefield":
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item == "all":
                    include_all = True
                    continue
                keyword = keyword_of(item)
                if keyword is None:
                    raise InvalidQuery.field(name, f"unknown attribute {item!r}")
                include.add(_tag(keyword))
        elif name not in RESERVED:
            keyword = keyword_of(name)
            if keyword is None or keyword not in allowed_keys(level):
                raise InvalidQuery.field(name, f"not a matching key for a {level} search")
            values.setdefault(keyword, []).append(value)
    criteria = []
    for keyword, given in values.items():
        include.add(_tag(keyword))
        criteria += _criteria(level, keyword, given, fuzzy)
    return QidoQuery(level, tuple(criteria), include_all, frozenset(include), fuzzy, limit, offset)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return int(tag)


def _non_negative(name: str, value: str) -> int:
    return bounded_int(name, value, 0, INT32_MAX, InvalidQuery)  # past 2^31 matches nothing


def _criteria(level: Level, keyword: str, given: list[str], fuzzy: bool) -> list[Criterion]:
    if level == "study" and keyword == "Modality":
        keyword = "ModalitiesInStudy"
    found = []
    for raw in given:
        value = raw.strip()
        if not value:
            continue  # universal matching: returned, not filtered
        condition = _condition(keyword, value, fuzzy)
        found.append(Criterion(keyword, condition))
    return found


def _condition(keyword: str, value: str, fuzzy: bool) -> Condition:
    if keyword in ("StudyDate", "PatientBirthDate"):
        return _date(keyword, value)
    if keyword == "StudyTime":
        return _time(value)
    if keyword in LIST_KEYS:
        items = tuple(v.strip() for v in re.split(r"[,\\]", value) if v.strip())
        if any("*" in v or "?" in v for v in items):
            if len(items) > 1:
                raise InvalidQuery.field(keyword, "a list cannot hold wildcards")
            return Wildcard(items[0])
        return Equals(items)
    if keyword in INT_KEYS:  # IS: a 32-bit signed integer (PS3.5 6.2)
        number = bounded_int(keyword, value, -INT32_MAX - 1, INT32_MAX, InvalidQuery)
        return Equals((str(number),))
    if keyword in NAME_KEYS and fuzzy:
        return FuzzyName(normalize_name(value))
    if "*" in value or "?" in value:
        return Wildcard(value)
    return Equals((value,))


def _date(keyword: str, value: str) -> Condition:
    if "-" not in value:
        if not _DATE.match(value):
            raise InvalidQuery.field(keyword, "YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
        return Equals((value,))
    low, _, high = value.partition("-")
    for part in (low, high):
        if part and not _DATE.match(part):
            raise InvalidQuery.field(keyword, "YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    if not low and not high:
        raise InvalidQuery.field(keyword, "a range needs at least one end")
    return Range(low or None, high or None)


def _time(value: str) -> Condition:
    low, sep, high = value.partition("-")
    try:
        if not sep:
            return Range(normalize_time(value), normalize_time(value, upper=True))
        if not low and not high:
            raise ValueError(value)
        return Range(
            normalize_time(low) if low else None,
            normalize_time(high, upper=True) if high else None,
        )
    except ValueError:
        raise InvalidQuery.field("StudyTime", "HHMMSS[.ffffff] or a range of those") from None


def like_pattern(dicom: str) -> str:
    """DICOM wildcards as a SQL LIKE pattern with '\\' as the escape character."""
    escaped = dicom.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_pattern(dicom: str) -> str:
    """DICOM wildcards as a SQLite GLOB pattern (case-sensitive, like DICOM matching)."""
    out = []
    for char in dicom:
        if char in "[]":
            out.append(f"[{char}]")
        else:
            out.append(char)
    return "".join(out)
