"""The streaming multipart/related reader, fed in every possible split."""

from __future__ import annotations

import pytest

from novaza_gateway.imaging.dicomweb.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)


def read_all(body: bytes, boundary: str, sizes: list[int]) -> list[tuple[dict[str, str], bytes]]:
    reader = MultipartReader(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    position = 0
    for size in [*sizes, len(body)]:
        chunk, position = body[position : position + size], position + size
        for event in reader.feed(chunk):
            if isinstance(event, PartStart):
                parts.append((event.headers, b""))
            elif isinstance(event, PartData):
                parts[-1] = (parts[-1][0], parts[-1][1] + event.data)
            else:
                assert isinstance(event, PartEnd)
        if position >= len(body):
            break
    reader.finish()
    return parts


PAYLOADS = [b"\x00\x01--bou\r\n--boundar", b"", b"plain\r\n\r\ntext"]


def body(preamble: bytes = b"") -> bytes:
    out = preamble
    for i, data in enumerate(PAYLOADS):
        lead = b"" if i == 0 and not preamble else b"\r\n"
        out += lead + b"--boundary\r\nContent-Type: application/dicom\r\nX-N: " + str(i).encode()
        out += b"\r\n\r\n" + data
    return out + b"\r\n--boundary--\r\nepilogue"


@pytest.mark.parametrize("preamble", [b"", b"\r\n", b"ignored preamble\r\n"])
def test_every_split_point_gives_the_same_parts(preamble: bytes) -> None:
    data = body(preamble)
    expected = [
        ({"content-type": "application/dicom", "x-n": str(i)}, p) for i, p in enumerate(PAYLOADS)
    ]
    for split in range(len(data)):
        assert read_all(data, "boundary", [split]) == expected, split
    assert read_all(data, "boundary", [1] * len(data)) == expected


def test_truncated_body_is_an_error() -> None:
    data = body()
    with pytest.raises(MultipartError):
        read_all(data[:-30], "boundary", [])


def test_garbage_after_boundary_is_an_error() -> None:
    with pytest.raises(MultipartError):
        read_all(b"--boundary junk\r\n\r\nx\r\n--boundary--", "boundary", [])


def test_content_type_parameters() -> None:
    media, params = parse_content_type(
        'Multipart/Related; type="application/dicom"; boundary="a b;c"; start=x'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a b;c", "start": "x"}
