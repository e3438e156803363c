"""``novaza dicom import`` as an operator runs it, into a SQLite archive."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.imaging.dicom import make_instance, shipped, uid


def novaza(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
    env.update(NOVAZA_DATA_DIR=str(data_dir), NOVAZA_ENV="test")
    return subprocess.run(
        [sys.executable, "-m", "novaza_gateway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_files_and_folders_recursively_and_idempotently(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert novaza(data, "migrate").returncode == 0
    created = novaza(data, "tenants", "create", "site", "--name", "Site", "--activate")
    assert created.returncode == 0, created.stderr
    folder = tmp_path / "incoming" / "nested" / "deeper"
    folder.mkdir(parents=True)
    study = uid()
    for i in (1, 2):
        (folder / f"img{i}.dcm").write_bytes(make_instance(study=study, instance_number=i))
    (folder / "notes.txt").write_text("not dicom")
    single = tmp_path / "ct.dcm"
    shutil.copy(shipped("CT_small.dcm"), single)

    first = novaza(
        data, "dicom", "import", "--tenant", "site", str(tmp_path / "incoming"), str(single)
    )
    assert first.returncode == 3, first.stderr  # stored some, one file failed
    assert "stored 3 instance(s) (3 new)" in first.stdout
    assert "failed 1" in first.stdout
    again = novaza(data, "dicom", "import", "--tenant", "site", str(single))
    assert again.returncode == 0, again.stderr
    assert "stored 1 instance(s) (0 new)" in again.stdout

    conn = sqlite3.connect(data / "novaza.db")
    try:
        rows = conn.execute(
            "SELECT s.study_uid, s.num_instances FROM imaging_studies s ORDER BY s.num_instances"
        ).fetchall()
        actors = conn.execute(
            "SELECT DISTINCT actor FROM audit_events WHERE action = 'imaging.store'"
        ).fetchall()
    finally:
        conn.close()
    assert len(rows) == 2 and rows[1] == (study, 2)
    assert actors and actors[0][0].startswith("cli:")

    unknown = novaza(data, "dicom", "import", "--tenant", "nobody", str(single))
    assert unknown.returncode == 1
    assert "TENANT_UNKNOWN" in unknown.stderr
