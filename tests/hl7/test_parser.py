"""The ER7 parser on the fixture corpus, separators, escapes, character sets and bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import hl7 as python_hl7
from novaza_gateway.hl7 import parser
from novaza_gateway.hl7.parser import Hl7Error, ParseError, Separators, escape, parse, unescape
from tests.hl7.corpus import bad, fixture, good


@pytest.mark.parametrize("name", good())
def test_corpus_parses_and_agrees_with_python_hl7(name: str) -> None:
    data = fixture(name)
    message = parse(data)
    kind, event = name.split("_")[:2]
    assert message.header.message_type.code == kind.upper()
    assert message.header.message_type.trigger == event.upper()
    assert message.header.version in parser.SUPPORTED_VERSIONS
    # python-hl7 as the reference reading of the same bytes
    text = data.decode("latin-1").replace("\r\n", "\r").replace("\n", "\r")
    reference = python_hl7.parse(text)
    ref_msh = reference.segment("MSH")
    assert message.header.control_id == str(ref_msh[10])
    assert message.header.sending_application == str(ref_msh[3])
    assert [s.name for s in message.segments] == [str(s[0]) for s in reference]


@pytest.mark.parametrize("breaks", ["\r", "\n", "\r\n"])
def test_segment_separators(breaks: str) -> None:
    text = breaks.join(
        ["MSH|^~\\&|A|B|C|D|20260101||ADT^A08|X1|P|2.4", "EVN|A08", "PID|1||42^^^H^MR||Doe^J"]
    )
    message = parse(text + breaks)
    assert [s.name for s in message.segments] == ["MSH", "EVN", "PID"]
    assert message.segment("PID") is not None
    assert message.all("PID")[0].get(5, 2) == "J"


def test_custom_separators_from_msh() -> None:
    message = parse(
        "MSH#*!$@#SEND#FAC#R#RF#20260101##ADT*A01*ADT_A01#C1#P#2.5\rPID#1##7*$S$*H##A*B!C*D"
    )
    pid = message.segment("PID")
    assert pid is not None
    assert message.header.separators == Separators("#", "*", "!", "$", "@")
    assert message.header.message_type.structure == "ADT_A01"
    assert pid.get(3) == "7"
    assert pid.get(3, 2) == "*"  # $S$ is the component separator, escaped
    assert pid.get(5, 2, repetition=2) == "D"
    assert pid.repetitions(5) == ["A*B", "C*D"]


def test_escape_sequences_decoded_and_round_trip() -> None:
    seps = Separators()
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", seps) == "a|b^c&d~e\\f"
    assert unescape(r"line\.br\next", seps) == "line\nnext"
    assert unescape("\\H\\bold\\N\\ \\X48692C\\", seps) == "bold Hi,"
    assert unescape("caf\\XC3A9\\", seps, "utf-8") == "café"
    assert unescape("caf\\XE9\\", seps, "latin-1") == "café"
    raw = "a|b^c&d~e\\f\nx"
    assert unescape(escape(raw, seps), seps) == raw
    assert unescape(r"dangling\F", seps) == "dangling\\F"


def test_msh18_character_set_is_honoured() -> None:
    message = parse(fixture("adt_a08_v24_cerner.hl7"))
    assert message.header.charset == "8859/1"
    pid = message.segment("PID")
    assert pid is not None and pid.get(11, 2) == "Résidence Thérèse"
    # the same text read as UTF-8 when MSH-18 says so
    utf8 = "MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rPID|1||1||Zoë^Ann"
    pid = parse(utf8.encode("utf-8")).segment("PID")
    assert pid is not None and pid.get(5) == "Zoë"
    with pytest.raises(ParseError) as caught:
        parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5||||||EBCDIC\rPID|1")
    assert caught.value.code == parser.TABLE_VALUE_NOT_FOUND


def test_header_fields_and_ack_mode() -> None:
    header = parse(fixture("adt_a08_v24_cerner.hl7")).header
    assert (header.sending_application, header.sending_facility) == ("CERNER", "STMARYS")
    assert (header.receiving_application, header.receiving_facility) == ("NOVAZA", "RADIOLOGY")
    assert header.accept_ack_type == "AL" and header.application_ack_type == "NE"
    assert header.enhanced_mode
    assert not parse(fixture("adt_a02_v251.hl7")).header.enhanced_mode


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("bad_no_msh.hl7", parser.REQUIRED_FIELD_MISSING),
        ("bad_encoding_chars.hl7", parser.DATA_TYPE_ERROR),
        ("bad_truncated.hl7", parser.REQUIRED_FIELD_MISSING),
        ("bad_no_control_id.hl7", parser.REQUIRED_FIELD_MISSING),
        ("bad_version_22.hl7", parser.UNSUPPORTED_VERSION_ID),
        ("bad_binary_noise.bin", parser.REQUIRED_FIELD_MISSING),
    ],
)
def test_bad_messages_raise_parse_errors_with_hl7_codes(name: str, code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(fixture(name))
    assert caught.value.ack == "AR"
    assert caught.value.code == code


def test_every_bad_fixture_is_either_rejected_or_parses() -> None:
    for name in bad():
        try:
            parse(fixture(name))
        except ParseError:
            continue


def test_timestamps() -> None:
    ts = parser.parse_timestamp
    assert ts("") is None
    assert ts("2026") == datetime(2026, 1, 1, tzinfo=UTC)
    assert ts("202603011100-0500") == datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
    assert ts("20260301110000.25+0100") == datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    for invalid in ["19991345", "2026-03-01", "abc", "20260230"]:
        with pytest.raises(Hl7Error) as caught:
            ts(invalid, segment="PID", field=7)
        assert caught.value.code == parser.DATA_TYPE_ERROR
        assert caught.value.ack == "AE"
        assert caught.value.segment == "PID"
