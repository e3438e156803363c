"""The HL7 parser and the ACK builder under arbitrary and mutated input: a message is parsed
or refused with ``ParseError`` (answered AR), never another exception; every ACK built is
itself valid ER7 that reads back, and carries no MLLP framing byte."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from novaza_gateway.hl7.ack import build_ack, read_ack
from novaza_gateway.hl7.parser import Hl7Error, ParseError, parse, peek
from tests.fuzz.conftest import FUZZ

CORPUS = sorted((Path(__file__).parents[1] / "fixtures" / "hl7").glob("*.hl7"))
SAMPLES = [path.read_bytes() for path in CORPUS]
NOW = datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC)
FRAMING = (b"\x0b", b"\x1c", b"\x1d")
# Bytes HL7 gives meaning to, so mutations hit separators and escapes, not only text.
SPECIAL = st.sampled_from(
    [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\x00", b"\x0b", b"\x1c", b"\xff", b"MSH|"]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with a few bytes replaced, inserted or cut."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "replace", "cut"]))
        piece = draw(st.one_of(SPECIAL, st.binary(min_size=1, max_size=8)))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "replace":
            data[at : at + len(piece)] = piece
        else:
            del data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


def acks_for(data: bytes) -> list[bytes]:
    """Every ACK the intake could answer ``data`` with."""
    try:
        message = parse(data)
    except ParseError as exc:
        return [build_ack(peek(data), "AR", control_id="c1", now=NOW, error=exc).data]
    header = message.header
    error = ParseError("fuzzed")
    return [
        build_ack(header, "AA", control_id="c1", now=NOW).data,
        build_ack(header, "AE", control_id="c2", now=NOW, error=error).data,
        build_ack(header, "AR", control_id="c3", now=NOW, error=error).data,
    ]


def check(data: bytes) -> None:
    try:
        parse(data)
    except Hl7Error as exc:
        assert isinstance(exc, ParseError), type(exc)
    for ack in acks_for(data):
        assert not any(byte in ack for byte in FRAMING), ack
        received = read_ack(ack)  # our own ACK parses as an ACK
        assert received.code in ("AA", "AE", "AR")


@FUZZ
@given(st.binary(max_size=2048))
@example(b"")
@example(b"MSH")
@example(b"MSH|^~\\&|")
@example(b"MSH|^~\\&|A|B|C|D|20261208||ADT^A08|\x00|P|2.5\rPID|1||\x1c\r")
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(mutated())
# found by this target: 0x0B as a component separator came back in the ACK's MSH-2
@example(b"MSH|\x0b^~\\&|EPIC|STMARYS|NOVAZA|RAD|20260301083000||ADT^A01|EPA1|P|2.5.1\rPID|1")
# found: a NUL in MSH-9's trigger event came back raw in the AR's MSH-9
@example(b"MSH|^~\\&|EPIC|STMARYS|NOVAZA|RAD|20260307070000||ADT^\x00A01^ADT_A01|E77|P|2.5\rPID|1")
def test_mutated_corpus_messages(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.text(max_size=64), st.text(max_size=64))
def test_echoed_header_fields_never_break_the_ack(control_id: str, application: str) -> None:
    """MSH-3 and MSH-10 come back in the ACK: whatever they hold stays inside its field."""
    fields = [application, "FAC", "NOVAZA", "NOVAZA", "20261208010203", "", "ADT^A08"]
    msh = "MSH|^~\\&|" + "|".join(fields) + f"|{control_id}|P|2.5.1"
    data = (msh + "\rEVN|A08|20261208\rPID|1||MRN1^^^H^MR||DOE^JANE").encode("utf-8")
    check(data)
