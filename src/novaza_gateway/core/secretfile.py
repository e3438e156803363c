"""Development secrets kept in ``NOVAZA_DATA_DIR``: created once, never overwritten."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_once(path: Path, content: bytes) -> bytes:
    """The file's content, written first with ``content`` (mode 0600, synced to disk) when it
    does not exist. Workers starting at once race to link their copy in place: the first
    wins, and every one of them answers the winner's content."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: owner-only
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # atomic, and loses quietly to a process that came first
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return path.read_bytes()
