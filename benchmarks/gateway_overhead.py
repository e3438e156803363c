"""Gateway overhead: what the request path costs next to a bare app on the same server.

One run starts, on free ports, with one worker each and the same uvicorn flags (uvloop,
httptools, access log off):

* the gateway (``novaza serve``) in a temporary ``NOVAZA_DATA_DIR`` on SQLite, after
  ``novaza migrate`` and ``novaza tenants create bench --plan enterprise --activate``, with the
  tenant's rate limit raised through the admin API so that nothing is throttled;
* a bare Starlette hello-world app, and FastAPI's hello world as a reference (first round).

It drives each with wrk (closed loop, saturating) and reports requests/s and p50/p99 for
``GET /health``, ``GET /api/v1/whoami`` with a Bearer token (auth, tenant cache, rate limit; no
database except the tenant cache's reload once per TTL) and the bare app's hello route, then
the ratio whoami/bare. With ``--repeat N`` it measures N rounds, each running every route once
in turn, and reports the median round's figures and the median of the rounds' ratios: the
host this runs on drifts by tens of percent over minutes, and a whoami run compared with the
bare run next to it cancels most of that. It does this twice: with the in-process limiter, and
with a second gateway process on ``NOVAZA_REDIS_URL``. Then an open-loop generator (below)
drives whoami at half its measured peak and reports p50/p99 from each request's *scheduled*
send time, so a stalled server cannot hide its queue (no coordinated omission).

With two or more CPUs and ``taskset``, servers run on the first CPU and the load generators
(wrk, and this process for the open-loop runs) on the second; Redis is not pinned. Each run
also records the server's CPU time per request, which stays meaningful when other work shares
the machine, and the CPU that processes outside the benchmark used meanwhile ("other CPU").
Before each run the script waits for the machine to be idle (``--quiet-wait`` s in all).

    .venv/bin/python benchmarks/gateway_overhead.py [--duration 10] [--check]

Prints a table; writes JSON to ``benchmarks/out/`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "out"
NOVAZA = [sys.executable, "-c", "from novaza_gateway.cli import main; main()"]
HOST = "127.0.0.1"
TENANT = "bench"
# The tenant API caps ratePerSecond at 100 000 (burst at 1 000 000): far above one worker.
RATE_LIMIT = {"ratePerSecond": 100_000, "burst": 1_000_000}
TARGETS = {"ratio_memory": 0.5, "ratio_redis": 0.4, "p99_half_peak_ms": 10.0}
START_TIMEOUT = 30.0
QUIET_BUSY_PCT = 15.0  # machine-wide busy CPU (% of one CPU) below which it counts as idle
NOISY_OTHER_PCT = 10.0  # other processes' CPU during a run above which the run is flagged
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The baseline, and FastAPI's own hello world as a reference: what any FastAPI route costs.
BARE_APP = """\
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("Hello, world!")


app = Starlette(routes=[Route("/", hello)])
fastapi_app = FastAPI()


@fastapi_app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello World"}
"""
# The same uvicorn.run keywords as ``novaza serve`` (cli.py), with uvloop and httptools named
# (``novaza serve`` gets both from uvicorn's "auto", which picks them when installed).
BARE_SERVE = """\
import sys
import uvicorn
sys.path.insert(0, sys.argv[1])
uvicorn.run(
    sys.argv[4], host=sys.argv[2], port=int(sys.argv[3]), workers=1,
    loop="uvloop", http="httptools", access_log=False, log_config=None,
    proxy_headers=True, timeout_graceful_shutdown=30, server_header=False,
)
"""

# wrk: optional headers, and a machine-readable summary line at the end.
WRK_LUA = """\
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, "
    .. "\\"errors\\": {{\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, "
    .. "\\"timeout\\": %d}}, \\"latency_us\\": {{\\"mean\\": %.1f, \\"stdev\\": %.1f, "
    .. "\\"p50\\": %d, \\"p90\\": %d, \\"p99\\": %d, \\"p99_9\\": %d, \\"max\\": %d}}}}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


# ----------------------------------------------------------------------------- CPU accounting


def machine_busy_seconds() -> float:
    """User + nice + system CPU time of the whole machine so far (all CPUs)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds() -> float:
    """This process and its waited-for children (wrk, novaza commands)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    machine: float
    server: float
    own: float
    redis: float

    @classmethod
    def take(cls, server_pid: int, redis_url: str | None) -> CpuSnapshot:
        info = redis_info(redis_url) if redis_url else None
        return cls(
            wall=time.perf_counter(),
            machine=machine_busy_seconds(),
            server=process_cpu_seconds(server_pid),
            own=own_cpu_seconds(),
            redis=info["cpu_seconds"] if info else 0.0,
        )

    def until(self, later: CpuSnapshot) -> dict[str, float]:
        """Percent of one CPU over the interval: the server, the load generator, Redis, rest."""
        wall = later.wall - self.wall
        server = later.server - self.server
        own = later.own - self.own
        redis = later.redis - self.redis
        other = (later.machine - self.machine) - server - own - redis
        return {
            "server_cpu_pct": 100 * server / wall,
            "loadgen_cpu_pct": 100 * own / wall,
            "redis_cpu_pct": 100 * redis / wall,
            "other_cpu_pct": max(0.0, 100 * other / wall),
            "server_cpu_seconds": server,
        }


def wait_quiet(bench: Bench) -> None:
    """Wait until the machine is idle (others' tests, builds), within the run's quiet budget."""
    while True:
        before = machine_busy_seconds()
        time.sleep(0.5)
        busy = 200 * (machine_busy_seconds() - before)
        if busy < QUIET_BUSY_PCT:
            return
        bench.quiet_budget -= 0.5
        if bench.quiet_budget <= 0:
            if not bench.warned_busy:
                print(f"    (machine {busy:.0f}% busy and the --quiet-wait budget spent: going on)")
                bench.warned_busy = True
            return


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pinning:
    server: list[str]  # command prefix for servers
    load: list[str]  # command prefix for wrk
    description: str


def plan_pinning(enabled: bool) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if not enabled:
        return Pinning([], [], f"not pinned (--no-pin), {len(cpus)} CPUs")
    if len(cpus) < 2 or taskset is None:
        why = "taskset missing" if taskset is None else f"only {len(cpus)} CPU"
        return Pinning([], [], f"not pinned ({why})")
    server_cpu, load_cpu = cpus[0], cpus[1]
    os.sched_setaffinity(0, {load_cpu})  # this process: the open-loop generator
    return Pinning(
        [taskset, "-c", str(server_cpu)],
        [taskset, "-c", str(load_cpu)],
        f"servers on CPU {server_cpu}, load generators (wrk, open-loop) on CPU {load_cpu}, "
        "Redis unpinned",
    )


def clean_env(data_dir: Path, redis_url: str | None = None) -> dict[str, str]:
    """The caller's environment minus any ambient NOVAZA_* or multiprocess setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NOVAZA_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["NOVAZA_DATA_DIR"] = str(data_dir)
    if redis_url:
        env["NOVAZA_REDIS_URL"] = redis_url
    return env


def novaza(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [*NOVAZA, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"novaza {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout.strip()


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise SystemExit(
            f"{self.name} did not answer {path} in {START_TIMEOUT}s\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM this process (by its id); SIGKILL it if it does not drain in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def serving(
    name: str, command: list[str], env: dict[str, str], log_dir: Path, ready_path: str
) -> Iterator[Server]:
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(name, port, proc, log_path)
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- wrk (closed loop)


@dataclass
class LoadResult:
    label: str
    url: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    max_ms: float
    requests: int
    errors: dict[str, int]
    cpu_us_per_request: float  # server CPU time / requests answered
    cpu: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)
    repeats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def noisy(self) -> bool:
        return self.cpu["other_cpu_pct"] > NOISY_OTHER_PCT


def write_lua(directory: Path, name: str, headers: dict[str, str]) -> Path:
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    path = directory / f"{name}.lua"
    path.write_text(WRK_LUA.format(headers=lines))
    return path


def run_wrk(
    wrk: str, pin: Pinning, url: str, lua: Path, seconds: int, connections: int
) -> dict[str, Any]:
    command = [*pin.load, wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    command += ["-s", str(lua), url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in result.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            raw: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return raw
    raise SystemExit(
        f"wrk printed no summary ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


@dataclass
class Bench:
    """What every measurement needs: options, pinning, wrk, Redis (when its round runs)."""

    args: argparse.Namespace
    pin: Pinning
    wrk: str
    redis_url: str | None = None
    quiet_budget: float = 0.0  # seconds still allowed for waiting on an idle machine
    warned_busy: bool = False

    @property
    def seconds(self) -> int:
        return max(1, round(float(self.args.duration)))


def run_once(
    bench: Bench,
    label: str,
    server: Server,
    path: str,
    lua: Path,
    around: Callable[[], dict[str, float]] | None = None,
) -> LoadResult:
    """Warm up, then one measured wrk run.

    ``around`` is called before and after the measured run (e.g. to read gateway counters);
    the difference lands in ``extra``.
    """
    url = server.url + path
    wait_quiet(bench)
    if bench.args.warmup > 0:
        run_wrk(
            bench.wrk,
            bench.pin,
            url,
            lua,
            max(1, round(bench.args.warmup)),
            bench.args.connections,
        )
    marks = around() if around else {}
    before = CpuSnapshot.take(server.proc.pid, bench.redis_url)
    raw = run_wrk(bench.wrk, bench.pin, url, lua, bench.seconds, bench.args.connections)
    cpu = before.until(CpuSnapshot.take(server.proc.pid, bench.redis_url))
    extra = {}
    if around:
        after = around()
        extra = {k: after.get(k, 0.0) - marks.get(k, 0.0) for k in after}
    lat = raw["latency_us"]
    return LoadResult(
        label=label,
        url=url,
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p99_9_ms=lat["p99_9"] / 1000,
        max_ms=lat["max"] / 1000,
        requests=raw["requests"],
        errors={k: v for k, v in raw["errors"].items() if v},
        cpu_us_per_request=1e6 * cpu.pop("server_cpu_seconds") / max(1, raw["requests"]),
        cpu=cpu,
        extra=extra,
    )


def summarize(runs: list[LoadResult]) -> LoadResult:
    """The run with the median rate, carrying every run's figures; printed."""
    ordered = sorted(runs, key=lambda r: r.rps)
    result = ordered[(len(ordered) - 1) // 2]
    if len(ordered) > 1:
        result.repeats = [
            {"rps": r.rps, "p99_ms": r.p99_ms, "cpu_us_per_request": r.cpu_us_per_request}
            for r in runs
        ]
    print(
        f"  {result.label:<30} {result.rps:>7.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:6.2f} ms  {result.cpu_us_per_request:5.0f} us CPU/req  "
        f"server {result.cpu['server_cpu_pct']:3.0f}% other {result.cpu['other_cpu_pct']:3.0f}%"
        + (f"  ERRORS {result.errors}" if result.errors else ""),
        flush=True,
    )
    return result


def interleaved(
    bench: Bench,
    targets: list[tuple[str, Server, str, Path, Callable[[], dict[str, float]] | None]],
) -> list[list[LoadResult]]:
    """``--repeat`` rounds, each measuring every target once in turn: a slow minute of the
    shared host then weighs on the gateway and the bare app alike, and each round's whoami
    and bare runs, minutes apart at most, make one pair."""
    runs: list[list[LoadResult]] = [[] for _ in targets]
    for _ in range(bench.args.repeat):
        for index, target in enumerate(targets):
            runs[index].append(run_once(bench, *target))
    return runs


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# ----------------------------------------------------------------------------- open loop

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight, Content-Length bodies."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports do not subclass asyncio.Transport
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
        if match is None:
            self._fail(ConnectionError("response without Content-Length"))
            return
        total = end + 4 + int(match.group(1))
        if len(self.buffer) < total:
            return
        status = int(self.buffer[9:12])
        del self.buffer[:total]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc}"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def request(self, payload: bytes) -> asyncio.Future[int]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


async def _open_loop(
    port: int, payload: bytes, rate: float, duration: float, connections: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(_Connection, HOST, port)
        return protocol

    pool = [await connect() for _ in range(connections)]
    total = int(rate * duration)
    interval = 1.0 / rate
    latencies: list[float] = []
    lags: list[float] = []
    statuses: Counter[int] = Counter()
    failures = 0
    next_index = 0
    start = time.perf_counter() + 0.1
    last_done = start

    async def worker(conn: _Connection) -> None:
        # Each worker takes the next scheduled slot, sleeps until it, sends and waits. A slot
        # that comes due while every connection is busy goes out late and its latency still
        # counts from the scheduled time: the queue the server built is measured, not hidden.
        nonlocal next_index, failures, last_done
        while next_index < total:
            scheduled = start + next_index * interval
            next_index += 1
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                status = await conn.request(payload)
            except ConnectionError:
                failures += 1
                conn = await connect()
                continue
            done = time.perf_counter()
            # A timer may fire up to a tick early: then the request's own time is the floor.
            latencies.append(done - min(sent, scheduled))
            lags.append(sent - scheduled)
            statuses[status] += 1
            last_done = done

    await asyncio.gather(*(worker(conn) for conn in pool))
    elapsed = last_done - start
    for conn in pool:
        conn.transport.close()
    latencies.sort()
    lags.sort()
    return {
        "offered_rps": rate,
        "achieved_rps": len(latencies) / elapsed if elapsed > 0 else math.nan,
        "scheduled": total,
        "completed": len(latencies),
        "connections": connections,
        "failures": failures,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "p99_9_ms": percentile(latencies, 99.9) * 1000,
        "max_ms": (latencies[-1] if latencies else math.nan) * 1000,
        "send_lag_p50_ms": percentile(lags, 50) * 1000,
        "send_lag_p99_ms": percentile(lags, 99) * 1000,
    }


def run_open_loop(
    port: int, payload: bytes, rate: float, duration: float, connections: int
) -> dict[str, Any]:
    coro = _open_loop(port, payload, rate, duration, connections)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def open_loop(
    bench: Bench,
    label: str,
    server: Server,
    path: str,
    headers: dict[str, str],
    rate: float,
    around: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    args = bench.args
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{server.port}", "User-Agent: novaza-bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode()
    wait_quiet(bench)
    # A short warm-up at the same rate: connections open, caches hot.
    run_open_loop(server.port, payload, rate, min(2.0, args.duration), args.open_connections)
    marks = around() if around else {}
    before = CpuSnapshot.take(server.proc.pid, bench.redis_url)
    result = run_open_loop(server.port, payload, rate, bench.seconds, args.open_connections)
    cpu = before.until(CpuSnapshot.take(server.proc.pid, bench.redis_url))
    if around:
        after = around()
        result["extra"] = {k: after.get(k, 0.0) - marks.get(k, 0.0) for k in after}
    result["cpu_us_per_request"] = 1e6 * cpu.pop("server_cpu_seconds") / max(1, result["completed"])
    result["cpu"] = cpu
    result["label"] = label
    result["url"] = server.url + path
    ok = result["statuses"].get("200", 0) == result["completed"] and not result["failures"]
    print(
        f"  {label:<30} {rate:>7.0f} req/s offered, {result['achieved_rps']:.0f} achieved  "
        f"p50 {result['p50_ms']:5.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
        f"send lag p99 {result['send_lag_p99_ms']:.2f} ms  other {cpu['other_cpu_pct']:3.0f}%"
        + ("" if ok else f"  NON-200 {result['statuses']} failures {result['failures']}"),
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------- gateway checks


def check_whoami(server: Server, token: str) -> dict[str, Any]:
    response = httpx.get(
        server.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    if response.status_code != 200:
        raise SystemExit(f"whoami answered {response.status_code}: {response.text}")
    body: dict[str, Any] = response.json()
    limit = body.get("rateLimit") or {}
    if body.get("tenant") != TENANT or limit.get("ratePerSecond") != RATE_LIMIT["ratePerSecond"]:
        raise SystemExit(f"whoami does not show the bench tenant and its raised limit: {body}")
    return body


def limiter_backend(server: Server) -> str:
    checks = httpx.get(server.url + "/health/ready", timeout=5).json().get("checks", {})
    return str(checks.get("ratelimit", {}).get("detail", "unknown"))


_SAMPLE = re.compile(r"^(novaza_[a-z_]+_total)\{([^}]*)\}\s+(\S+)$", re.MULTILINE)


def gateway_counters(server: Server) -> dict[str, float]:
    """Rate-limit decisions and fallbacks and tenant-cache lookups from /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    counters: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if "ratelimit" in name or "tenant_cache" in name:
            counters[f"{name}{{{labels}}}"] = float(value)
    return counters


def limiter_summary(counters: dict[str, float]) -> dict[str, float]:
    def total(*needles: str) -> float:
        return sum(v for k, v in counters.items() if all(n in k for n in needles))

    summary = {
        "decisions_redis": total("decisions", 'backend="redis"'),
        "decisions_memory": total("decisions", 'backend="memory"'),
        "limited": total("decisions", 'outcome="limited"'),
        "fallbacks": total("fallbacks"),
        "tenant_cache_misses": total("tenant_cache", 'result="miss"'),
    }
    for key, value in counters.items():
        if reason := re.search(r'fallbacks_total\{reason="([^"]+)"', key):
            summary[f"fallbacks_{reason.group(1)}"] = value
    return summary


def fallback_reasons(summary: dict[str, float]) -> str:
    reasons = [
        f"{key.removeprefix('fallbacks_')} {value:.0f}"
        for key, value in summary.items()
        if key.startswith("fallbacks_") and value
    ]
    return ", ".join(reasons) or "none"


def redis_info(url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    try:
        import redis
    except ImportError:
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            server, cpu = client.info("server"), client.info("cpu")
        finally:
            client.close()
    except Exception:
        return None
    return {
        "version": server.get("redis_version"),
        "cpu_seconds": float(cpu.get("used_cpu_user", 0)) + float(cpu.get("used_cpu_sys", 0)),
    }


# ----------------------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("novaza-gateway", "uvicorn", "uvloop", "httptools", "starlette", "fastapi"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    wrk_version = ""
    if wrk := shutil.which("wrk"):
        probe = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (probe.stdout or probe.stderr).splitlines()[0].split(" Copyright")[0]
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True
    )
    return {
        "commit": head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout else ""),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": wrk_version,
    }


def limiter_round(
    bench: Bench,
    limiter: str,
    env: dict[str, str],
    token: str,
    admin_token: str | None,
    bare: Server,
    work: Path,
    reference: Server | None = None,
) -> dict[str, Any]:
    """Gateway /health and whoami, the bare app, then whoami open loop; ``reference``: the
    FastAPI hello world, measured too when given."""
    print(f"\n[{limiter} limiter] starting gateway", flush=True)
    command = [*bench.pin.server, *NOVAZA, "serve", "--port", "{port}"]
    with serving(f"gateway-{limiter}", command, env, work, "/health") as gateway:
        if admin_token:
            response = httpx.put(
                gateway.url + f"/admin/tenants/{TENANT}",
                json={"rateLimit": RATE_LIMIT},
                headers={"Authorization": f"Bearer {admin_token}"},
                timeout=10,
            )
            if response.status_code != 200:
                raise SystemExit(f"raising the rate limit: {response.status_code} {response.text}")
        check_whoami(gateway, token)
        backend = limiter_backend(gateway)
        print(f"  rate limiter: {backend}", flush=True)
        if limiter == "redis" and "redis" not in backend:
            raise SystemExit(f"the gateway on {env['NOVAZA_REDIS_URL']} is not on Redis: {backend}")

        auth = {"Authorization": f"Bearer {token}"}
        auth_lua, plain_lua = write_lua(work, "auth", auth), write_lua(work, "plain", {})

        def counters() -> dict[str, float]:
            return limiter_summary(gateway_counters(gateway))

        targets: list[tuple[str, Server, str, Path, Callable[[], dict[str, float]] | None]] = [
            ("gateway GET /health", gateway, "/health", plain_lua, None),
            ("gateway GET /api/v1/whoami", gateway, "/api/v1/whoami", auth_lua, counters),
            ("bare Starlette GET /", bare, "/", plain_lua, None),
        ]
        if reference is not None:
            targets.append(("FastAPI hello (reference)", reference, "/", plain_lua, None))
        measured = interleaved(bench, targets)
        runs = [summarize(target_runs) for target_runs in measured]
        whoami = runs[1]
        pairs = list(zip(measured[1], measured[2], strict=True))  # whoami and bare, per round
        decisions = whoami.extra
        if decisions.get("fallbacks") or decisions.get("limited"):
            print(
                f"  WARNING: during the whoami run {decisions['fallbacks']:.0f} decisions fell "
                f"back to the local limiter ({decisions['decisions_redis']:.0f} on Redis), "
                f"{decisions['limited']:.0f} limited; fallbacks: {fallback_reasons(decisions)}",
                flush=True,
            )

        rate = bench.args.open_fraction * whoami.rps
        loops = [
            open_loop(
                bench,
                f"whoami at {bench.args.open_fraction:.0%} of peak",
                gateway,
                "/api/v1/whoami",
                auth,
                rate,
                counters,
            )
        ]
        if limiter == "memory":  # the floor: the same generator and rate against the bare app
            loops.append(open_loop(bench, "bare GET / at the same rate", bare, "/", {}, rate))
        return {
            "limiter": limiter,
            "limiter_detail": backend,
            "closed_loop": [asdict(r) for r in runs],
            # medians of the per-round ratios (each round's runs minutes apart at most)
            "ratio_whoami_over_bare": median([w.rps / b.rps for w, b in pairs]),
            "ratio_health_over_bare": median(
                [h.rps / b.rps for h, b in zip(measured[0], measured[2], strict=True)]
            ),
            "ratio_fastapi_hello_over_bare": median(
                [f.rps / b.rps for f, b in zip(measured[3], measured[2], strict=True)]
            )
            if reference
            else None,
            "cpu_ratio_bare_over_whoami": median(
                [b.cpu_us_per_request / w.cpu_us_per_request for w, b in pairs]
            ),
            "ratios_per_round": [round(w.rps / b.rps, 3) for w, b in pairs],
            "noisy_runs": [r.label for r in runs if r.noisy],
            "open_loop": loops,
            "gateway_counters": gateway_counters(gateway),
        }


def print_table(report: dict[str, Any]) -> None:
    meta = report["meta"]
    width = 104
    print("\n" + "=" * width)
    print(
        f"Novaza Gateway overhead  {meta['started']}  {meta['machine']['cpu_model']}, "
        f"{meta['machine']['cpus']} CPUs, Python {meta['machine']['python']}, "
        f"commit {meta['machine']['commit']}"
    )
    print(
        f"closed loop: wrk -t1 -c{meta['connections']}, {meta['duration_s']:.0f} s per run after "
        f"{meta['warmup_s']:g} s warm-up, {meta['repeat']} interleaved rounds (rates: the "
        f"median round; ratios: the median of the rounds' ratios); {meta['pinning']}"
    )
    print(
        f"open loop: {meta['open_connections']} connections, latency from each request's "
        "scheduled send time"
    )
    print("-" * width)
    print(
        f"{'limiter':<8} {'route':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} "
        f"{'us CPU/req':>10} {'server':>7} {'other':>6} {'errors':>6}"
    )
    for rnd in report["rounds"]:
        for r in rnd["closed_loop"]:
            flag = "*" if r["cpu"]["other_cpu_pct"] > NOISY_OTHER_PCT else " "
            print(
                f"{rnd['limiter']:<8} {r['label']:<30} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} "
                f"{r['p99_ms']:>7.2f} {r['p99_9_ms']:>7.2f} {r['cpu_us_per_request']:>10.0f} "
                f"{r['cpu']['server_cpu_pct']:>6.0f}% {r['cpu']['other_cpu_pct']:>5.0f}%{flag}"
                f"{sum(r['errors'].values()):>6}"
            )
        target = TARGETS[f"ratio_{rnd['limiter']}"]
        ratio = rnd["ratio_whoami_over_bare"]
        print(
            f"{rnd['limiter']:<8} {'ratio whoami / bare':<30} {ratio:>8.3f}   "
            f"target >= {target:.2f}: {'MET' if ratio >= target else 'MISSED'}   "
            f"(CPU per request bare/whoami {rnd['cpu_ratio_bare_over_whoami']:.3f}; "
            f"rounds {' '.join(f'{r:.3f}' for r in rnd['ratios_per_round'])})"
        )
        if (fastapi := rnd["ratio_fastapi_hello_over_bare"]) is not None:
            print(f"{rnd['limiter']:<8} {'ratio FastAPI hello / bare':<30} {fastapi:>8.3f}")
        whoami = rnd["closed_loop"][1]
        if rnd["limiter"] == "redis" and whoami["extra"]:
            d = whoami["extra"]
            print(
                f"{'redis':<8} {'limiter decisions in that run':<30} "
                f"{d['decisions_redis']:>8.0f} on Redis, {d['decisions_memory']:.0f} local "
                f"(fallbacks: {fallback_reasons(d)})"
            )
    print("-" * width)
    print(
        f"{'limiter':<8} {'open loop':<30} {'offered':>8} {'achieved':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'p99.9':>7} {'lag p99':>8} {'other':>6}"
    )
    for rnd in report["rounds"]:
        for r in rnd["open_loop"]:
            flag = "*" if r["cpu"]["other_cpu_pct"] > NOISY_OTHER_PCT else " "
            print(
                f"{rnd['limiter']:<8} {r['label']:<30} {r['offered_rps']:>8.0f} "
                f"{r['achieved_rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                f"{r['p99_9_ms']:>7.2f} {r['send_lag_p99_ms']:>8.2f} "
                f"{r['cpu']['other_cpu_pct']:>5.0f}%{flag}"
            )
        p99 = rnd["open_loop"][0]["p99_ms"]
        limit = TARGETS["p99_half_peak_ms"]
        print(
            f"{rnd['limiter']:<8} {'whoami p99 at half the peak':<30} {p99:>8.2f} ms  "
            f"target < {limit:g} ms: {'MET' if p99 < limit else 'MISSED'}"
        )
    print("-" * width)
    print(
        f"* other processes used more than {NOISY_OTHER_PCT:g}% of a CPU during the run: "
        "treat its rate and tail with suspicion (CPU per request holds up better)"
    )
    print(f"JSON: {meta['json_path']}")


def verdicts(rounds: list[dict[str, Any]]) -> dict[str, bool]:
    result = {}
    for rnd in rounds:
        limiter = rnd["limiter"]
        result[f"ratio_{limiter}"] = rnd["ratio_whoami_over_bare"] >= TARGETS[f"ratio_{limiter}"]
        p99 = rnd["open_loop"][0]["p99_ms"]
        result[f"p99_half_peak_{limiter}"] = p99 < TARGETS["p99_half_peak_ms"]
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=10.0, help="seconds per measured run (whole) [10]")
    add("--warmup", type=float, default=2.0, help="seconds of warm-up before each run [2]")
    add(
        "--repeat",
        type=int,
        default=1,
        help="rounds, each measuring every route once in turn; medians reported [1]",
    )
    add("--connections", type=int, default=32, help="wrk connections [32]")
    add("--open-connections", type=int, default=32, help="open-loop connections [32]")
    add("--open-fraction", type=float, default=0.5, help="open-loop rate / whoami peak [0.5]")
    add("--quiet-wait", type=float, default=60.0, help="total s to wait for idle CPUs [60]")
    add("--redis-url", default="redis://127.0.0.1:6379/0")
    add("--no-redis", action="store_true", help="skip the Redis round")
    add("--no-pin", action="store_true", help="do not pin processes to CPUs")
    add("--out", type=Path, default=OUT_DIR, help="JSON output directory [benchmarks/out]")
    add("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.repeat < 1 or args.duration <= 0 or not 0 < args.open_fraction <= 1:
        parser.error("--repeat >= 1, --duration > 0 and 0 < --open-fraction <= 1")
    return args


def main() -> int:
    args = parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: `make system-deps` (as root) installs it")
    bench = Bench(args, plan_pinning(not args.no_pin), wrk, quiet_budget=args.quiet_wait)
    started = datetime.now(UTC)
    print(f"Novaza Gateway overhead benchmark; {bench.pin.description}", flush=True)

    redis_ok = not args.no_redis and redis_info(args.redis_url) is not None
    if not args.no_redis and not redis_ok:
        print(f"Redis at {args.redis_url} does not answer: skipping the Redis round", flush=True)

    rounds = []
    with tempfile.TemporaryDirectory(prefix="novaza-bench-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        env = clean_env(data_dir)
        novaza(env, "migrate")
        create = ["tenants", "create", TENANT, "--name", "Bench", "--plan", "enterprise"]
        novaza(env, *create, "--activate")
        token = novaza(env, "token", "--tenant", TENANT, "--ttl", "86400")
        admin_token = novaza(env, "token", "--admin")
        (work / "bare_app.py").write_text(BARE_APP)
        bare_command = [*bench.pin.server, sys.executable, "-c", BARE_SERVE, str(work), HOST]
        with (
            serving("bare", [*bare_command, "{port}", "bare_app:app"], env, work, "/") as bare,
            serving(
                "fastapi", [*bare_command, "{port}", "bare_app:fastapi_app"], env, work, "/"
            ) as reference,
        ):
            rounds.append(
                limiter_round(bench, "memory", env, token, admin_token, bare, work, reference)
            )
            if redis_ok:
                bench.redis_url = args.redis_url
                redis_env = clean_env(data_dir, args.redis_url)
                rounds.append(limiter_round(bench, "redis", redis_env, token, None, bare, work))

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"gateway_overhead-{started:%Y%m%dT%H%M%SZ}.json"
    report: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "machine": machine(),
            "redis": redis_info(args.redis_url) if redis_ok else None,
            "pinning": bench.pin.description,
            "duration_s": float(bench.seconds),
            "warmup_s": args.warmup,
            "repeat": args.repeat,
            "connections": args.connections,
            "open_connections": args.open_connections,
            "open_fraction": args.open_fraction,
            "rate_limit": RATE_LIMIT,
            "gateway_log": "novaza defaults: JSON access log at INFO on stderr (to a file here)",
            "json_path": str(json_path),
            "quiet_wait_unspent_s": max(0.0, bench.quiet_budget),
        },
        "targets": TARGETS,
        "rounds": rounds,
        "verdicts": verdicts(rounds),
    }
    text = json.dumps(report, indent=2, default=str)
    json_path.write_text(text)
    (args.out / "gateway_overhead-latest.json").write_text(text)
    print_table(report)
    return 1 if args.check and not all(report["verdicts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
