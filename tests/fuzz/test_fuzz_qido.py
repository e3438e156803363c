"""The QIDO-RS query parser under arbitrary parameters: a typed query or ``InvalidQuery``
(400), never another exception; the patterns it builds are always usable."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from novaza_gateway.imaging.dicomweb.qido import (
    allowed_keys,
    glob_pattern,
    like_pattern,
    parse,
)
from novaza_gateway.imaging.errors import InvalidQuery
from tests.fuzz.conftest import FUZZ

LEVELS = ("studies", "series", "instances")
NAMES = st.one_of(
    st.sampled_from(
        sorted(
            {"limit", "offset", "fuzzymatching", "includefield", "StudyDate", "PatientName"}
            | allowed_keys("instances")
            | {"00100010", "0020000D", "7FE00010", "zz"}
        )
    ),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.sampled_from(
        ["*", "?", "-", "20260101-", "-20261231", "2026", "9" * 30, "-1", "all", "true"]
    ),
    st.text(max_size=40),
)


@FUZZ
@given(st.sampled_from(LEVELS), st.lists(st.tuples(NAMES, VALUES), max_size=8))
@example("studies", [("offset", str(2**63))])
@example("studies", [("limit", "1e9")])
@example("series", [("StudyDate", "20260231")])
@example("instances", [("PatientName", "\x00")])
def test_parse_answers_a_query_or_invalid_query(level: str, params: list[tuple[str, str]]) -> None:
    try:
        query = parse(level, params)  # type: ignore[arg-type]
    except InvalidQuery:
        return
    assert query.limit >= 0 and query.offset >= 0


def dicom_match(pattern: str, value: str) -> bool:
    """The reference: PS3.4 C.2.2.2.4, ``*`` any run, ``?`` one character, all else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


@pytest.fixture(scope="module")
def sql() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA case_sensitive_like = ON")  # as PostgreSQL's LIKE
    yield connection
    connection.close()


# text a request can carry: no NUL (refused at the edge), no lone surrogates (not UTF-8)
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
WILD = st.text(st.sampled_from("ab*?%_[]^\\!-"), max_size=8)


@FUZZ
@given(WILD | TEXT, st.text(st.sampled_from("ab%_[]^\\!-*?"), max_size=8) | TEXT)
@example("a[b]*", "a[b]c")
@example("%_", "x")
def test_glob_and_like_patterns_match_as_dicom_says(
    sql: sqlite3.Connection, pattern: str, value: str
) -> None:
    """The SQL the archive runs (GLOB on SQLite, LIKE on PostgreSQL) matches exactly what the
    DICOM wildcard means, whatever SQL metacharacters the value holds."""
    expected = dicom_match(pattern, value)
    (glob,) = sql.execute("SELECT ? GLOB ?", (value, glob_pattern(pattern))).fetchone()
    (like,) = sql.execute("SELECT ? LIKE ? ESCAPE '\\'", (value, like_pattern(pattern))).fetchone()
    assert (bool(glob), bool(like)) == (expected, expected)
