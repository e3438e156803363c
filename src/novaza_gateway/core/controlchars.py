"""C0 control characters and DEL stop at the edge (ADR 0007, docs/security.md).

PostgreSQL's text types cannot hold NUL (the driver fails, the caller saw a 500), and no
identifier, name or filter the gateway takes has a use for a control character. Decoded path
and query values may hold none of U+0000-U+001F or U+007F; JSON strings none of U+0000-U+001F
but TAB, LF and CR (notes and HL7 text carry line breaks). Binary bodies (DICOM) are not text
and are not scanned.

The checks are built for the hot path: a request with a printable path and no query costs
one ``str.isprintable()``; a query string one regular-expression scan of its raw bytes; a
JSON body chunk one regular-expression pass (a raw control byte is invalid JSON, which the
parser refuses; only the ``\\u0000``-style escapes need looking for): under a third of
parsing the same body with orjson.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.types import Scope

from novaza_gateway.core.errors import InvalidCharacters

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Raw control bytes, or a percent escape that decodes to one: a superset, confirmed on the
# decoded values (``%250a`` is the text "%0a", not a line feed).
_QUERY_SUSPECT = re.compile(rb"[\x00-\x1f\x7f]|%[01][0-9A-Fa-f]|%7[Ff]")
# A JSON escape for a C0 control: \u0000-\u001f, \b, \f (\t \n \r are allowed below).
_JSON_ESCAPE = re.compile(rb"\\(?:u00[01][0-9A-Fa-f]|[bf])")
_JSON_ALLOWED = frozenset({b"\\u0009", b"\\u000a", b"\\u000A", b"\\u000d", b"\\u000D"})
_BACKSLASH = 0x5C
_LONGEST_ESCAPE = 6  # \u001f


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def printable(text: str) -> str:
    """The text with its control characters escaped, safe to echo in an error or a log."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def refused(scope: Scope) -> InvalidCharacters | None:
    """The error for a request whose decoded path or query holds a control character."""
    path: str = scope["path"]
    if not path.isprintable() and has_control(path):
        return InvalidCharacters("path", _path_parameter(scope))
    query: bytes = scope.get("query_string", b"")
    if query and _QUERY_SUSPECT.search(query) is not None:
        # decoded as Starlette decodes it for the route
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if has_control(name) or has_control(value):
                return InvalidCharacters("query", printable(name))
    return None


def _path_parameter(scope: Scope) -> str | None:
    for name, value in scope.get("path_params", {}).items():
        if isinstance(value, str) and has_control(value):
            return str(name)
    return None  # no route matched: the path itself


def json_control_escape(buf: bytes) -> bool:
    """Whether this JSON text escapes a control character other than TAB, LF, CR in a
    string (a ``\\\\u0000`` is an escaped backslash and the text "u0000": not one)."""
    for match in _JSON_ESCAPE.finditer(buf):  # one pass; faster than substring tests here
        if match.group() in _JSON_ALLOWED:
            continue
        start = before = match.start()
        while before > 0 and buf[before - 1] == _BACKSLASH:
            before -= 1
        if (start - before) % 2 == 0:  # not itself escaped by a backslash before it
            return True
    return False


class JsonScan:
    """``json_control_escape`` over a body that arrives in chunks: an escape may straddle
    two, so the tail of one (with the backslashes before it, for their parity) is kept."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bool:
        buf = self._tail + chunk if self._tail else chunk
        if b"\\" not in buf:
            self._tail = b""
            return False
        if json_control_escape(buf):
            return True
        start = max(0, len(buf) - (_LONGEST_ESCAPE - 1))
        while start > 0 and buf[start - 1] == _BACKSLASH:
            start -= 1
        self._tail = buf[start:]
        return False


def scans_as_json(content_type: str | None) -> bool:
    """Bodies FastAPI reads as JSON: ``application/json``, ``*/*+json``, or no type at all."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
