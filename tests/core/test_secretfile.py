"""Development secrets: created once, 0600, the same for every process that races to it."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from novaza_gateway.core.secretfile import create_once


def _create(path: str, content: bytes) -> bytes:
    return create_once(Path(path), content)


def test_the_first_writer_wins_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret"
    contents = [f"secret-{n}".encode() for n in range(8)]
    with ProcessPoolExecutor(4) as pool:
        answers = list(pool.map(_create, [str(path)] * 8, contents))
    assert len(set(answers)) == 1 and answers[0] in contents
    assert path.read_bytes() == answers[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert create_once(path, b"another") == answers[0]  # never overwritten
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]  # no temp files left
