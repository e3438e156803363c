"""The archive store's failure modes and housekeeping: a file the index lists but the store
lacks (an envelope before any byte, a log line without UIDs), a store that cannot be
reached, staged uploads of live and ended processes, owner-only permissions, and
``novaza dicom import`` into S3."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from novaza_gateway.config import Settings
from novaza_gateway.imaging.archive.staging import StagingArea
from novaza_gateway.migrate import upgrade
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway
from tests.imaging.archive_stores import S3Server, Store, make_store, moto_s3, store  # noqa: F401
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, uid

WADO = "/med/wado/studies"


async def stow(gw: Gateway, slug: str, parts: list[bytes]) -> None:
    body, ctype = multipart(parts)
    response = await gw.client.post(
        STOW, content=body, headers={**gw.auth(slug), "Content-Type": ctype}
    )
    assert response.status_code == 200, response.text


async def test_a_missing_file_is_an_envelope_before_the_answer_starts(
    tmp_path: Path,
    db_url: str,
    store: Store,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = gateway_settings(tmp_path / "data", db_url, **store.settings)
    async for gw in start_gateway(settings):
        await imaging_tenant(gw, "site")
        study, series = uid(), uid()
        files = [
            make_instance(study=study, series=series, rows=32, columns=32, instance_number=i)
            for i in (1, 2, 3)
        ]
        await stow(gw, "site", files)
        sops = [pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID for f in files]
        keys = {key: data for key, data in store.files(gw.data_dir).items()}
        by_sop = {sop: next(k for k in keys if sop in k) for sop in sops}
        store.replace(gw.data_dir, by_sop[sops[0]], None)  # gone
        store.replace(gw.data_dir, by_sop[sops[1]], files[1][:-100])  # shorter than indexed

        auth = gw.auth("site")
        base = f"{WADO}/{study}/series/{series}"
        for path in [
            f"{base}/instances/{sops[0]}",
            f"{base}/instances/{sops[1]}",
            base,
            f"/med/wado/studies/{study}",
            f"{base}/instances/{sops[0]}/metadata",
            f"{base}/metadata",
            f"{base}/instances/{sops[0]}/frames/1",
            f"{base}/instances/{sops[0]}/rendered",
            f"{base}/instances/{sops[0]}/bulkdata/7FE00010",
        ]:
            answer = await gw.client.get(path, headers=auth)
            assert answer.status_code == 500, (path, answer.status_code)
            assert answer.headers["content-type"] == "application/json", path
            assert answer.json()["code"] == "ARCHIVE_FILE_MISSING", path
        series_answer = await gw.client.get(base, headers=auth)
        assert series_answer.json()["details"] == {"missingFiles": 2}
        intact = await gw.client.get(f"{base}/instances/{sops[2]}", headers=auth)
        assert intact.status_code == 200

    logged = [r for r in caplog.records if r.getMessage() == "archive file missing"]
    assert logged
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert study not in text and series not in text
        assert not any(sop in text for sop in sops)


async def test_an_unreachable_s3_store_is_503_and_nothing_is_indexed(
    tmp_path: Path,
    db_url: str,
    moto_s3: S3Server,  # noqa: F811
) -> None:
    dead = {**moto_s3.settings(), "archive_s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    settings = gateway_settings(tmp_path / "data", db_url, archive_url="s3://nowhere/x", **dead)
    async for gw in start_gateway(settings):
        await imaging_tenant(gw, "site")
        study = uid()
        body, ctype = multipart([make_instance(study=study)])
        auth = gw.auth("site")
        stored = await gw.client.post(STOW, content=body, headers={**auth, "Content-Type": ctype})
        assert stored.status_code == 503, stored.text
        assert stored.json()["code"] == "UPSTREAM_UNAVAILABLE"
        assert stored.json()["details"] == {"reason": "archive_store"}
        found = await gw.client.get(f"/med/qido/studies?StudyInstanceUID={study}", headers=auth)
        assert found.json() == []
        ready = await gw.client.get("/health/ready")
        assert ready.json()["checks"]["imaging-archive-s3"]["status"] == "degraded"
        assert not list((tmp_path / "data").rglob("*.part"))


STAGER = """
import sys, time
from pathlib import Path
from novaza_gateway.imaging.archive.staging import StagingArea
staged = StagingArea(Path(sys.argv[1])).stage()
staged.write(b"an upload in flight")
print(staged.path, flush=True)
time.sleep(120)
"""


def test_a_sweep_keeps_live_uploads_and_clears_those_of_ended_processes(tmp_path: Path) -> None:
    """Two replicas staging on one shared directory: however old its file, a live one
    keeps it; once that process is killed, the next sweep removes it."""
    root = tmp_path / "shared" / ".staging"
    other = subprocess.Popen(
        [sys.executable, "-c", STAGER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None
        in_flight = Path(other.stdout.readline().strip())
        os.utime(in_flight, (1_000_000_000, 1_000_000_000))  # older than any cutoff
        here = StagingArea(root)
        mine = here.stage()
        assert here.sweep(0) == 0
        assert in_flight.exists() and mine.path.exists()
        other.send_signal(signal.SIGKILL)  # a crash: no cleanup of its own
        other.wait(timeout=10)
        assert here.sweep(3600) == 1
        assert not in_flight.exists() and not in_flight.parent.exists()
        assert mine.path.exists()
        here.close()
        assert not mine.path.exists() and sorted(root.iterdir()) == []
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(timeout=10)


async def test_the_data_dir_is_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    await asyncio.to_thread(upgrade, Settings(data_dir=data_dir))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "novaza.db").stat().st_mode) == 0o600
    async for gw in start_gateway(gateway_settings(data_dir, None)):  # type: ignore[arg-type]
        await imaging_tenant(gw, "site")
        await stow(gw, "site", [make_instance(study=uid())])
        (archived,) = (data_dir / "imaging").rglob("*.dcm")
        assert stat.S_IMODE(archived.stat().st_mode) == 0o600
        for path in data_dir.glob("novaza.db*"):  # the database, its WAL and shared memory
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def novaza(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
    return subprocess.run(
        [sys.executable, "-m", "novaza_gateway", *args],
        env={**clean, "NOVAZA_ENV": "test", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dicom_import_into_an_s3_store(
    tmp_path: Path,
    db_url: str,
    moto_s3: S3Server,  # noqa: F811
) -> None:
    s3 = make_store("s3", tmp_path, moto_s3)
    data_dir = tmp_path / "data"
    env = {
        "NOVAZA_DATA_DIR": str(data_dir),
        "NOVAZA_DATABASE_URL": db_url,
        "NOVAZA_ARCHIVE_URL": s3.settings["archive_url"],
        **moto_s3.env(),
    }
    created = novaza(env, "tenants", "create", "site", "--name", "Site", "--activate")
    assert created.returncode == 0, created.stderr
    folder = tmp_path / "incoming"
    folder.mkdir()
    files = [make_instance(study=uid(), instance_number=i) for i in (1, 2)]
    for i, data in enumerate(files):
        (folder / f"{i}.dcm").write_bytes(data)

    first = novaza(env, "dicom", "import", "--tenant", "site", str(folder))
    assert first.returncode == 0, first.stderr
    assert "stored 2 instance(s) (2 new)" in first.stdout
    assert sorted(s3.files(data_dir).values()) == sorted(files)
    again = novaza(env, "dicom", "import", "--tenant", "site", str(folder))
    assert "stored 2 instance(s) (0 new)" in again.stdout, again.stderr
    assert not list(data_dir.rglob("*.part")) and not list(data_dir.rglob("*.dcm"))
    assert not list((data_dir / "imaging-staging").iterdir())  # each run cleaned up after it


def test_archive_settings_are_checked_at_start() -> None:
    for bad in ["s3://", "http://bucket/x", "file://relative", "s3://Bucket_Name/x"]:
        with pytest.raises(ValueError):
            Settings(archive_url=bad)
    with pytest.raises(ValueError, match="go together"):
        Settings(archive_s3_access_key_id="only-the-id")
    assert httpx.URL(Settings(archive_url="s3://b-1/p/").archive_url or "").host == "b-1"
