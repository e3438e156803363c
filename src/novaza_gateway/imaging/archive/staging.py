"""Staged files: uploads being written, each in its process's own staging directory.

Several processes may stage under one root: the workers of one replica, and on a shared
``file://`` archive every replica. Each process writes under ``<root>/<owner>/`` and holds an
exclusive ``flock`` on ``<root>/<owner>.lock`` for its lifetime. A sweep removes only the
files of owners whose lock it can take, that is of processes that have ended: an upload in
flight is never removed, however long it takes (ADR 0038). The kernel drops the lock of a
process that crashed; on NFS v4 the server does once its lease expires.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from novaza_gateway.core.ids import new_id

FILE_MODE = 0o600  # archived DICOM is PHI: owner only, whatever the umask
DIR_MODE = 0o700


class StagedFile:
    """A temp file being written, hashing as it goes. Plain blocking writes: the caller
    writes request chunks (page-cache writes, microseconds); fsync happens on ``close``
    when the file itself becomes the archived copy (``durable``)."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.size = 0
        self.durable = durable
        self._hash = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.durable:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class StagingArea:
    def __init__(self, root: Path, *, durable: bool = True) -> None:
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.root = root
        self.durable = durable
        self.owner = new_id()
        self._lock = _hold_lock(root, self.owner)
        self.dir = root / self.owner
        self.dir.mkdir(mode=DIR_MODE)

    def stage(self) -> StagedFile:
        return StagedFile(self.dir / f"{new_id()}.part", durable=self.durable)

    def sweep(self, older_than_seconds: float) -> int:
        """Remove what ended processes left behind; files of the flat layout before owner
        directories, and directories whose lock is gone, only past ``older_than_seconds``."""
        cutoff = time.time() - older_than_seconds
        removed = _remove_older(self.root.glob("*.part"), cutoff)
        for lock in self.root.glob("*.lock"):
            if lock.stem != self.owner:
                removed += _sweep_owner(self.root, lock)
        for folder in self.root.iterdir():
            if folder.is_dir() and not (self.root / f"{folder.name}.lock").exists():
                removed += _remove_older(folder.glob("*.part"), cutoff)
        return removed

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)  # whatever is left is no upload's
        (self.root / f"{self.owner}.lock").unlink(missing_ok=True)
        os.close(self._lock)


def _hold_lock(root: Path, owner: str) -> int:
    """Locked before it appears under its name (created aside, then renamed), so a
    sweeper never finds the lock of a live owner free."""
    temp = root / f".{owner}.new"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(temp, root / f"{owner}.lock")
    return fd


def _sweep_owner(root: Path, lock: Path) -> int:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return 0  # another sweeper took it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its owner lives: its uploads are in flight
        folder = root / lock.stem
        removed = len(list(folder.glob("*.part"))) if folder.is_dir() else 0
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
        return removed
    finally:
        os.close(fd)


def _remove_older(paths: Iterable[Path], cutoff: float) -> int:
    removed = 0
    for path in paths:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
