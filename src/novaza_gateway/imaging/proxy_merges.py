"""ADT A40 merges in proxy mode's answers (ADR 0036): the pure parts, no I/O.

The upstream PACS keeps each study under the Patient ID it was stored with; the gateway
resolves merges when it reads (``patient_merges``, ADR 0035), as in embedded mode:

- a QIDO ``PatientID=<value>`` (one exact value) naming a survivor of a merge, or one of the
  identifiers merged into it, becomes one upstream query per identifier of that survivor
  (QIDO matching has no list of values for Patient ID: PS3.4 C.2.2.2.2, list of UID
  matching, is for UIDs only). Each is walked in ``limit``/``offset`` pages, exact matches kept; the
  union is de-duplicated by the level's UID, sorted as embedded mode sorts, and the
  caller's ``offset``/``limit`` cut from it (``Warning: 299`` when more remain);
- QIDO results and WADO metadata report (0010,0020) of a merged record's studies as the
  survivor's Patient ID. Metadata stays streamed: ``PatientIdCoercer`` rewrites the
  top-level (0010,0020) element of each dataset as the JSON passes, holding back at most
  one unfinished string or element.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, unquote_plus

import orjson

from novaza_gateway.imaging.dicomweb.attributes import JsonDataset
from novaza_gateway.imaging.errors import InvalidQuery
from novaza_gateway.imaging.proxy_audit import first_string

PATIENT_ID = "00100020"
PATIENT_KEYS = frozenset({"PatientID", PATIENT_ID})
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
STUDY_DATE, STUDY_TIME = "00080020", "00080030"
SERIES_NUMBER, INSTANCE_NUMBER = "00200011", "00200013"
LEVEL_UID = {"study": STUDY_UID, "series": SERIES_UID, "instance": SOP_UID}
PAGING = frozenset({"limit", "offset", "token"})


def exact_patient_id(query_string: str) -> str | None:
    """The caller's one exact ``PatientID`` value (keyword or tag); None when there is none,
    several, an empty one (universal matching) or one with wildcards or several values:
    those are matched by the upstream as asked, as embedded mode matches them literally."""
    found = [
        unquote_plus(value)
        for name, _, value in (pair.partition("=") for pair in query_string.split("&") if pair)
        if unquote_plus(name) in PATIENT_KEYS
    ]
    if len(found) != 1:
        return None
    value = found[0]
    if not value or any(mark in value for mark in "*?\\"):
        return None
    return value


def caller_offset(query_string: str) -> int:
    """The caller's ``offset`` (0 when absent); 422 as embedded mode when not a number."""
    offset = 0
    for pair in filter(None, query_string.split("&")):
        name, _, value = pair.partition("=")
        if unquote_plus(name) == "offset":
            value = unquote_plus(value)
            if not value.isdigit():
                raise InvalidQuery.field("offset", "a non-negative integer")
            offset = int(value)
    return offset


def identifier_query(query_string: str, patient_id: str, *, offset: int, limit: int) -> str:
    """The caller's query (as encoded) for one identifier: its ``PatientID`` replaced by
    ``patient_id``, its paging (and a signed URL's token) replaced by one upstream page."""
    kept = [
        pair
        for pair in query_string.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) not in PATIENT_KEYS | PAGING
    ]
    kept.append(f"PatientID={quote(patient_id, safe='')}")
    kept.append(f"limit={limit}")
    if offset:
        kept.append(f"offset={offset}")
    return "&".join(kept)


def exact(results: Iterable[Any], patient_id: str) -> list[JsonDataset]:
    """The datasets of an upstream answer that carry exactly ``patient_id`` (or none at
    all: series and instance answers may leave it out)."""
    kept = []
    for item in results:
        if not isinstance(item, dict):
            continue
        stored = first_string(item, PATIENT_ID)
        if stored is None or stored == patient_id:
            kept.append(item)
    return kept


def merged(level: str, answers: Sequence[Sequence[JsonDataset]]) -> list[JsonDataset]:
    """One list of several identifiers' answers: each result once (by the level's UID),
    ordered as the embedded archive orders (studies newest first, then by UID; series and
    instances by study, series number, series, instance number, instance)."""
    key = LEVEL_UID.get(level, STUDY_UID)
    seen: set[str] = set()
    out: list[JsonDataset] = []
    for answer in answers:
        for item in answer:
            uid = first_string(item, key)
            if uid is not None:
                if uid in seen:
                    continue
                seen.add(uid)
            out.append(item)
    if level == "study":
        out.sort(key=lambda item: _text(item, STUDY_UID))
        out.sort(key=lambda item: (_text(item, STUDY_DATE), _text(item, STUDY_TIME)), reverse=True)
    else:
        out.sort(key=_hierarchy)
    return out


def _text(item: JsonDataset, tag: str) -> str:
    return first_string(item, tag) or ""


def _number(item: JsonDataset, tag: str) -> tuple[bool, int]:
    value = first_string(item, tag)
    try:
        return (False, int(float(value))) if value is not None else (True, 0)
    except ValueError:
        return (True, 0)


def _hierarchy(item: JsonDataset) -> tuple[Any, ...]:
    return (
        _text(item, STUDY_UID),
        _number(item, SERIES_NUMBER),
        _text(item, SERIES_UID),
        _number(item, INSTANCE_NUMBER),
        _text(item, SOP_UID),
    )


# ---------------------------------------------------------------- WADO metadata, streamed

# Outside strings only brackets matter; a string is one token (the group: its closing quote).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*(")?|[\[\]{}]')
PATIENT_ID_KEY = b'"00100020"'
MAX_HELD_BYTES = 1024 * 1024
DATASET_DEPTH = 2  # inside [ { ... } ]: the top-level elements of each dataset


class PatientIdCoercer:
    """Rewrites the top-level (0010,0020) of each dataset of a DICOM JSON array fed chunk by
    chunk: a value ``coerced`` names becomes the survivor's; everything else passes as it
    came (whitespace and key order included). Nested elements (sequence items) are left
    alone, as embedded mode leaves them. Memory: at most one unfinished string or element
    held back; a string longer than ``MAX_HELD_BYTES`` split across chunks ends the
    rewriting (the rest passes untouched, never corrupted)."""

    def __init__(self, coerced: dict[str, str]) -> None:
        self._coerced = coerced
        self._pending = b""
        self._depth = 0  # the depth at the start of ``_pending``
        self._key = False  # the last key seen in a dataset was (0010,0020)
        self._passthrough = False

    def feed(self, chunk: bytes) -> bytes:
        if self._passthrough:
            return chunk
        data = self._pending + chunk if self._pending else chunk
        out = bytearray()
        emitted = 0
        depth, key = self._depth, self._key
        element: int | None = None  # where a top-level (0010,0020) value object starts
        hold: int | None = None
        for match in _TOKEN.finditer(data):
            token = match.group()
            if token[0] == 0x22:  # a string; in a dataset's object, strings are keys
                if match.group(1) is None:
                    hold = element if element is not None else match.start()
                    break
                if depth == DATASET_DEPTH:
                    key = token == PATIENT_ID_KEY
                continue
            if token == b"{" and depth == DATASET_DEPTH and key and element is None:
                element = match.start()
            if token in (b"[", b"{"):
                depth += 1
                continue
            depth -= 1
            if element is not None and depth == DATASET_DEPTH:
                out += data[emitted:element]
                out += self._element(data[element : match.end()])
                emitted, element, key = match.end(), None, False
        else:
            hold = element
        if hold is None:
            out += data[emitted:]
            self._pending, self._depth, self._key = b"", depth, key
            return bytes(out)
        if len(data) - hold > MAX_HELD_BYTES:
            self._passthrough = True
            out += data[emitted:]
            self._pending = b""
            return bytes(out)
        out += data[emitted:hold]
        self._pending = data[hold:]
        if hold == element:
            self._depth, self._key = DATASET_DEPTH, True
        else:
            self._depth, self._key = depth, key
        return bytes(out)

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        return data

    def _element(self, text: bytes) -> bytes:
        """The value object of a top-level (0010,0020), coerced when ``coerced`` names it."""
        try:
            element = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        values = element.get("Value") if isinstance(element, dict) else None
        if not (isinstance(values, list) and values and values[0] in self._coerced):
            return text
        return orjson.dumps({**element, "Value": [self._coerced[values[0]], *values[1:]]})
