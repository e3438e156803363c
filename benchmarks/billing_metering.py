"""Billing metering: what metering costs a request, and how fast /usage answers over 1M events.

1. Overhead. One gateway process (``uvicorn``, one worker, uvloop + httptools, access log
   off; SQLite in a temporary data dir) serves two routes that differ only in the policy:
   ``/bench/plain`` (``policy()``) and ``/bench/metered`` (``policy(meter="bench")``): same
   auth, tenant cache, rate limiter, same handler. wrk drives them alternately, ``--repeat``
   rounds of ``--duration`` s each, order flipped every round; the medians give the
   throughput cost of metering (target < 5 %), and the server's CPU time per request (from
   /proc, robust when other work shares the machine) gives the same cost in CPU. Afterwards
   the metered requests the gateway counted (``/usage``) are compared with what wrk got
   answered. With two CPUs and taskset,
   the server runs on CPU 0 and wrk on CPU 1.
2. ``record()``: nanoseconds per call of the in-memory recorder the guard calls.
3. ``/usage`` over 1 000 000 events: 1M keyed events (distinct event ids, so 1M rows; the
   worst case: aggregated requests make one row per hour and dimension) spread over 30 days
   for one tenant, flushed through the production path; then ``GET /api/v1/billing/usage``
   for the month by day and by hour, ``--queries`` times each, in process (ASGI transport):
   p50 / p99 / max.

    .venv/bin/python benchmarks/billing_metering.py [--duration 5] [--repeat 3] [--events 1000000]

Prints a table; writes JSON to ``benchmarks/out/`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from readiness import wait_healthy

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "out"
HOST = "127.0.0.1"
TENANT = "bench"
RATE_LIMIT = {"ratePerSecond": 100_000, "burst": 1_000_000}
TARGET_COST = 0.05

WRK_LUA = """\
wrk.headers["Authorization"] = "Bearer {token}"
done = function(summary, latency, requests)
  io.write(string.format("WRK_JSON {{\\"requests\\": %d, \\"duration_us\\": %d, "
    .. "\\"non2xx\\": %d, \\"p50\\": %d, \\"p99\\": %d}}\\n", summary.requests,
    summary.duration, summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- the server


def bench_app(data_dir: Path) -> Any:
    from fastapi import APIRouter

    from novaza_gateway.app import create_app
    from novaza_gateway.config import Settings
    from novaza_gateway.core.deps import TenantDep
    from novaza_gateway.core.policy import policy

    router = APIRouter(prefix="/bench")

    @router.get("/plain", **policy())
    async def plain(tenant: TenantDep) -> dict[str, str]:
        return {"tenant": tenant.slug}

    @router.get("/metered", **policy(meter="bench"))
    async def metered(tenant: TenantDep) -> dict[str, str]:
        return {"tenant": tenant.slug}

    settings = Settings(data_dir=data_dir, log_json=False, log_level="WARNING")
    return create_app(settings, extra_routers=(router,))


def serve(port: int, data_dir: Path) -> None:
    import uvicorn

    uvicorn.run(
        bench_app(data_dir),
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
    )


def pinning() -> tuple[list[str], list[str]]:
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) >= 2:
        return [taskset, "-c", "0"], [taskset, "-c", "1"]
    return [], []


def start_server(data_dir: Path, port: int, pin: list[str]) -> subprocess.Popen[bytes]:
    command = [*pin, sys.executable, __file__, "--serve", str(port), str(data_dir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(f"http://{HOST}:{port}", server)
    except RuntimeError as error:
        server.kill()
        stderr = server.stderr.read().decode() if server.stderr else ""
        raise SystemExit(f"gateway did not start ({error}): {stderr}") from None
    return server


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    wrk: list[str], url: str, lua: Path, seconds: int, server_pid: int | None = None
) -> dict[str, Any]:
    command = [*wrk, "-t1", "-c32", f"-d{seconds}s", "--timeout", "5s", "-s", str(lua), url]
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    for line in result.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            raw: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            raw["rps"] = raw["requests"] / (raw["duration_us"] / 1e6)
            raw["cpu_us_per_request"] = cpu / max(raw["requests"], 1) * 1e6
            return raw
    raise SystemExit(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")


def overhead(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from novaza_gateway.config import Settings
    from novaza_gateway.core import devkeys
    from novaza_gateway.migrate import upgrade

    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        return {"skipped": "wrk is not installed (make bench installs it as root)"}
    data_dir = work / "overhead"
    upgrade(Settings(data_dir=data_dir))
    admin = devkeys.mint_token(
        data_dir, subject="bench-admin", scopes=["platform:admin"], tenant=None
    )
    token = devkeys.mint_token(
        data_dir, subject="bench", scopes=["billing:read"], tenant=TENANT, ttl_seconds=3600
    )
    server_pin, load_pin = pinning()
    port = free_port()
    server = start_server(data_dir, port, server_pin)
    base = f"http://{HOST}:{port}"
    try:
        created = httpx.post(
            f"{base}/admin/tenants/",
            json={"slug": TENANT, "name": "Bench", "plan": "enterprise", "status": "active",
                  "rateLimit": RATE_LIMIT},
            headers={"Authorization": f"Bearer {admin}"},
        )  # fmt: skip
        created.raise_for_status()
        lua = work / "bench.lua"
        lua.write_text(WRK_LUA.format(token=token))
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "metered": []}
        warmup = run_wrk([*load_pin, wrk_path], f"{base}/bench/metered", lua, 2)
        for round_no in range(args.repeat):
            order = ["plain", "metered"] if round_no % 2 == 0 else ["metered", "plain"]
            for name in order:
                url = f"{base}/bench/{name}"
                runs[name].append(
                    run_wrk([*load_pin, wrk_path], url, lua, args.duration, server.pid)
                )
        time.sleep(2.5)  # two flush intervals
        usage = httpx.get(
            f"{base}/api/v1/billing/usage",
            params={"meter": "api_requests", "granularity": "hour"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    counted = sum(
        d["total"]
        for d in usage["meters"][0]["byDimensions"]
        if d["dimensions"] == {"area": "bench"}
    )
    answered = warmup["requests"] + sum(r["requests"] for r in runs["metered"])
    plain = statistics.median(r["rps"] for r in runs["plain"])
    metered = statistics.median(r["rps"] for r in runs["metered"])
    plain_cpu = statistics.median(r["cpu_us_per_request"] for r in runs["plain"])
    metered_cpu = statistics.median(r["cpu_us_per_request"] for r in runs["metered"])
    return {
        "plain_rps": plain,
        "metered_rps": metered,
        "cost": 1 - metered / plain,
        "plain_cpu_us": plain_cpu,
        "metered_cpu_us": metered_cpu,
        "cpu_cost": metered_cpu / plain_cpu - 1,
        "plain_p99_ms": statistics.median(r["p99"] for r in runs["plain"]) / 1000,
        "metered_p99_ms": statistics.median(r["p99"] for r in runs["metered"]) / 1000,
        "metered_requests_answered": answered,
        "metered_requests_counted": counted,
        "warmup_metered_requests": warmup["requests"],
        "runs": runs,
        "pinned": bool(server_pin),
    }


# ----------------------------------------------------------------------------- in process


def record_cost(calls: int = 1_000_000) -> dict[str, float]:
    from novaza_gateway.billing.metering import UsageMeter

    meter = UsageMeter()
    dims = (("area", "imaging"),)
    tenants = [f"tenant-{i}" for i in range(50)]
    started = time.perf_counter()
    for i in range(calls):
        meter.record(tenants[i % 50], "api_requests", dimensions=dims)
    elapsed = time.perf_counter() - started
    return {"calls": calls, "ns_per_record": elapsed / calls * 1e9}


async def usage_latency(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from novaza_gateway.app import create_app
    from novaza_gateway.billing.metering import UsageMeter
    from novaza_gateway.config import Settings
    from novaza_gateway.core import devkeys
    from novaza_gateway.core.metering import dimensions

    data_dir = work / "usage"  # migrated by main(): upgrade() runs its own event loop
    app = create_app(Settings(data_dir=data_dir, log_json=False, log_level="WARNING"))
    admin = devkeys.mint_token(
        data_dir, subject="bench-admin", scopes=["platform:admin"], tenant=None
    )
    token = devkeys.mint_token(data_dir, subject="bench", scopes=["billing:read"], tenant=TENANT)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            created = await client.post(
                "/admin/tenants/",
                json={"slug": TENANT, "name": "Bench", "plan": "enterprise", "status": "active"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            tenant_id = created.json()["id"]
            start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            hours = 30 * 24
            now = [start.timestamp()]
            meter = UsageMeter(clock=lambda: now[0])
            dims = [dimensions(kind=k, model=m) for k in ("prompt", "completion") for m in "abc"]
            t0 = time.perf_counter()
            flushed = 0
            for i in range(args.events):
                now[0] = start.timestamp() + (i % hours) * 3600
                meter.record(
                    tenant_id, "ai_tokens", 1 + i % 7, dimensions=dims[i % 6],
                    source="bench", event_id=f"evt-{i}",
                )  # fmt: skip
                if (i + 1) % 100_000 == 0:
                    flushed += await meter.flush(app.state.db)
            flushed += await meter.flush(app.state.db)
            load_seconds = time.perf_counter() - t0
            params = {
                "from": start.isoformat(),
                "to": (start + timedelta(hours=hours)).isoformat(),
                "meter": "ai_tokens",
            }
            results: dict[str, Any] = {"events": args.events, "rows": flushed,
                                       "record_and_flush_s": load_seconds}  # fmt: skip
            for granularity in ("day", "hour"):
                timings = []
                for _ in range(args.queries):
                    q0 = time.perf_counter()
                    response = await client.get(
                        "/api/v1/billing/usage",
                        params={**params, "granularity": granularity},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    timings.append((time.perf_counter() - q0) * 1000)
                    assert response.status_code == 200, response.text
                total = response.json()["meters"][0]["total"]
                timings.sort()
                results[granularity] = {
                    "p50_ms": statistics.median(timings),
                    "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
                    "max_ms": timings[-1],
                    "total": total,
                }
    return results


# ----------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per route")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return
    from novaza_gateway.config import Settings
    from novaza_gateway.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="novaza-bench-") as tmp:
        work = Path(tmp)
        upgrade(Settings(data_dir=work / "usage"))
        report: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "overhead": overhead(args, work),
            "record": record_cost(),
            "usage": asyncio.run(usage_latency(args, work)),
        }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"billing_metering-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    o, r, u = report["overhead"], report["record"], report["usage"]
    print("billing metering benchmark")
    if "skipped" in o:
        print(f"  overhead: skipped ({o['skipped']})")
    else:
        verdict = "ok" if o["cost"] < TARGET_COST else "OVER TARGET"
        cpu_verdict = "ok" if o["cpu_cost"] < TARGET_COST else "OVER TARGET"
        for name in ("plain", "metered"):
            rates = " ".join(f"{r['rps']:.0f}" for r in o["runs"][name])
            print(
                f"  {name:8} {o[name + '_rps']:7.0f} req/s (runs: {rates})  p99 "
                f"{o[name + '_p99_ms']:6.2f} ms  server CPU {o[name + '_cpu_us']:6.1f} us/req"
            )
        print(f"  metering cost {o['cost'] * 100:5.2f} % of throughput (target < 5 %: {verdict})")
        print(
            f"  metering cost {o['cpu_cost'] * 100:5.2f} % of server CPU per request "
            f"({cpu_verdict})"
        )
        print(
            f"  metered requests answered by wrk {o['metered_requests_answered']}, "
            f"counted in /usage {o['metered_requests_counted']} (warm-up run included)"
        )
    print(f"  record(): {r['ns_per_record']:.0f} ns per call")
    print(
        f"  /usage over {u['events']:,} events ({u['rows']:,} rows, loaded in "
        f"{u['record_and_flush_s']:.1f} s):"
    )
    for granularity in ("day", "hour"):
        g = u[granularity]
        print(
            f"    {granularity:4}  p50 {g['p50_ms']:7.1f} ms  p99 {g['p99_ms']:7.1f} ms  "
            f"max {g['max_ms']:7.1f} ms  (total {g['total']:,})"
        )
    print(f"  JSON: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
