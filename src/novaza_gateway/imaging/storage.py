"""Where DICOM files live: the storage interface and its filesystem implementation.

A file arrives as a *staged* temp file (written as the upload streams in), is inspected, and
is committed under its key: fsync the file, rename it into place, fsync the directory. The
index row that points at it is committed after that, so an acknowledged instance is always
on disk; a crash in between leaves at most an unreferenced file, never a dangling row.
An object store can implement the same interface later (stage locally, upload on commit).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Protocol

import anyio

CHUNK_BYTES = 1024 * 1024  # per-chunk overhead dominates below this; memory stays flat


class StagedFile:
    """A temp file being written, hashing as it goes. Plain blocking writes: the caller
    writes request chunks (page-cache writes, microseconds); fsync happens on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = path.open("wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
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


class ArchiveStorage(Protocol):
    def stage(self) -> StagedFile: ...

    async def commit(self, staged: StagedFile, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path: ...

    def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]: ...


class FileSystemStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    def stage(self) -> StagedFile:
        return StagedFile(self.staging / f"{uuid.uuid4().hex}.part")

    def sweep_staging(self, older_than_seconds: float) -> int:
        """Remove staged files a crash left behind (older than any upload in flight)."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for leftover in self.staging.glob("*.part"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    async def commit(self, staged: StagedFile, key: str) -> None:
        await anyio.to_thread.run_sync(self._commit, staged, key)

    def _commit(self, staged: StagedFile, key: str) -> None:
        staged.close()
        target = self.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)
        _fsync_dir(target.parent)

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def local_path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or key.startswith("."):
            raise ValueError("storage key escapes the archive")
        return path

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The file's bytes in chunks; memory stays at one chunk however large the file."""
        remaining = length
        async with await anyio.open_file(self.local_path(key), "rb") as handle:
            if offset:
                await handle.seek(offset)
            while remaining is None or remaining > 0:
                size = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
                chunk = await handle.read(size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
