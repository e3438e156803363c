"""ER7 basics shared by parsing and building: error codes, separators, character sets, escapes.

Pure. ``Hl7Error`` carries the HL7 error code (table 0357), the ACK code and the location the
ACK's ERR segment needs; ``ParseError`` is the AR kind.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})

# HL7 table 0357, the codes this gateway answers with.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_RECORD_LOCKED = "206"
APPLICATION_INTERNAL_ERROR = "207"

# MSH-18 names (HL7 table 0211) -> Python codecs. Empty means the default below.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "ISO IR100": "latin-1",
    "ISO IR6": "ascii",
    "ISO IR14": "shift_jis",
    "ISO IR87": "iso2022_jp",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
}
DEFAULT_CHARSET = "utf-8"

SEGMENT_BREAK = re.compile(r"\r\n|\r|\n")
_HEX_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# Control characters an outgoing field spells as ``\Xhh\``: above all MLLP's 0x0B, 0x1C
# and 0x1D, which would split or end a frame at the receiver (CR and LF become ``\.br\``).
_ESCAPED_CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\t\r\n"]


class Hl7Error(Exception):
    """A message the gateway cannot take: the ACK code, HL7 error code and ERR location."""

    def __init__(
        self,
        text: str,
        *,
        code: str = APPLICATION_INTERNAL_ERROR,
        ack: str = "AE",
        segment: str | None = None,
        sequence: int | None = None,
        field: int | None = None,
        component: int | None = None,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.ack = ack
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component


class ParseError(Hl7Error):
    """The message is not HL7 this gateway reads: always answered AR."""

    def __init__(
        self,
        text: str,
        *,
        code: str = SEGMENT_SEQUENCE_ERROR,
        segment: str | None = None,
        sequence: int | None = None,
        field: int | None = None,
        component: int | None = None,
    ) -> None:
        super().__init__(
            text,
            code=code,
            ack="AR",
            segment=segment,
            sequence=sequence,
            field=field,
            component=component,
        )


@dataclass(frozen=True, slots=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT_SEPARATORS = Separators()


def codec_for(charset: str) -> str:
    name = charset.strip().upper()
    if not name:
        return DEFAULT_CHARSET
    codec = CHARSETS.get(name)
    if codec is None:
        raise ParseError(
            f"Character set '{charset[:32]}' in MSH-18 is not supported.",
            code=TABLE_VALUE_NOT_FOUND,
            segment="MSH",
            sequence=1,
            field=18,
        )
    return codec


def decode(data: bytes) -> str:
    """Bytes to text in the character set MSH-18 names (UTF-8, else Latin-1, when unnamed)."""
    start = data.find(b"MSH")
    if start < 0:
        raise ParseError("The message has no MSH segment.", code=REQUIRED_FIELD_MISSING)
    first_line = SEGMENT_BREAK.split(data[start:].decode("latin-1"), maxsplit=1)[0]
    charset = ""
    if len(first_line) > 3:
        parts = first_line.split(first_line[3])
        charset = parts[17] if len(parts) > 17 else ""
    codec = codec_for(charset.split(first_line[4] if len(first_line) > 4 else "^")[0])
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        if charset:
            raise ParseError(
                f"The message is not valid {charset[:32]}.",
                code=DATA_TYPE_ERROR,
                segment="MSH",
                sequence=1,
                field=18,
            ) from None
        return data.decode("latin-1")


def unescape(value: str, seps: Separators, charset: str = DEFAULT_CHARSET) -> str:
    """Decode ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ \\.br\\``; formatting escapes drop."""
    esc = seps.escape
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        end = value.find(esc, i + 1) if ch == esc else -1
        if end < 0:
            out.append(ch)
            i += 1
            continue
        out.append(_escape_text(value[i + 1 : end], seps, charset))
        i = end + 1
    return "".join(out)


def _escape_text(seq: str, seps: Separators, charset: str) -> str:
    simple = {
        "F": seps.field,
        "S": seps.component,
        "T": seps.subcomponent,
        "R": seps.repetition,
        "E": seps.escape,
        ".br": "\n",
    }
    if seq in simple:
        return simple[seq]
    if seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            text = bytes.fromhex(seq[1:]).decode(charset, errors="replace")
        except ValueError:
            return ""
        # control characters (NUL...) spelled as escapes are dropped, as the raw ones are
        # refused: no store or MLLP peer downstream gets them
        return _HEX_CONTROL.sub("", text)
    # \H\ \N\ highlighting, \.sp\ \.in\ ... formatting, \Cxxyy\ \Mxxyyzz\ charset switches.
    return ""


def escape(value: str, seps: Separators = DEFAULT_SEPARATORS) -> str:
    """Text into a field: separators and line breaks become escape sequences, other control
    characters but TAB hex escapes ``\\Xhh\\``."""
    pattern, table = _escaping(seps)
    if pattern.search(value) is None:  # most values: nothing to escape
        return value
    return pattern.sub(lambda found: table[found.group()], value)


@functools.lru_cache(maxsize=32)
def _escaping(seps: Separators) -> tuple[re.Pattern[str], dict[str, str]]:
    """Per set of separators, once: the characters to escape and their sequences (a CR LF
    pair is one line break)."""
    e = seps.escape
    br = f"{e}.br{e}"
    table = {
        "\r\n": br,
        e: f"{e}E{e}",
        seps.field: f"{e}F{e}",
        seps.component: f"{e}S{e}",
        seps.subcomponent: f"{e}T{e}",
        seps.repetition: f"{e}R{e}",
        "\r": br,
        "\n": br,
        **{c: f"{e}X{ord(c):02X}{e}" for c in _ESCAPED_CONTROLS},
    }
    return re.compile("|".join(re.escape(key) for key in table)), table
