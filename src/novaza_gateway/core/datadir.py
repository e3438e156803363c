"""``NOVAZA_DATA_DIR`` is owner-only: created 0700, the SQLite database in it 0600.

SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode, so making the
file (before the engine does, with the default umask) keeps all three private.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy.engine import make_url

DIR_MODE = 0o700
FILE_MODE = 0o600


def prepare(data_dir: Path, database_url: str) -> None:
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    database = sqlite_file(database_url)
    if database is None:
        return
    database.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(database, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        with contextlib.suppress(PermissionError):  # not ours: leave it as its owner set it
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def sqlite_file(database_url: str) -> Path | None:
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):  # a URI filename: SQLite opens it itself
        return None
    return Path(url.database)
