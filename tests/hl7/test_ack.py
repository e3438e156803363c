"""ACKs: MSH/MSA/ERR per version, original and enhanced mode; reading a receiver's ACK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import hl7 as python_hl7
from novaza_gateway.hl7 import parser
from novaza_gateway.hl7.ack import ack_wanted, build_ack, read_ack
from novaza_gateway.hl7.parser import Hl7Error, ParseError, parse
from tests.hl7.corpus import fixture

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def segments(text: str) -> dict[str, list[str]]:
    return {line[:3]: line.split("|") for line in text.split("\r") if line}


def test_aa_original_mode_v251() -> None:
    header = parse(fixture("adt_a01_v251_epic.hl7")).header
    ack = build_ack(header, "AA", control_id="ACK1", now=NOW)
    seg = segments(ack.text)
    assert list(seg) == ["MSH", "MSA"]
    assert seg["MSH"][2:6] == ["NOVAZA", "RADIOLOGY", "EPIC", "STMARYS"]
    assert seg["MSH"][8] == "ACK^A01^ACK"
    assert seg["MSH"][9] == "ACK1"
    assert seg["MSH"][11] == "2.5.1"
    assert seg["MSA"][1:3] == ["AA", "EPA01000001"]
    assert ack.data == ack.text.encode()
    # python-hl7 reads it as an ACK
    reference = python_hl7.parse(ack.text)
    assert str(reference.segment("MSA")[2]) == "EPA01000001"


def test_ae_with_err_v25_location_and_code() -> None:
    header = parse(fixture("bad_invalid_birth_date.hl7")).header
    error = Hl7Error(
        "Birth date invalid", code=parser.DATA_TYPE_ERROR, segment="PID", sequence=2, field=7
    )
    seg = segments(build_ack(header, "AE", control_id="A2", now=NOW, error=error).text)
    assert seg["MSA"][1] == "AE"
    assert seg["ERR"][2] == "PID^2^7"
    assert seg["ERR"][3] == "102^Birth date invalid^HL70357"
    assert seg["ERR"][4] == "E"


def test_ar_with_err_v23_uses_err1() -> None:
    header = parse(fixture("orm_o01_ca_v23.hl7")).header
    error = Hl7Error(
        "Unknown order", code=parser.UNKNOWN_KEY_IDENTIFIER, segment="ORC", sequence=3, field=2
    )
    ack = build_ack(header, "AR", control_id="A3", now=NOW, error=error)
    seg = segments(ack.text)
    assert seg["MSH"][8] == "ACK^O01"
    assert seg["ERR"][1] == "ORC^3^2^204&Unknown order&HL70357"


def test_enhanced_mode_answers_commit_codes_and_keeps_charset() -> None:
    header = parse(fixture("adt_a08_v24_cerner.hl7")).header
    ack = build_ack(header, "AE", control_id="A4", now=NOW, error=Hl7Error("Thérèse | x"))
    seg = segments(ack.data.decode("latin-1"))
    assert seg["MSA"][1] == "CE"
    assert seg["MSA"][3] == "Thérèse \\F\\ x"
    assert seg["MSH"][17] == "8859/1"
    assert ack.code == "AE"
    assert ack.data.decode("latin-1") == ack.text  # encoded in the sender's character set
    assert read_ack(ack.data).code == "AE"


def test_ack_without_header_for_unparseable_input() -> None:
    error = ParseError("no MSH", code=parser.REQUIRED_FIELD_MISSING)
    ack = build_ack(None, "AR", control_id="A5", now=NOW, error=error)
    seg = segments(ack.text)
    assert seg["MSA"][1:3] == ["AR", ""]
    assert seg["MSH"][11] == "2.5.1"
    assert read_ack(ack.data).code == "AR"


def test_ack_wanted_honours_msh15() -> None:
    base = "MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5|||{}|\rPID|1"
    assert ack_wanted(parse(base.format("")).header, "AE")
    assert not ack_wanted(parse(base.format("NE")).header, "AA")
    assert ack_wanted(parse(base.format("ER")).header, "AE")
    assert not ack_wanted(parse(base.format("ER")).header, "AA")
    assert ack_wanted(parse(base.format("SU")).header, "AA")
    assert ack_wanted(parse(base.format("AL")).header, "AR")


def test_read_ack_rejects_non_acks() -> None:
    with pytest.raises(ParseError):
        read_ack(fixture("adt_a02_v251.hl7"))
    with pytest.raises(ParseError):
        read_ack(b"MSH|^~\\&|A|B|C|D|2026||ACK|1|P|2.5\rMSA|XX|9")
    assert read_ack(b"MSH|^~\\&|A|B|C|D|2026||ACK|1|P|2.5\rMSA|CA|9").code == "AA"
