"""The HL7 acknowledgement: build ours (MSH, MSA, ERR) and read the receiver's. Pure.

Original mode (MSH-15/16 empty) answers ``AA``/``AE``/``AR``. Enhanced mode (MSH-15 or
MSH-16 valued) answers the accept acknowledgement ``CA``/``CE``/``CR``; the gateway commits
and processes in one step, so that one ACK already carries the application outcome and no
separate application ACK follows (docs/hl7.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from novaza_gateway.hl7.parser import (
    DEFAULT_SEPARATORS,
    Header,
    Hl7Error,
    ParseError,
    Separators,
    codec_for,
    escape,
    parse,
)

ACK_CODES = ("AA", "AE", "AR")
ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}
ORIGINAL = {v: k for k, v in ENHANCED.items()}
GATEWAY_APPLICATION = "NOVAZA"
GATEWAY_FACILITY = "NOVAZA"
DEFAULT_VERSION = "2.5.1"


@dataclass(frozen=True, slots=True)
class Ack:
    """An ACK as built: its ER7 text, its bytes, and the outcome it reports."""

    code: str  # AA, AE or AR (the outcome, whatever the mode's spelling)
    text: str
    data: bytes


def hl7_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + moment.strftime("%z")


def build_ack(
    header: Header | None,
    code: str,
    *,
    control_id: str,
    now: datetime,
    error: Hl7Error | None = None,
) -> Ack:
    """The ACK to ``header``'s message (None: a message too broken to have one)."""
    if code not in ACK_CODES:
        raise ValueError(f"not an ACK code: {code}")
    seps = header.separators if header else DEFAULT_SEPARATORS
    version = header.version if header else DEFAULT_VERSION
    acked_id = header.control_id if header else ""
    msa_code = ENHANCED[code] if header and header.enhanced_mode else code
    fs = seps.field
    msh = [
        "MSH",
        seps.encoding_characters,
        _esc(header.receiving_application if header else GATEWAY_APPLICATION, seps),
        _esc(header.receiving_facility if header else GATEWAY_FACILITY, seps),
        _esc(header.sending_application if header else "", seps),
        _esc(header.sending_facility if header else "", seps),
        hl7_time(now),
        "",
        _ack_type(header, seps),
        _esc(control_id, seps),
        _esc(header.processing_id, seps) if header else "P",
        _esc(version, seps),
    ]
    if header and header.charset:
        msh += ["", "", "", "", "", _esc(header.charset, seps)]
    text_message = _esc(error.text, seps) if error else ""
    msa = ["MSA", msa_code, _esc(acked_id, seps), text_message]
    segments = [fs.join(msh), fs.join(msa)]
    if error is not None:
        segments.append(_err(error, seps, version))
    text = "\r".join(segments) + "\r"
    codec = codec_for(header.charset) if header else "utf-8"
    return Ack(code=code, text=text, data=text.encode(codec, errors="replace"))


def _esc(value: str, seps: Separators) -> str:
    return escape(value, seps)


def _ack_type(header: Header | None, seps: Separators) -> str:
    cs = seps.component
    trigger = _esc(header.message_type.trigger, seps) if header else ""
    if header is None or header.version in ("2.3", "2.3.1"):
        return f"ACK{cs}{trigger}" if trigger else "ACK"
    return f"ACK{cs}{trigger}{cs}ACK"


def _err(error: Hl7Error, seps: Separators, version: str) -> str:
    """ERR: ERR-1 (2.3/2.4 style) or ERR-2 location, ERR-3 code, ERR-4 severity (2.5+)."""
    cs, ss = seps.component, seps.subcomponent
    location = [
        error.segment or "",
        str(error.sequence or ""),
        str(error.field or ""),
        "",
        str(error.component or ""),
    ]
    text = _esc(error.text, seps)
    if version in ("2.3", "2.3.1", "2.4"):
        coded = ss.join([error.code, text, "HL70357"])
        return seps.field.join(["ERR", cs.join([*location[:3], coded])])
    where = cs.join(location).rstrip(cs)
    coded = cs.join([error.code, text, "HL70357"])
    severity = "E"
    return seps.field.join(["ERR", "", where, coded, severity])


def ack_wanted(header: Header | None, code: str) -> bool:
    """Whether MSH-15 (enhanced mode) asks for an accept ACK with this outcome."""
    if header is None or not header.enhanced_mode:
        return True
    wanted = header.accept_ack_type or "AL"
    if wanted == "NE":
        return False
    if wanted == "ER":
        return code != "AA"
    if wanted == "SU":
        return code == "AA"
    return True


@dataclass(frozen=True, slots=True)
class ReceivedAck:
    """An ACK read back (a receiver's answer to a message we sent, or one of ours stored):
    MSA-1 (normalised to AA/AE/AR), MSA-2, MSA-3, and the ERR's HL7 error code if any."""

    code: str
    acked_control_id: str
    text: str
    error_code: str = ""


def read_ack(data: bytes) -> ReceivedAck:
    """MSA-1 and MSA-2 of an ACK; ParseError if it is no ACK at all."""
    message = parse(data)
    msa = message.segment("MSA")
    if msa is None:
        raise ParseError("The answer has no MSA segment.")
    raw = msa.get(1).upper()
    code = ORIGINAL.get(raw, raw)
    if code not in ACK_CODES:
        raise ParseError(f"MSA-1 '{raw[:8]}' is no acknowledgement code.")
    err = message.segment("ERR")
    error_code = (err.get(3) or err.get(1, 4)) if err is not None else ""  # 2.5+ | 2.3/2.4
    return ReceivedAck(
        code=code, acked_control_id=msa.get(2), text=msa.get(3), error_code=error_code
    )
