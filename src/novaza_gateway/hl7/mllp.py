"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): ``0x0B payload 0x1C 0x0D``. Pure.

The decoder skips bytes before a start block, restarts on a start block inside an
unfinished frame (the sender gave up on it), and refuses frames over a size limit.
"""

from __future__ import annotations

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
# Never in a payload we send: a start block, an end block, and 0x1D (group separator), which
# some receivers also treat as framing. Outgoing fields escape them (``er7.escape``).
FRAMING_CHARACTERS = "\x0b\x1c\x1d"


class FrameTooLarge(Exception):
    def __init__(self, message: str, frames: list[bytes]) -> None:
        super().__init__(message)
        self.frames = frames  # completed before the one refused, in order


def frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK


class MllpDecoder:
    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self.skipped = 0  # bytes discarded outside frames (noise, stray separators)

    @property
    def pending(self) -> bool:
        """True while a frame is started and not finished."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes as they arrive -> every frame they complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start < 0:
                    self.skipped += len(self._buffer)
                    self._buffer.clear()
                    return frames
                self.skipped += start
                del self._buffer[: start + 1]
                self._in_frame = True
            end = self._buffer.find(END_BLOCK)
            restart = self._buffer.find(START_BLOCK)
            if restart >= 0 and (end < 0 or restart < end):
                self.skipped += restart
                del self._buffer[: restart + 1]
                continue
            if end < 0:
                if len(self._buffer) > self.max_frame_bytes + 1:
                    self._buffer.clear()
                    self._in_frame = False
                    raise FrameTooLarge(f"frame over {self.max_frame_bytes} bytes", frames)
                return frames
            if end > self.max_frame_bytes:
                del self._buffer[: end + len(END_BLOCK)]
                self._in_frame = False
                raise FrameTooLarge(f"frame over {self.max_frame_bytes} bytes", frames)
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[: end + len(END_BLOCK)]
            self._in_frame = False
