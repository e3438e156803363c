"""``multipart/related`` (RFC 2387) both ways, without I/O.

``MultipartReader`` is fed the body chunk by chunk and hands back events; it holds at most
one chunk plus a delimiter's length, so a 2 GB upload never sits in memory. ``part_header``
and ``closing`` frame the parts of a streamed answer.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

MAX_HEADER_BYTES = 16 * 1024
_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MultipartError(ValueError):
    """The body is not well-formed multipart."""


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"; boundary=x'`` -> media type, params."""
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        name, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"')
        params[name] = raw
    return media_type.strip().lower(), params


@dataclass(frozen=True, slots=True)
class PartStart:
    headers: dict[str, str]  # names lower-cased

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


class MultipartReader:
    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("boundary missing or too long")
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = bytearray(b"\r\n")  # so a body opening with the boundary matches too
        self._state = _PREAMBLE

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, chunk: bytes) -> list[Event]:
        if self._state == _DONE:
            return []  # the epilogue is ignored
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> None:
        if self._state != _DONE:
            raise MultipartError("the body ended before the closing boundary")

    def _step(self, events: list[Event]) -> bool:
        buf, delim = self._buffer, self._delimiter
        if self._state in (_PREAMBLE, _BODY):
            index = buf.find(delim)
            if index < 0:
                keep = len(delim) - 1
                if self._state == _BODY and len(buf) > keep:
                    events.append(PartData(bytes(buf[: len(buf) - keep])))
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            if self._state == _BODY:
                if index:
                    events.append(PartData(bytes(buf[:index])))
                events.append(PartEnd())
            del buf[: index + len(delim)]
            self._state = _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = _DONE
                buf.clear()
                return False
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 256:
                    raise MultipartError("garbage after a boundary")
                return False
            if buf[:end].strip(b" \t"):
                raise MultipartError("garbage after a boundary")
            del buf[: end + 2]
            self._state = _HEADERS
            return True
        if self._state == _HEADERS:
            if buf[:2] == b"\r\n":
                del buf[:2]
                events.append(PartStart({}))
                self._state = _BODY
                return True
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError("part headers too long")
                return False
            events.append(PartStart(_headers(bytes(buf[:end]))))
            del buf[: end + 4]
            self._state = _BODY
            return True
        return False


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError("malformed part header")
        headers[name.strip().lower()] = value.strip()
    return headers


def new_boundary() -> str:
    return f"novaza-{secrets.token_hex(12)}"


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    """The delimiter and headers that open a part (the first one too)."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


PART_SEPARATOR = b"\r\n"  # ends a part's data; the next part_header follows
