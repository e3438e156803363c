"""Usage lost when a replica is SIGKILLed: what was answered and never counted.

A gateway process (``novaza serve``, one worker) is driven with metered requests
(``GET /med/hl7/messages/<unknown id>``: admitted, metered, 404) at ``--concurrency``; at a
random moment (uniform in ``--seconds``/2 .. ``--seconds``) it is SIGKILLed, load still
running. A new process is started on the same stores (it drains what waits in Redis, as any
replica would), and the usage counted in the database is compared with the admitted
answers the client got. Loss per kill is printed beside the bound it should stay under:
the request rate times the flush interval (what the in-memory aggregate holds at most).
Requests in flight at the kill may be counted without an answer: a round can show a small
negative loss.

    .venv/bin/python benchmarks/usage_sigkill.py [--rounds 5] [--seconds 4] [--interval 1]
        [--database-url postgresql://...] [--redis-url redis://...]

Prints a table; writes JSON to ``benchmarks/out/`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from readiness import wait_healthy

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "out"
NOVAZA = [sys.executable, "-m", "novaza_gateway"]
TENANT = "sigkill"
ROUTE = "/med/hl7/messages/" + "0" * 32
NOT_ADMITTED = {401, 403, 429}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def novaza(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([*NOVAZA, *args], env=env, capture_output=True, text=True, check=True)
    return result.stdout


def start(env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    stderr = (data_dir / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [*NOVAZA, "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, timeout=60)
    return proc, url


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def counted(database_url: str | None, data_dir: Path, tenant_id: str) -> int:
    sql = (
        "SELECT coalesce(sum(quantity), 0) FROM billing_usage "
        "WHERE meter = 'api_requests' AND tenant_id = $1"
    )
    if database_url is None:
        conn = sqlite3.connect(data_dir / "novaza.db")
        try:
            return int(conn.execute(sql.replace("$1", "?"), (tenant_id,)).fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(database_url.replace("+asyncpg", ""), timeout=5)
    try:
        return int(await pg.fetchval(sql, tenant_id))
    finally:
        await pg.close()


async def load_until_killed(
    url: str, token: str, concurrency: int, seconds: float, proc: subprocess.Popen[bytes]
) -> tuple[int, float]:
    """Admitted answers until the SIGKILL at ``seconds``; answers (count, elapsed)."""
    answered = 0
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal answered
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as http:
            while not stop.is_set():
                try:
                    response = await http.get(ROUTE)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code not in NOT_ADMITTED:
                    answered += 1

    started = time.monotonic()
    clients = [asyncio.create_task(client()) for _ in range(concurrency)]
    await asyncio.sleep(seconds)
    kill(proc)
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(*clients)
    return answered, elapsed


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="novaza-sigkill-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
    env |= {"NOVAZA_DATA_DIR": str(data_dir), "NOVAZA_ENV": "development",
            "NOVAZA_LOG_LEVEL": "WARNING",
            "NOVAZA_BILLING_FLUSH_INTERVAL_SECONDS": str(args.interval)}  # fmt: skip
    if args.database_url:
        env["NOVAZA_DATABASE_URL"] = args.database_url
    if args.redis_url:
        env["NOVAZA_REDIS_URL"] = args.redis_url
    novaza(env, "migrate")
    created = novaza(env, "tenants", "create", TENANT, "--name", "Sigkill", "--addon", "hl7_fhir",
                     "--activate")  # fmt: skip
    tenant_id = json.loads(created)["id"]
    token = novaza(env, "token", "--tenant", TENANT).strip()
    rounds = []
    proc, url = start(env, data_dir)
    admin = novaza(env, "token", "--admin").strip()
    limit = {"rateLimit": {"ratePerSecond": 100_000, "burst": 100_000}}
    httpx.put(f"{url}/admin/tenants/{TENANT}", json=limit,
              headers={"Authorization": f"Bearer {admin}"}).raise_for_status()  # fmt: skip
    time.sleep(2 * args.interval + 0.5)
    before = await counted(args.database_url, data_dir, tenant_id)
    for _ in range(args.rounds):
        at = random.uniform(args.seconds / 2, args.seconds)
        answered, elapsed = await load_until_killed(url, token, args.concurrency, at, proc)
        proc, url = start(env, data_dir)  # the next replica; drains Redis if there is one
        time.sleep(2 * args.interval + 0.5)
        after = await counted(args.database_url, data_dir, tenant_id)
        rate = answered / elapsed
        lost = answered - (after - before)
        rounds.append({"answered": answered, "counted": after - before, "rate": rate,
                       "lost": lost, "bound": rate * args.interval})  # fmt: skip
        before = after
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    store = "postgresql" if args.database_url else "sqlite"
    return {"store": store + (" + redis" if args.redis_url else ""), "rounds": rounds,
            "interval": args.interval, "concurrency": args.concurrency}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"store: {result['store']}, flush interval {args.interval} s")
    print(f"{'answered':>9} {'counted':>8} {'req/s':>7} {'lost':>6} {'bound':>6}")
    for r in result["rounds"]:
        print(f"{r['answered']:>9} {r['counted']:>8} {r['rate']:>7.0f} {r['lost']:>6} "
              f"{r['bound']:>6.0f}")  # fmt: skip
    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / f"usage_sigkill-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
