"""MLLP framing, byte by byte: noise, split reads, restarts, size limit."""

from __future__ import annotations

import pytest

from novaza_gateway.hl7.mllp import FrameTooLarge, MllpDecoder, frame


def test_frames_split_anywhere_and_many_per_read() -> None:
    stream = frame(b"MSH|one") + frame(b"MSH|two\rPID|1") + frame(b"")
    for size in (1, 2, 3, 7, len(stream)):
        decoder = MllpDecoder(1024)
        frames: list[bytes] = []
        for i in range(0, len(stream), size):
            frames += decoder.feed(stream[i : i + size])
        assert frames == [b"MSH|one", b"MSH|two\rPID|1", b""]
        assert not decoder.pending


def test_garbage_before_a_frame_is_skipped() -> None:
    decoder = MllpDecoder(1024)
    assert decoder.feed(b"GET / HTTP/1.1\r\n\r\n\x1c\r") == []
    assert decoder.feed(b"noise" + frame(b"MSH|x")) == [b"MSH|x"]
    assert decoder.skipped == len(b"GET / HTTP/1.1\r\n\r\n\x1c\r") + 5


def test_start_block_inside_a_frame_restarts_it() -> None:
    decoder = MllpDecoder(1024)
    assert decoder.feed(b"\x0bMSH|abandoned" + frame(b"MSH|kept")) == [b"MSH|kept"]


def test_end_block_needs_both_bytes() -> None:
    decoder = MllpDecoder(1024)
    assert decoder.feed(b"\x0bMSH|a\x1c") == []
    assert decoder.pending
    assert decoder.feed(b"\rrest") == [b"MSH|a"]
    assert decoder.feed(b"\x0bMSH|b\x1cX\x1c\r") == [b"MSH|b\x1cX"]


def test_frame_over_the_limit_is_refused_and_the_decoder_recovers() -> None:
    decoder = MllpDecoder(16)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x0b" + b"x" * 40)
    assert not decoder.pending
    assert decoder.feed(b"more" + frame(b"MSH|ok")) == [b"MSH|ok"]
    with pytest.raises(FrameTooLarge):
        decoder.feed(frame(b"y" * 17))
    assert decoder.feed(frame(b"z" * 16)) == [b"z" * 16]


def test_frames_before_an_oversized_one_are_kept() -> None:
    decoder = MllpDecoder(16)
    with pytest.raises(FrameTooLarge) as refused:
        decoder.feed(frame(b"MSH|one") + frame(b"MSH|two") + frame(b"y" * 17) + frame(b"MSH|3"))
    assert refused.value.frames == [b"MSH|one", b"MSH|two"]
