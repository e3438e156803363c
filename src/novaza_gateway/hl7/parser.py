"""HL7 v2 ER7 parsing: bytes in, typed message out. Pure: no I/O, no ``await``.

Separators come from MSH-1 and MSH-2; segments may end in ``\\r``, ``\\n`` or ``\\r\\n``;
text is decoded with the character set MSH-18 names; escape sequences are decoded when a
component is read (``Segment.get``), so the raw fields keep their structure.
Errors carry the HL7 error code (table 0357) and the location the ACK's ERR segment needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from novaza_gateway.hl7.er7 import (
    APPLICATION_INTERNAL_ERROR,
    APPLICATION_RECORD_LOCKED,
    CHARSETS,
    DATA_TYPE_ERROR,
    DEFAULT_CHARSET,
    DEFAULT_SEPARATORS,
    DUPLICATE_KEY_IDENTIFIER,
    REQUIRED_FIELD_MISSING,
    SEGMENT_BREAK,
    SEGMENT_SEQUENCE_ERROR,
    SUPPORTED_VERSIONS,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION_ID,
    Hl7Error,
    ParseError,
    Separators,
    codec_for,
    decode,
    escape,
    unescape,
)

# The ER7 basics are re-exported: callers import parsing and its errors from one place.
__all__ = [
    "APPLICATION_INTERNAL_ERROR",
    "APPLICATION_RECORD_LOCKED",
    "CHARSETS",
    "DATA_TYPE_ERROR",
    "DEFAULT_CHARSET",
    "DEFAULT_SEPARATORS",
    "DUPLICATE_KEY_IDENTIFIER",
    "REQUIRED_FIELD_MISSING",
    "SEGMENT_SEQUENCE_ERROR",
    "SUPPORTED_VERSIONS",
    "TABLE_VALUE_NOT_FOUND",
    "UNKNOWN_KEY_IDENTIFIER",
    "UNSUPPORTED_EVENT_CODE",
    "UNSUPPORTED_MESSAGE_TYPE",
    "UNSUPPORTED_PROCESSING_ID",
    "UNSUPPORTED_VERSION_ID",
    "Header",
    "Hl7Error",
    "Message",
    "MessageType",
    "ParseError",
    "Segment",
    "Separators",
    "codec_for",
    "decode",
    "encode",
    "escape",
    "parse",
    "parse_timestamp",
    "peek",
    "separators",
    "unescape",
]

_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_TS = re.compile(
    r"^(?P<y>\d{4})(?P<m>\d{2})?(?P<d>\d{2})?(?P<H>\d{2})?(?P<M>\d{2})?(?P<S>\d{2})?"
    r"(?:\.(?P<frac>\d{1,4}))?(?P<tz>[+-]\d{4})?$"
)


@dataclass(slots=True)
class Segment:
    """One segment; ``fields[n]`` is field n (for MSH, fields[1] is MSH-1, the separator)."""

    name: str
    fields: list[str]
    separators: Separators
    sequence: int  # 1-based position of the segment in the message
    charset: str = DEFAULT_CHARSET  # the codec hex escapes decode with

    def raw(self, index: int) -> str:
        return self.fields[index] if 0 < index < len(self.fields) else ""

    def repetitions(self, index: int) -> list[str]:
        value = self.raw(index)
        if not value or (self.name == "MSH" and index in (1, 2)):
            return [value] if value else []
        return value.split(self.separators.repetition)

    def get(
        self, index: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str:
        """Field ``index`` (1-based) of this segment, one component, escapes decoded.

        Splits only at the separators the value holds (most fields hold none): the same
        answer as ``component_of(repetitions(index)[repetition - 1], ...)``, cheaper."""
        fields = self.fields
        if not 0 < index < len(fields):
            return ""
        value = fields[index]
        if not value or (index < 3 and self.name == "MSH"):
            return value
        seps = self.separators
        if seps.repetition in value:
            reps = value.split(seps.repetition)
            if len(reps) < repetition:
                return ""
            value = reps[repetition - 1]
        elif repetition > 1:
            return ""
        if seps.component in value:
            parts = value.split(seps.component)
            if len(parts) < component:
                return ""
            value = parts[component - 1]
        elif component > 1:
            return ""
        if seps.subcomponent in value:
            subs = value.split(seps.subcomponent)
            if len(subs) < subcomponent:
                return ""
            value = subs[subcomponent - 1]
        elif subcomponent > 1:
            return ""
        return unescape(value, seps, self.charset) if seps.escape in value else value

    def component_of(self, value: str, component: int = 1, subcomponent: int = 1) -> str:
        parts = value.split(self.separators.component)
        if len(parts) < component:
            return ""
        subs = parts[component - 1].split(self.separators.subcomponent)
        if len(subs) < subcomponent:
            return ""
        return unescape(subs[subcomponent - 1], self.separators, self.charset)


@dataclass(frozen=True, slots=True)
class MessageType:
    code: str
    trigger: str
    structure: str

    def __str__(self) -> str:
        return f"{self.code}^{self.trigger}" if self.trigger else self.code


@dataclass(frozen=True, slots=True)
class Header:
    """What the gateway reads from MSH: routing, identity, version and ACK mode."""

    separators: Separators
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_time: str
    message_type: MessageType
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str

    @property
    def enhanced_mode(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 is valued (HL7 2.5 ch. 2.9)."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass(slots=True)
class Message:
    header: Header
    segments: list[Segment] = field(default_factory=list)
    text: str = ""

    def segment(self, name: str) -> Segment | None:
        for segment in self.segments:
            if segment.name == name:
                return segment
        return None

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]


# --------------------------------------------------------------------------- parsing


def parse(data: bytes | str) -> Message:
    """One ER7 message. Raises ``ParseError`` (answered AR) for anything not HL7 v2.3-2.5.1."""
    text = decode(data) if isinstance(data, bytes) else data
    text = text.lstrip("\ufeff \t\r\n\x0b")
    if not text.startswith("MSH"):
        raise ParseError("The message does not start with an MSH segment.")
    lines = [line for line in SEGMENT_BREAK.split(text) if line.strip()]
    seps = separators(lines[0])
    segments = [_segment(line, seps, n) for n, line in enumerate(lines, start=1)]
    header = _header(segments[0])
    codec = codec_for(header.charset)
    for segment in segments:
        segment.charset = codec
    return Message(header=header, segments=segments, text=text)


def separators(msh: str) -> Separators:
    if len(msh) < 8:
        raise ParseError("MSH is truncated.", code=REQUIRED_FIELD_MISSING, segment="MSH", field=2)
    fs = msh[3]
    encoding = msh[4:].split(fs, 1)[0]
    chars = [fs, *encoding[:4]]
    if (
        len(encoding) not in (4, 5)
        or len(set(chars)) != 5
        # Printable and not alphanumeric: a control byte as a separator (0x0B, 0x1C) would
        # come back in our ACK's MSH-1/2 and split the MLLP frame at the sender.
        or any(c.isalnum() or c == " " or not c.isprintable() for c in chars)
    ):
        raise ParseError(
            "MSH-1/MSH-2 do not hold valid encoding characters.",
            code=DATA_TYPE_ERROR,
            segment="MSH",
            sequence=1,
            field=2,
        )
    return Separators(fs, encoding[0], encoding[1], encoding[2], encoding[3])


def _segment(line: str, seps: Separators, sequence: int) -> Segment:
    name = line[:3]
    if not _SEGMENT_NAME.match(name) or (len(line) > 3 and line[3] != seps.field):
        raise ParseError(
            f"Segment {sequence} has no valid segment id.",
            code=SEGMENT_SEQUENCE_ERROR,
            sequence=sequence,
        )
    if name == "MSH":
        if sequence != 1:
            raise ParseError("MSH appears twice.", segment="MSH", sequence=sequence)
        parts = line.split(seps.field)
        fields = ["MSH", seps.field, *parts[1:]]
    else:
        fields = line.split(seps.field)
    return Segment(name, fields, seps, sequence)


def _header(msh: Segment) -> Header:
    def required(index: int, what: str) -> str:
        value = msh.get(index)
        if not value.strip():
            raise ParseError(
                f"MSH-{index} ({what}) is empty.",
                code=REQUIRED_FIELD_MISSING,
                segment="MSH",
                sequence=1,
                field=index,
            )
        return value.strip()

    code = required(9, "message type")
    version = required(12, "version id")
    if version not in SUPPORTED_VERSIONS:
        raise ParseError(
            f"HL7 version {version[:16]} is not supported (2.3 to 2.5.1 are).",
            code=UNSUPPORTED_VERSION_ID,
            segment="MSH",
            sequence=1,
            field=12,
        )
    processing = msh.get(11)
    if processing and processing not in ("P", "T", "D"):
        raise ParseError(
            "MSH-11 processing id must be P, T or D.",
            code=UNSUPPORTED_PROCESSING_ID,
            segment="MSH",
            sequence=1,
            field=11,
        )
    return Header(
        separators=msh.separators,
        sending_application=msh.get(3),
        sending_facility=msh.get(4),
        receiving_application=msh.get(5),
        receiving_facility=msh.get(6),
        message_time=msh.get(7),
        message_type=MessageType(code.upper(), msh.get(9, 2).upper(), msh.get(9, 3).upper()),
        control_id=required(10, "message control id"),
        processing_id=processing or "P",
        version=version,
        accept_ack_type=msh.get(15).upper(),
        application_ack_type=msh.get(16).upper(),
        charset=msh.get(18),
    )


def parse_timestamp(
    value: str,
    *,
    segment: str | None = None,
    sequence: int | None = None,
    field: int | None = None,
) -> datetime | None:
    """HL7 TS/DTM (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``) as aware UTC; ``""`` is None.

    A time without an offset is taken as UTC. Invalid values raise AE with code 102.
    """
    value = value.strip()
    if not value:
        return None
    match = _TS.match(value)
    try:
        if match is None:
            raise ValueError(value)
        parts = match.groupdict()
        tz = UTC
        if parts["tz"]:
            sign = 1 if parts["tz"][0] == "+" else -1
            offset = timedelta(hours=int(parts["tz"][1:3]), minutes=int(parts["tz"][3:5]))
            tz = timezone(sign * offset)
        frac = parts["frac"] or ""
        moment = datetime(
            int(parts["y"]),
            int(parts["m"] or 1),
            int(parts["d"] or 1),
            int(parts["H"] or 0),
            int(parts["M"] or 0),
            int(parts["S"] or 0),
            int(frac.ljust(6, "0")) if frac else 0,
            tzinfo=tz,
        )
    except ValueError:
        raise Hl7Error(
            "A date/time field is not a valid HL7 timestamp.",
            code=DATA_TYPE_ERROR,
            segment=segment,
            sequence=sequence,
            field=field,
        ) from None
    return moment.astimezone(UTC)


def peek(data: bytes | str) -> Header | None:
    """The MSH of a message ``parse`` rejected, read leniently so its AR can echo MSH-10."""
    try:
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        text = text.lstrip("\ufeff \t\r\n\x0b")
        if not text.startswith("MSH"):
            return None
        first = SEGMENT_BREAK.split(text, maxsplit=1)[0]
        msh = _segment(first, separators(first), 1)
        trigger = msh.get(9, 2).upper()
        version = msh.get(12).strip()
        return Header(
            separators=msh.separators,
            sending_application=msh.get(3),
            sending_facility=msh.get(4),
            receiving_application=msh.get(5),
            receiving_facility=msh.get(6),
            message_time=msh.get(7),
            message_type=MessageType(msh.get(9).upper(), trigger, msh.get(9, 3).upper()),
            control_id=msh.get(10).strip(),
            processing_id=msh.get(11) if msh.get(11) in ("P", "T", "D") else "P",
            version=version if version in SUPPORTED_VERSIONS else "2.5.1",
            accept_ack_type=msh.get(15).upper(),
            application_ack_type=msh.get(16).upper(),
            charset="",
        )
    except ParseError:
        return None


def encode(text: str) -> bytes:
    """Text (a message received as JSON) as bytes in the character set its MSH-18 names."""
    header = peek(text)
    codec = DEFAULT_CHARSET
    if header is not None and text.startswith("MSH"):
        first = SEGMENT_BREAK.split(text, maxsplit=1)[0]
        parts = first.split(first[3])
        if len(parts) > 17:
            try:
                codec = codec_for(parts[17].split(header.separators.component)[0])
            except ParseError:
                codec = DEFAULT_CHARSET
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        return text.encode(DEFAULT_CHARSET)
