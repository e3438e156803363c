"""What every archive store offers: the ``ArchiveStorage`` interface and its failures.

A file arrives as a *staged* temp file (``staging.StagedFile``, written as the upload
streams in), is inspected, and is committed under its key; the index row that points at it
is committed after that, so an acknowledged instance is always in the store (ADR 0030). A
crash in between leaves at most an unreferenced file, never a dangling row.

Keys are ``<tenant id>/<study>/<series>/<sop>.<sha256[:16]>.dcm`` in every store (ADR 0037).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import BinaryIO, Protocol

from novaza_gateway.imaging.archive.staging import StagedFile
from novaza_gateway.imaging.errors import ArchiveFileMissing, ArchiveStoreUnavailable

log = logging.getLogger("novaza.imaging.archive")

CHUNK_BYTES = 1024 * 1024  # per-chunk overhead dominates below this; memory stays flat


class ArchiveStorage(Protocol):
    kind: str  # "filesystem" or "s3": for logs and the readiness probe

    def stage(self) -> StagedFile:
        """A new temp file to write an upload into (unique, owned by this process)."""
        ...

    async def commit(self, staged: StagedFile, key: str) -> None:
        """Make the staged file durable under ``key``; the staged file is gone after."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def missing(self, sizes: Mapping[str, int]) -> list[str]:
        """The keys whose file is absent or shorter than the size asked for: checked before
        an answer that announces its length starts (none of the bytes are read)."""
        ...

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes, ``length`` of them from ``offset`` (else to the end), in chunks of
        at most ``CHUNK_BYTES``; ``ArchiveFileTruncated`` when the file ends before."""
        ...

    def open(self, key: str, size: int) -> BinaryIO:
        """A seekable reader of the file (``size`` bytes, from the index) for pydicom.
        Blocking: call it, and read from it, in a worker thread."""
        ...

    def sweep_staging(self, older_than_seconds: float) -> int: ...

    async def check(self) -> str | None:
        """The readiness probe: raises when the store cannot be reached."""
        ...

    async def aclose(self) -> None: ...


class ArchiveFileTruncated(OSError):
    """An archived file is shorter than its index says."""


def missing_file(key: str, count: int = 1) -> ArchiveFileMissing:
    """The error for a file the index lists but the store lacks, logged without the key's
    UIDs: the tenant and the content hash (the key's suffix) find the file."""
    parts = key.rsplit(".", 2)
    content = parts[1] if len(parts) == 3 else ""
    log.error(
        "archive file missing",
        extra={"tenant": key.partition("/")[0], "sha256_prefix": content, "files": count},
    )
    return ArchiveFileMissing(details={"missingFiles": count})


def store_unavailable(kind: str, exc: BaseException) -> ArchiveStoreUnavailable:
    log.error("archive store unavailable", extra={"store": kind, "error": type(exc).__name__})
    return ArchiveStoreUnavailable()
