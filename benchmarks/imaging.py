"""Imaging benchmarks against a real ``novaza serve`` process, each with its baseline in the
same run.

1. WADO-RS retrieve of a ~50 MB study through the gateway vs reading the same archive files
   straight from disk (throughput ratio; the server's peak RSS before and after).
2. QIDO-RS study search with ``limit=100`` over 100,000 indexed studies on PostgreSQL
   (p50/p99 per query shape). Needs PostgreSQL at ``NOVAZA_BENCH_PG`` (default
   ``postgresql://postgres@127.0.0.1:5432/test``); skipped when unreachable.

Run: ``.venv/bin/python benchmarks/imaging.py [--studies 100000] [--mb 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import free_port
from tests.imaging.dicom import make_instance, multipart, uid

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import TENANT_SCOPES

NOVAZA = [sys.executable, "-m", "novaza_gateway"]
PG = os.environ.get("NOVAZA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def env_for(data_dir: Path, db_url: str | None, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
    env.update(NOVAZA_DATA_DIR=str(data_dir), NOVAZA_PORT=str(port), NOVAZA_LOG_LEVEL="WARNING")
    if db_url:
        env["NOVAZA_DATABASE_URL"] = db_url
    return env


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([*NOVAZA, *args], env=env, check=True, capture_output=True, timeout=120)


@contextmanager
def serve(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*NOVAZA, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def setup_tenant(base: str, data_dir: Path, slug: str) -> dict[str, str]:
    admin = devkeys.mint_token(data_dir, subject="bench", scopes=["platform:admin"], tenant=None)
    response = httpx.put(
        f"{base}/admin/tenants/{slug}",
        json={"rateLimit": {"ratePerSecond": 100000, "burst": 100000}},
        headers={"Authorization": f"Bearer {admin}"},
    )
    response.raise_for_status()
    token = devkeys.mint_token(data_dir, subject="bench", scopes=list(TENANT_SCOPES), tenant=slug)
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------ WADO


def bench_wado(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "data", free_port()
        env = env_for(data_dir, None, port)
        cli(env, "migrate")
        cli(
            env,
            "tenants",
            "create",
            "bench",
            "--name",
            "Bench",
            "--addon",
            "medical_imaging",
            "--activate",
        )
        study, series = uid(), uid()
        side = 1024  # 1024 x 1024 x 16 bit = 2 MiB per instance
        count = max(1, megabytes // 2)
        with serve(env, port) as proc:
            base = f"http://127.0.0.1:{port}"
            auth = setup_tenant(base, data_dir, "bench")
            for start in range(0, count, 5):
                parts = [
                    make_instance(
                        study=study, series=series, rows=side, columns=side, instance_number=i
                    )
                    for i in range(start, min(count, start + 5))
                ]
                body, ctype = multipart(parts)
                response = httpx.post(
                    f"{base}/med/stow/studies",
                    content=body,
                    headers={**auth, "Content-Type": ctype},
                    timeout=120,
                )
                response.raise_for_status()
            files = sorted((data_dir / "imaging").rglob("*.dcm"))
            total = sum(f.stat().st_size for f in files)
            rss_before = rss_kib(proc.pid, "VmRSS")
            gateway_rates, direct_rates = [], []
            for _ in range(5):
                began, seen = time.perf_counter(), 0
                with httpx.stream(
                    "GET", f"{base}/med/wado/studies/{study}", headers=auth, timeout=120
                ) as response:
                    for chunk in response.iter_raw(256 * 1024):
                        seen += len(chunk)
                gateway_rates.append(seen / (time.perf_counter() - began))
                began, read = time.perf_counter(), 0
                for path in files:
                    with path.open("rb") as handle:
                        while chunk := handle.read(256 * 1024):
                            read += len(chunk)
                direct_rates.append(read / (time.perf_counter() - began))
            curl_rates = []
            token = auth["Authorization"]
            for _ in range(5 if shutil.which("curl") else 0):
                began = time.perf_counter()
                subprocess.run(
                    [
                        "curl",
                        "-sf",
                        "-o",
                        "/dev/null",
                        "-H",
                        f"Authorization: {token}",
                        f"{base}/med/wado/studies/{study}",
                    ],
                    check=True,
                )
                curl_rates.append(total / (time.perf_counter() - began))
            peak = rss_kib(proc.pid)
        gw, direct = statistics.median(gateway_rates), statistics.median(direct_rates)
        print(f"WADO study retrieve: {count} instances, {total / 1e6:.1f} MB")
        print(f"  gateway  {gw / 1e6:8.1f} MB/s (median of 5, one client over loopback)")
        if curl_rates:
            print(f"  curl     {statistics.median(curl_rates) / 1e6:8.1f} MB/s (curl client)")
        print(f"  direct   {direct / 1e6:8.1f} MB/s (same files, page cache warm)")
        print(f"  ratio    {gw / direct:8.2f}")
        print(
            f"  server RSS {rss_before / 1024:.0f} MiB before retrieves, peak {peak / 1024:.0f} MiB"
        )


# ------------------------------------------------------------------------------ QIDO

FAMILY = ["Smith", "Müller", "García", "Nguyen", "Kowalski", "Dubois", "Rossi", "Tanaka"]
GIVEN = ["Anna", "José", "Li", "Olga", "Marc", "Sara", "Yuki", "Ben"]
MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "NM", "PT"]


async def load_studies(dsn: str, tenant_id: str, count: int) -> None:
    from novaza_gateway.imaging.dicomweb.attributes import normalize_name

    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        patients, studies = [], []
        for p in range(count // 10):
            name = f"{random.choice(FAMILY)}^{random.choice(GIVEN)}"
            patients.append(
                (
                    uuid.uuid4().hex,
                    tenant_id,
                    f"P{p:06d}",
                    name,
                    normalize_name(name),
                    "19700101",
                    "O",
                    now,
                )
            )
        for s in range(count):
            pk, _, pid, name, norm, *_ = patients[s % len(patients)]
            day = datetime.fromordinal(738000 + random.randrange(2000)).strftime("%Y%m%d")
            modality = random.choice(MODALITIES)
            studies.append(
                (
                    uuid.uuid4().hex,
                    tenant_id,
                    pk,
                    f"1.2.826.0.1.{s}.{random.randrange(10**9)}",
                    pid,
                    name,
                    norm,
                    day,
                    f"{random.randrange(24):02d}0000.000000",
                    f"ACC{s:07d}",
                    "1",
                    f"{modality} study",
                    "Welby^Marcus",
                    "WELBY MARCUS",
                    f"|{modality}|",
                    1,
                    1,
                    "pending",
                    "{}",
                    now,
                    now,
                )
            )
        await conn.copy_records_to_table(
            "imaging_patients",
            records=patients,
            columns=[
                "id",
                "tenant_id",
                "patient_id",
                "patient_name",
                "patient_name_norm",
                "birth_date",
                "sex",
                "created_at",
            ],
        )
        columns = [
            "id",
            "tenant_id",
            "patient_pk",
            "study_uid",
            "patient_id",
            "patient_name",
            "patient_name_norm",
            "study_date",
            "study_time",
            "accession_number",
            "study_id",
            "study_description",
            "referring_physician",
            "referring_physician_norm",
            "modalities",
            "num_series",
            "num_instances",
            "qc_status",
            "attributes",
            "created_at",
            "updated_at",
        ]
        placeholders = ", ".join(f"${i + 1}" for i in range(len(columns)))
        await conn.executemany(
            f"INSERT INTO imaging_studies ({', '.join(columns)}) VALUES ({placeholders})",
            studies,
        )
        await conn.execute("ANALYZE imaging_studies")
    finally:
        await conn.close()


def bench_qido(count: int) -> None:
    name = f"novaza_bench_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"QIDO benchmark skipped: PostgreSQL not reachable ({exc})")
        return
    dsn = PG.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir, port = Path(tmp) / "data", free_port()
            env = env_for(data_dir, dsn, port)
            cli(env, "migrate")
            cli(
                env,
                "tenants",
                "create",
                "bench",
                "--name",
                "Bench",
                "--addon",
                "medical_imaging",
                "--activate",
            )
            tenant_id = asyncio.run(_tenant_id(dsn))
            began = time.perf_counter()
            asyncio.run(load_studies(dsn, tenant_id, count))
            print(f"QIDO: {count} studies loaded in {time.perf_counter() - began:.1f} s")
            shapes = {
                "newest 100": lambda: {},
                "PatientID": lambda: {"PatientID": f"P{random.randrange(count // 10):06d}"},
                "StudyDate range": lambda: {"StudyDate": "20220101-20220131"},
                "ModalitiesInStudy": lambda: {"ModalitiesInStudy": random.choice(MODALITIES)},
                "PatientName fuzzy": lambda: {"PatientName": "mull", "fuzzymatching": "true"},
                "PatientName wildcard": lambda: {"PatientName": "Sm*"},
                "AccessionNumber": lambda: {"AccessionNumber": f"ACC{random.randrange(count):07d}"},
            }
            with serve(env, port):
                base = f"http://127.0.0.1:{port}"
                auth = setup_tenant(base, data_dir, "bench")
                with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
                    for label, params in shapes.items():
                        for _ in range(5):  # warm up
                            client.get("/med/qido/studies", params={**params(), "limit": 100})
                        timings = []
                        for _ in range(100):
                            t0 = time.perf_counter()
                            r = client.get("/med/qido/studies", params={**params(), "limit": 100})
                            timings.append((time.perf_counter() - t0) * 1000)
                            r.raise_for_status()
                        timings.sort()
                        print(
                            f"  {label:22s} p50 {timings[49]:6.1f} ms  p99 {timings[98]:6.1f} ms"
                            f"  ({len(r.json())} results)"
                        )
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _tenant_id(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT id FROM tenants WHERE slug = 'bench'"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--only", choices=["wado", "qido"])
    args = parser.parse_args()
    random.seed(4)
    if args.only in (None, "wado"):
        bench_wado(args.mb)
    if args.only in (None, "qido"):
        bench_qido(args.studies)


if __name__ == "__main__":
    main()
