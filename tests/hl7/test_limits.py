"""What a message may hold (issue 11, ADR 0018, 0019), pure: control characters refused
naming the field, the caps on segments and order steps, outgoing text that can never split
an MLLP frame."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from novaza_gateway.config import Hl7Config
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.hl7 import intake, outgoing
from novaza_gateway.hl7.ack import build_ack
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from novaza_gateway.hl7.oru import (
    Coded,
    Observation,
    Result,
    ResultOrder,
    ResultPatient,
    build_oru,
)
from novaza_gateway.hl7.outcome import reject
from novaza_gateway.hl7.parser import ParseError, escape, parse
from tests.hl7.messages import a08, orm

CONFIG = Hl7Config(
    mllp_host="127.0.0.1",
    mllp_port=None,
    idle_timeout_seconds=300,
    max_frame_bytes=1 << 20,
    outbox_poll_seconds=1,
    outbox_max_attempts=10,
    backoff_seconds=2,
    backoff_max_seconds=300,
    ack_timeout_seconds=10,
    settings_ttl_seconds=2,
    max_segments=100,
    max_order_groups=10,
)


def refusal(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as caught:
        intake.take(data, intake.ANY, CONFIG)
    return caught.value


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x0b", "\x0c", "\x1c", "\x1d", "\x1f"])
def test_a_control_character_is_refused_naming_field_and_component(control: str) -> None:
    error = refusal(a08("C1", "M1", f"POISONNAME^O{control}NE"))
    assert (error.ack, error.code) == ("AR", "102")
    assert (error.segment, error.sequence, error.field, error.component) == ("PID", 3, 5, 2)
    ack = reject(a08("C1", "M1", f"X^O{control}NE"), error).ack
    err = ack.text.split("\rERR|", 1)[1]
    assert err.startswith("|PID^3^5^^2|102^PID-5 holds a control character")
    assert control not in ack.text  # the ACK itself never carries it


def test_a_control_character_in_msh_is_named_too() -> None:
    error = refusal(a08("C\x00X", "M1"))
    assert (error.segment, error.field) == ("MSH", 10)


def test_tab_and_line_endings_are_not_control_characters() -> None:
    message = intake.take(a08("C1", "M1", "DOE\tJR").replace(b"\r", b"\r\n"), intake.ANY, CONFIG)
    pid = message.segment("PID")
    assert pid is not None and pid.get(5) == "DOE\tJR"


def test_a_trailing_end_block_line_is_dropped_not_refused() -> None:
    assert parse(a08("C1", "M1") + b"\x1c\r").segment("PV1") is not None


def test_hex_escapes_of_control_characters_are_dropped() -> None:
    message = parse(a08("C1", "M1", "O\\X00\\NE\\X0A\\X"))
    pid = message.segment("PID")
    assert pid is not None and pid.get(5) == "ONE\nX"


def test_more_segments_than_the_cap_are_refused_before_they_are_read() -> None:
    big = a08("C1", "M1") + b"".join(b"NTE|%d||note\r" % n for n in range(97))
    assert intake.take(big[: big.rindex(b"NTE|")], intake.ANY, CONFIG)  # 100: taken
    error = refusal(big)  # 101
    assert (error.ack, error.code) == ("AR", "207")
    assert (error.segment, error.sequence) == ("NTE", 101)
    assert "101 segments; at most 100" in error.text


def test_more_order_steps_than_the_cap_are_refused_naming_the_first_past_it() -> None:
    assert intake.take(orm("C1", "M1", "P1", procedures=10), intake.ORDERS, CONFIG)
    error = refusal(orm("C1", "M1", "P1", procedures=11))
    assert (error.ack, error.code) == ("AR", "207")
    assert (error.segment, error.sequence) == ("OBR", 14)  # MSH PID ORC, then the 11th OBR
    assert "11 order steps" in error.text


def test_a_5000_obr_order_is_refused_at_once() -> None:
    error = refusal(orm("C1", "M1", "P1", procedures=5000))
    assert error.code == "207"  # segments first: 5,003 > 100


def result(value: str, text: str = "") -> Result:
    return Result(
        sending_application="NOVAZA",
        sending_facility="RAD",
        receiving_application="RIS",
        receiving_facility="HOSP",
        control_id="C1",
        patient=ResultPatient(identifiers=[("100\x1c234", "HOSP")], family_name="DOE\x0b"),
        order=ResultOrder("P1", "F1", "ACC\x1d1", Coded("CT", "CT head\x1c")),
        result_status="F",
        observed_at=datetime(2026, 3, 1, tzinfo=UTC),
        observations=[Observation(Coded("IMP", "Impression"), "TX", value)],
        report_text=text,
    )


def test_oru_text_escapes_mllp_framing_bytes_and_separators() -> None:
    oru = build_oru(
        result("a|b^c~d&e\\f\x0bg\x1ch\x1d\r\ni", "line\x1c\r\n\x0bnext"),
        datetime(2026, 3, 1, tzinfo=UTC),
    ).encode()
    for byte in (b"\x0b", b"\x1c", b"\x1d", b"\n"):
        assert byte not in oru
    obx = next(s for s in oru.split(b"\r") if s.startswith(b"OBX"))
    assert obx.split(b"|")[5] == rb"a\F\b\S\c\R\d\T\e\E\f\X0B\g\X1C\h\X1D\\.br\i"
    assert frame(oru)[1:-2] == oru
    decoded = MllpDecoder(1 << 20).feed(frame(oru) + frame(b"MSH|next"))
    assert decoded == [oru, b"MSH|next"]  # one frame each, whatever the result text held
    parsed = parse(oru)
    names = [s.name for s in parsed.segments]
    assert names == ["MSH", "PID", "PV1", "ORC", "OBR", "OBX", "NTE", "NTE"]
    assert [s.raw(3) for s in parsed.all("NTE")] == ["line\\X1C\\", "\\X0B\\next"]


def test_escape_keeps_tab_and_spells_other_controls_in_hex() -> None:
    assert escape("a\tb") == "a\tb"
    assert escape("\x00\x1f") == "\\X00\\\\X1F\\"


def test_an_ack_echoing_a_control_character_escapes_it() -> None:
    header = parse(a08("C1", "M1")).header
    ack = build_ack(
        header, "AR", control_id="X", now=datetime(2026, 3, 1, tzinfo=UTC),
        error=ParseError("bad \x1c value"),
    )  # fmt: skip
    assert b"\x1c" not in ack.data and b"\\X1C\\" in ack.data


@pytest.mark.parametrize("control", ["\x0b", "\x1c", "\x1d"])
def test_a_ready_made_oru_holding_a_framing_byte_is_refused(control: str) -> None:
    message = f"MSH|^~\\&|A|B|C|D|20260301||ORU^R01|C1|P|2.5.1\rOBX|1|TX|X||a{control}b\r"
    with pytest.raises(ValidationFailed) as caught:
        outgoing._ready_made(message)
    assert caught.value.details == {
        "errors": [{"path": "message", "reason": "must not hold 0x0B, 0x1C or 0x1D (MLLP framing)"}]
    }
