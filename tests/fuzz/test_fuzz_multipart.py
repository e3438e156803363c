"""STOW-RS multipart framing: the parts a body yields do not depend on how the network
chunks it, and a malformed body is ``MultipartError`` (400), never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from novaza_gateway.imaging.dicomweb.multipart import (
    PART_SEPARATOR,
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    closing,
    parse_content_type,
    part_header,
)
from tests.fuzz.conftest import FUZZ

BOUNDARY = "nvz-fuzz-boundary"


def read(body: bytes, cuts: list[int], boundary: str = BOUNDARY) -> list[bytes]:
    """The parts' payloads, feeding ``body`` cut at ``cuts``."""
    reader = MultipartReader(boundary)
    parts: list[bytes] = []
    current: bytearray | None = None
    start = 0
    for end in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        for event in reader.feed(body[start:end]):
            if isinstance(event, PartStart):
                current = bytearray()
            elif isinstance(event, PartData):
                assert current is not None
                current += event.data
            elif isinstance(event, PartEnd):
                assert current is not None
                parts.append(bytes(current))
                current = None
        start = max(start, end)
    reader.finish()
    return parts


def body_of(payloads: list[bytes]) -> bytes:
    parts = [part_header(BOUNDARY, "application/dicom") + p for p in payloads]
    return PART_SEPARATOR.join(parts) + closing(BOUNDARY)


@FUZZ
@given(
    st.lists(
        st.binary(max_size=300).map(lambda b: b.replace(b"--" + BOUNDARY.encode(), b"")),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(0, 10_000), max_size=12),
)
@example([b"\r\n--nvz-fuzz-boundar"], [5])
def test_parts_do_not_depend_on_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    body = body_of(payloads)
    if any(("\r\n--" + BOUNDARY).encode() in p for p in payloads):
        return  # a payload holding the delimiter is a different body
    assert read(body, cuts) == payloads


@FUZZ
@given(st.binary(max_size=1024), st.lists(st.integers(0, 2048), max_size=6))
@example(b"--nvz-fuzz-boundary\r\n" + b"x" * 20000, [])
def test_malformed_bodies_are_multipart_errors(body: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(MultipartError):
        read(body, cuts)


@FUZZ
@given(st.text(max_size=200))
@example('multipart/related; type="application/dicom"; boundary=')
def test_content_type_parsing(value: str) -> None:
    try:
        media, params = parse_content_type(value)
    except MultipartError:
        return
    assert isinstance(media, str) and isinstance(params, dict)
