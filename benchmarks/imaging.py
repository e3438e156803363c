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
import contextlib
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from readiness import wait_healthy

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
        wait_healthy(f"http://127.0.0.1:{port}", proc)
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

BENCH_DIR = Path(__file__).resolve().parent
CHUNK = 1024 * 1024


@dataclass
class Server:
    """A process answering the study, and what it costs."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)


def pull(port: int, path: str, headers: dict[str, str]) -> tuple[int, float, float]:
    """One GET over a raw socket (HTTP/1.1, then close): body bytes, seconds to the first byte
    and to the last. Each read lands in one reused buffer: the client costs far less than the
    server."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    request = "\r\n".join([*lines, *(f"{k}: {v}" for k, v in headers.items()), "", ""])
    buffer = bytearray(CHUNK)
    view, received, head, first = memoryview(buffer), 0, b"", 0.0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        began = time.perf_counter()
        conn.sendall(request.encode())
        while got := conn.recv_into(view):
            first = first or time.perf_counter() - began
            if len(head) < 4096 and b"\r\n\r\n" not in head:
                head += bytes(buffer[:got])
            received += got
        elapsed = time.perf_counter() - began
    status, _, rest = head.partition(b"\r\n")
    header_bytes, _, _ = rest.partition(b"\r\n\r\n")
    if b" 200 " not in status:
        raise RuntimeError(f"{status.decode()} from port {port}")
    body = received - len(status) - len(header_bytes) - 6
    declared = re.search(rb"(?im)^content-length:\s*(\d+)", header_bytes)
    if declared is not None and int(declared.group(1)) != body:
        raise RuntimeError(f"port {port}: {body} bytes, Content-Length {declared.group(1)!r}")
    if declared is None and not re.search(rb"(?im)^transfer-encoding:\s*chunked", header_bytes):
        raise RuntimeError(f"port {port}: neither Content-Length nor chunked")
    return body, first, elapsed  # chunked: framing included (a few bytes per MiB)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's live threads, in nanoseconds from schedstat (``/proc/PID/stat``
    counts 10 ms ticks: too coarse for one retrieve)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        for task in Path(f"/proc/{pid}/task").iterdir():  # the threads started so far too
            os.sched_setaffinity(int(task.name), {cpu})


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def start_baseline(kind: str, files: list[Path]) -> Server:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "wado_servers.py"), kind, str(port)]
    proc = subprocess.Popen([*command, *map(str, files)], stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    return Server(kind, port, proc)


def load_study(base: str, auth: dict[str, str], megabytes: int, side: int) -> str:
    """At least ``megabytes`` of ``side`` x ``side`` 16-bit instances (1024: 2 MiB each, 512:
    a CT slice's 0.5 MiB), stored by STOW about 10 MB per request."""
    study, series = uid(), uid()
    pixels = 2 * side * side
    count, per_request = -(-megabytes * 10**6 // pixels), max(1, 10**7 // pixels)
    for start in range(0, count, per_request):
        parts = [
            make_instance(study=study, series=series, rows=side, columns=side, instance_number=i)
            for i in range(start, min(count, start + per_request))
        ]
        body, ctype = multipart(parts)
        response = httpx.post(
            f"{base}/med/stow/studies",
            content=body,
            headers={**auth, "Content-Type": ctype},
            timeout=120,
        )
        response.raise_for_status()
    return study


def read_direct(files: list[Path]) -> float:
    """Seconds to read the files in this process, 1 MiB at a time (page cache warm)."""
    buffer = bytearray(CHUNK)
    began = time.perf_counter()
    for path in files:
        with path.open("rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    return time.perf_counter() - began


@dataclass
class WadoRun:
    files: list[Path]
    total: int
    servers: list[Server]
    direct: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # other processes' CPU, in CPUs


def measure(run: WadoRun, rounds: int, pinned: bool) -> None:
    """Rounds interleave the servers and the direct read, so each ratio compares neighbours."""
    if pinned:
        for server in run.servers:
            pin(server.proc.pid, 0)
        pin(os.getpid(), 1)
    for server in run.servers:  # warm-up: page cache, connections, the tenant cache
        pull(server.port, server.path, server.headers)
    mine = [os.getpid(), *(s.proc.pid for s in run.servers)]
    for _ in range(rounds):
        busy0, own0, began = busy_seconds(), sum(map(cpu_seconds, mine)), time.perf_counter()
        for server in run.servers:
            cpu0 = cpu_seconds(server.proc.pid)
            size, first, seconds = pull(server.port, server.path, server.headers)
            server.cpu_ms.append((cpu_seconds(server.proc.pid) - cpu0) * 1000)
            server.rates.append(size / seconds)
            server.ttfb_ms.append(first * 1000)
        run.direct.append(run.total / read_direct(run.files))
        others = busy_seconds() - busy0 - (sum(map(cpu_seconds, mine)) - own0)
        run.others.append(max(0.0, others) / (time.perf_counter() - began))


def bench_wado(
    megabytes: int, side: int, rounds: int, pinned: bool, gateway_src: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "data", free_port()
        env = env_for(data_dir, None, port)
        if gateway_src:  # e.g. an older commit's src/, for a before/after on one machine
            env["PYTHONPATH"] = gateway_src
        cli(env, "migrate")
        tenant = ["--name", "Bench", "--addon", "medical_imaging", "--activate"]
        cli(env, "tenants", "create", "bench", *tenant)
        with serve(env, port) as proc:
            base = f"http://127.0.0.1:{port}"
            auth = setup_tenant(base, data_dir, "bench")
            study = load_study(base, auth, megabytes, side)
            files = sorted((data_dir / "imaging").rglob("*.dcm"))
            gateway = Server("gateway", port, proc, f"/med/wado/studies/{study}", auth)
            baselines = [start_baseline(kind, files) for kind in ("bare", "raw")]
            try:
                run = WadoRun(files, sum(f.stat().st_size for f in files), [gateway, *baselines])
                rss_before = {s.name: rss_kib(s.proc.pid, "VmRSS") for s in run.servers}
                measure(run, rounds, pinned)
                peaks = {s.name: rss_kib(s.proc.pid) for s in run.servers}
            finally:
                for baseline in baselines:
                    baseline.proc.terminate()
                    baseline.proc.wait(timeout=10)
        report_wado(run, rss_before, peaks, pinned)


LABELS = {
    "gateway": "gateway  (novaza serve: auth, tenant, audit, middlewares)",
    "bare": "bare     (Starlette on the same uvicorn, same files)",
    "raw": "raw      (socket + os.sendfile, no HTTP stack: loopback ceiling)",
}


def report_wado(
    run: WadoRun, rss_before: dict[str, int], peaks: dict[str, int], pinned: bool
) -> None:
    direct = statistics.median(run.direct)
    rates = {s.name: statistics.median(s.rates) for s in run.servers}
    print(
        f"WADO study retrieve: {len(run.files)} instances, {run.total / 1e6:.1f} MB, "
        f"median of {len(run.direct)} interleaved rounds, one client over loopback "
        f"({'servers on CPU 0, client and direct read on CPU 1' if pinned else 'not pinned'})"
    )
    print(
        f"  {'':62s} {'MB/s':>7s} {'÷ direct':>9s} {'÷ bare':>7s} {'CPU ms':>7s} "
        f"{'TTFB ms':>7s} {'RSS MiB':>12s}"
    )
    for server in run.servers:
        name, rate = server.name, rates[server.name]
        print(
            f"  {LABELS[name]:62s} {rate / 1e6:7.0f} {rate / direct:9.2f} "
            f"{rate / rates['bare']:7.2f} {statistics.median(server.cpu_ms):7.1f} "
            f"{statistics.median(server.ttfb_ms):7.1f} "
            f"{rss_before[name] / 1024:5.0f} -> {peaks[name] / 1024:4.0f}"
        )
    print(
        f"  {'direct   (the same files read in this process, page cache warm)':62s} "
        f"{direct / 1e6:7.0f} {1:9.2f}"
    )
    print(
        f"  ratio gateway / direct {rates['gateway'] / direct:.3f} (issue target >= 0.7); "
        f"gateway / bare {rates['gateway'] / rates['bare']:.2f}; "
        f"bare / direct {rates['bare'] / direct:.3f}"
    )
    print(
        "  CPU ms: the server process's CPU time per retrieve; TTFB: request sent to first "
        "byte back (medians); RSS: before the retrieves -> peak (VmHWM)"
    )
    busy = max(run.others)
    print(
        f"  other processes used up to {busy:.2f} CPUs during a round"
        + ("  ** busy machine: rates are unreliable, compare CPU ms **" if busy > 0.25 else "")
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
        await load_registry(conn, tenant_id, [p[2] for p in patients], now)
    finally:
        await conn.close()


async def load_registry(
    conn: asyncpg.Connection, tenant_id: str, identifiers: list[str], now: datetime
) -> None:
    """The archive's patients in the clinical registry too (one MR identifier each), with an
    ADT A40 merge for every tenth: P..0 absorbed P..1, whose identifier moved to it. QIDO
    resolves merges per page (``clinical.merges``): this makes that lookup find rows."""
    patients, idents = [], []
    survivor = ""
    for n, value in enumerate(identifiers):
        pk = uuid.uuid4().hex
        merged_into = survivor if n % 10 == 1 else None
        survivor = pk if n % 10 == 0 else survivor
        patients.append((pk, tenant_id, "Bench", "", "", "O", "{}", "", merged_into, now, now))
        idents.append((uuid.uuid4().hex, tenant_id, merged_into or pk, value, "BENCH", "MR"))
    await conn.copy_records_to_table(
        "clinical_patients",
        records=patients,
        columns=[
            "id",
            "tenant_id",
            "family_name",
            "given_name",
            "middle_name",
            "sex",
            "address",
            "phone",
            "merged_into_id",
            "created_at",
            "updated_at",
        ],
    )
    await conn.copy_records_to_table(
        "clinical_patient_identifiers",
        records=idents,
        columns=["id", "tenant_id", "patient_id", "value", "assigning_authority", "type_code"],
    )
    await conn.execute("ANALYZE clinical_patients")
    await conn.execute("ANALYZE clinical_patient_identifiers")


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
                "PatientID merged (A40)": lambda: {
                    "PatientID": f"P{random.randrange(count // 100) * 10:06d}"
                },
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
    parser.add_argument("--side", type=int, default=1024, help="WADO instance rows=columns")
    parser.add_argument("--rounds", type=int, default=7, help="WADO rounds (median reported)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--gateway-src", help="PYTHONPATH for the gateway (e.g. an old src/)")
    args = parser.parse_args()
    random.seed(4)
    if args.only in (None, "wado"):
        bench_wado(args.mb, args.side, args.rounds, not args.no_pin, args.gateway_src)
    if args.only in (None, "qido"):
        bench_qido(args.studies)


if __name__ == "__main__":
    main()
