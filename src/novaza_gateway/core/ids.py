"""Row ids: random version-4 UUIDs as 32 hex digits, what ``uuid.uuid4().hex`` gives.

``uuid.uuid4()`` costs ~1.6 us (a kernel call and a ``UUID`` object) and HL7 intake makes
six to eight ids per message. Here the kernel's random bytes (the same CSPRNG, so ids stay
unguessable) are drawn 4 KiB at a time and formatted in bulk: ~0.3 us an id. The pool is a
deque (``popleft`` and ``extend`` are atomic, so threads may share it) and a forked child
empties it, so two workers never hand out the same ids.
"""

from __future__ import annotations

import os
from collections import deque

_PER_DRAW = 128
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 9562 variant 10xx
_pool: deque[str] = deque()


def _draw() -> None:
    digits = os.urandom(16 * _PER_DRAW).hex()
    _pool.extend(
        f"{digits[i : i + 12]}4{digits[i + 13 : i + 16]}{_VARIANT[digits[i + 16]]}"
        f"{digits[i + 17 : i + 32]}"
        for i in range(0, 32 * _PER_DRAW, 32)
    )


def new_id() -> str:
    """A fresh random id (UUID version 4, 32 lowercase hex digits)."""
    while True:
        try:
            return _pool.popleft()
        except IndexError:  # another thread may empty a fresh draw first: draw again
            _draw()


os.register_at_fork(after_in_child=_pool.clear)
