"""``NOVAZA_ARCHIVE_URL`` to a store: a directory (default ``DATA_DIR/imaging``, or a
``file://`` path every replica mounts) or S3-compatible storage (``s3://bucket/prefix``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from novaza_gateway.config import ArchiveConfig
from novaza_gateway.imaging.archive.filesystem import FileSystemStorage
from novaza_gateway.imaging.archive.s3 import S3Storage
from novaza_gateway.imaging.archive.storage import ArchiveStorage


def open_archive(config: ArchiveConfig, data_dir: Path) -> ArchiveStorage:
    url = urlsplit(config.url or "")
    if url.scheme == "s3":
        # uploads stage on this replica's own disk: only the store is shared
        staging = data_dir / "imaging-staging"
        return S3Storage(url.netloc, unquote(url.path), staging, config)
    if url.scheme == "file":
        return FileSystemStorage(Path(unquote(url.path)))
    return FileSystemStorage(data_dir / "imaging")
