"""Throughput through HAProxy with 1, 2 and 3 replicas (same run), and the capacity figures.

Three ``novaza serve`` processes on one PostgreSQL database and one Redis (tests/cluster.py);
for each of 1, 2, 3 replicas behind a fresh HAProxy: HTTP requests/s of a whoami + QIDO mix
(wrk, keep-alive connections) and HL7 messages/s over MLLP through HAProxy's TCP frontend (one
message in flight per connection, as interface engines send). Then, per route class on one
replica: requests per CPU-second of the replica, Redis commands (INFO commandstats deltas) and
PostgreSQL transactions and row writes (pg_stat_database deltas) per request / per message,
and archive bytes per stored study. Everything runs on this machine, senders included: on 2
cores the replicas compete with PostgreSQL, Redis, HAProxy and the load generators, so the
scaling ratio measures CPU sharing here, not the gateway's ceiling (docs/scaling.md).

    .venv/bin/python benchmarks/replicas.py [--seconds 8] [--connections 16] [--mllp 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' harness

from tests import cluster as clusters
from tests import procs
from tests.hl7.corpus import HL7_SETTINGS
from tests.imaging.dicom import make_instance, multipart, shipped_bytes, uid
from tests.replica_load import A08, ORM

from novaza_gateway.hl7.mllp import MllpDecoder, frame

PG_ADMIN = os.environ.get("NOVAZA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NOVAZA_TEST_REDIS", "redis://127.0.0.1:6379/0")
WRK_MIX = """
local n = 0
request = function()
  n = n + 1
  if n %% 2 == 0 then
    return wrk.format("GET", "/med/qido/studies?PatientID=PAT-B&limit=10")
  end
  return wrk.format("GET", "/api/v1/whoami")
end
"""


# ----------------------------------------------------------------------------- load


def wrk(url: str, token: str, seconds: float, connections: int, script: Path) -> dict[str, float]:
    """Closed-loop HTTP load with wrk: requests/s and non-2xx answers."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "-s",
            str(script),
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "requests": total, "non2xx": int(bad.group(1)) if bad else 0}


async def mllp(port: int, seconds: float, connections: int, run: str) -> dict[str, float]:
    """ADT A08 / ORM NW alternating, one in flight per connection: messages/s (all AA)."""
    counts: Counter[str] = Counter()
    until = time.monotonic() + seconds

    async def sender(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = MllpDecoder(1 << 20)
        for i in range(10**9):
            if time.monotonic() >= until:
                break
            cid = f"{run}{n:02d}{i:07d}"
            template = A08 if i % 2 else ORM
            writer.write(frame(template.format(cid=cid, mrn=f"M{i % 500}", n=i).encode()))
            acks: list[bytes] = []
            while not acks:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError("closed without an ACK")
                acks = decoder.feed(chunk)
            counts["AA" if b"MSA|AA|" in acks[0] else "other"] += 1
        writer.close()

    began = time.monotonic()
    await asyncio.gather(*(sender(n) for n in range(connections)))
    took = time.monotonic() - began
    return {"rate": counts["AA"] / took, "messages": counts["AA"], "other": counts["other"]}


# ----------------------------------------------------------------------------- counters


class Counters:
    """Redis commands, PostgreSQL commits and row writes, replica CPU: a snapshot."""

    def __init__(self, pg_url: str, replicas: list[clusters.Replica]) -> None:
        self.pg_url, self.replicas = pg_url, replicas
        self.redis = redis.Redis.from_url(REDIS_URL)

    async def take(self) -> dict[str, float]:
        await asyncio.sleep(1.2)  # PostgreSQL 15 publishes backend statistics about once a second
        stats = self.redis.info("commandstats")
        values = {"redis": float(sum(v["calls"] for v in stats.values()))}
        values.update({f"redis:{k.split('_', 1)[1]}": float(v["calls"]) for k, v in stats.items()})
        conn = await asyncpg.connect(self.pg_url)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted"
                " FROM pg_stat_database WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        assert row is not None
        values.update({k: float(v) for k, v in dict(row).items()})
        values["cpu"] = sum(r.cpu_seconds() for r in self.replicas if r.server)
        values["wall"] = time.monotonic()
        return values


def delta(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Totals between two snapshots, and how many requests they cover."""
    return {**{k: after[k] - before.get(k, 0.0) for k in after}, "count": count}


# ----------------------------------------------------------------------------- the run


async def per_route(
    counters: Counters, proxy: clusters.HaProxy, token: str, count: int
) -> dict[str, dict[str, float]]:
    """``count`` requests of each class, sequential, through HAProxy to one replica, and an
    idle span first: what the background (loops, flushes, health checks) costs per second."""
    headers = {"Authorization": f"Bearer {token}"}
    results = {}
    async with httpx.AsyncClient(base_url=proxy.url, headers=headers, timeout=30) as client:

        async def whoami() -> None:
            assert (await client.get("/api/v1/whoami")).status_code == 200

        async def qido() -> None:
            answer = await client.get("/med/qido/studies", params={"PatientID": "PAT-B"})
            assert answer.status_code == 200

        async def stow() -> None:
            body, content_type = multipart([make_instance(study=uid(), patient_id="PAT-S")])
            answer = await client.post(
                "/med/stow/studies", content=body, headers={"Content-Type": content_type}
            )
            assert answer.status_code == 200, answer.text

        await asyncio.sleep(3.0)  # the previous phase's usage flushed and relayed
        before = await counters.take()
        await asyncio.sleep(5.0)
        results["idle"] = delta(before, await counters.take(), 1)
        for name, action in [("whoami", whoami), ("qido", qido), ("stow", stow)]:
            before = await counters.take()
            for _ in range(count):
                await action()
            results[name] = delta(before, await counters.take(), count)
    before = await counters.take()
    sent = await mllp(proxy.mllp_port, 5.0, 1, f"C{uuid.uuid4().hex[:4]}")
    results["hl7"] = delta(before, await counters.take(), int(sent["messages"]))
    return results


def without_idle(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per request, minus what the idle background did over as long a span."""
    idle = results["idle"]
    out = {}
    for name, r in results.items():
        if name != "idle":
            share = r["wall"] / idle["wall"]
            out[name] = {
                k: (r[k] - idle.get(k, 0.0) * share) / r["count"]
                for k in r
                if k not in {"wall", "count"}
            }
    return out


def archive_bytes(cluster: clusters.Cluster) -> int:
    roots = [r.data_dir / "imaging" for r in cluster.replicas] + [cluster.root / "archive"]
    return sum(
        f.stat().st_size for root in roots if root.exists() for f in root.rglob("*") if f.is_file()
    )


def study_bytes(cluster: clusters.Cluster, base: str, token: str) -> list[tuple[str, int, int]]:
    """Archive growth per stored study of one real instance (pydicom's own files)."""
    out = []
    headers = {"Authorization": f"Bearer {token}"}
    for name in ["CT_small.dcm", "MR_small.dcm"]:
        data = shipped_bytes(name)
        body, content_type = multipart([data])
        before = archive_bytes(cluster)
        answer = httpx.post(
            f"{base}/med/stow/studies",
            content=body,
            timeout=30,
            headers={**headers, "Content-Type": content_type},
        )
        assert answer.status_code == 200, answer.text
        out.append((name, len(data), archive_bytes(cluster) - before))
    return out


async def scale(
    cluster: clusters.Cluster, token: str, args: argparse.Namespace, counters: Counters
) -> list[Any]:
    """Each size in turn; PostgreSQL commits and rows per HL7 message under concurrent
    senders (group commit) are printed per size (background included: it is small beside)."""
    rows = []
    script = cluster.root / "mix.lua"
    script.write_text(WRK_MIX.replace("%%", "%"))
    for count in (1, 2, 3):
        with clusters.balanced(cluster, count) as proxy:
            for replica in cluster.replicas[:count]:  # warm: connections, caches, JIT of plans
                httpx.get(
                    f"{replica.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
                )
            cpu = sum(r.cpu_seconds() for r in cluster.replicas)
            http = wrk(proxy.url, token, args.seconds, args.connections, script)
            http_cpu = sum(r.cpu_seconds() for r in cluster.replicas) - cpu
            before = await counters.take()
            hl7 = await mllp(
                proxy.mllp_port, args.seconds, args.mllp, f"S{count}{uuid.uuid4().hex[:3]}"
            )
            pg = delta(before, await counters.take(), int(hl7["messages"]))
            served = Counter(r[0] for r in proxy.requests())
        rows.append((count, http, http_cpu, hl7, served))
        print(
            f"{count} replica(s): {http['rate']:8.0f} req/s whoami+QIDO "
            f"({http['non2xx']} non-2xx, "
            f"{http_cpu / max(http['requests'], 1) * 1e6:.0f} µs replica CPU/req), "
            f"{hl7['rate']:6.0f} HL7 msgs/s ({hl7['other']:.0f} not AA); served by {dict(served)}",
            flush=True,
        )
        per = {k: round(pg[k] / pg["count"], 2) for k in ("xact_commit", "tup_inserted", "redis")}
        print(f"  per HL7 message, {args.mllp} senders: {per}", flush=True)
    return rows


async def setup(cluster: clusters.Cluster, base: str) -> str:
    slug = f"bench-{uuid.uuid4().hex[:6]}"
    unlimited = {"ratePerSecond": 100_000, "burst": 100_000}
    cluster.create_tenant(
        base,
        slug,
        plan="enterprise",
        addons=["medical_imaging", "hl7_fhir", "emr"],
        settings={"hl7": HL7_SETTINGS},
        rateLimit=unlimited,
    )
    token = cluster.token(slug)
    headers = {"Authorization": f"Bearer {token}"}
    for n in range(20):  # a patient with studies for QIDO to find
        body, content_type = multipart(
            [make_instance(study=uid(), patient_id="PAT-B", instance_number=n)]
        )
        answer = httpx.post(
            f"{base}/med/stow/studies",
            content=body,
            timeout=30,
            headers={**headers, "Content-Type": content_type},
        )
        assert answer.status_code == 200, answer.text
    return token


async def database() -> str:
    name = f"novaza_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def drop(url: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def report(rows: list[Any], route: dict[str, dict[str, float]], studies: list[Any]) -> None:
    base = rows[0]
    print("\nreplicas | whoami+QIDO req/s | ratio to 1 | HL7 msgs/s | ratio to 1")
    for count, http, _, hl7, _ in rows:
        print(
            f"{count:8d} | {http['rate']:17.0f} | {http['rate'] / base[1]['rate']:10.2f} | "
            f"{hl7['rate']:10.0f} | {hl7['rate'] / base[3]['rate']:10.2f}"
        )
    print("\nper request (idle background subtracted), one replica:")
    print(
        "class  | replica CPU ms | req/s per core | Redis cmds | PG commits"
        " | PG rows inserted | PG rows updated"
    )
    for name, r in route.items():
        per_core = 1 / r["cpu"] if r["cpu"] > 0 else float("inf")
        print(
            f"{name:6} | {r['cpu'] * 1000:14.2f} | {per_core:14.0f} | {r['redis']:10.2f} | "
            f"{r['xact_commit']:10.2f} | {r['tup_inserted']:16.2f} | {r['tup_updated']:15.2f}"
        )
    print("Redis commands per request by name (idle background subtracted):")
    for name, r in route.items():
        named = {k[6:]: round(v, 2) for k, v in r.items() if k.startswith("redis:") and v >= 0.05}
        print(f"  {name}: {named}")
    for name, size, grown in studies:
        print(f"archive: one {name} instance of {size} bytes stored as {grown} bytes")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--mllp", type=int, default=8)
    parser.add_argument("--per-route", type=int, default=200)
    args = parser.parse_args()
    pg_url = await database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            cluster = clusters.Cluster(
                root,
                pg_url,
                REDIS_URL,
                3,
                log_level="WARNING",
                tenant_cache_ttl_seconds="60",
                ratelimit_redis_timeout_ms="250",
            )
            procs.run_cli(cluster.env, "migrate")
            try:
                cluster.start()
                with clusters.balanced(cluster, 3) as proxy:
                    token = await setup(cluster, proxy.url)
                counters = Counters(pg_url, cluster.replicas[:1])
                rows = await scale(cluster, token, args, counters)
                with clusters.balanced(cluster, 1) as proxy:
                    measured = await per_route(counters, proxy, token, args.per_route)
                    route = without_idle(measured)
                    idle = measured["idle"]
                    studies = study_bytes(cluster, proxy.url, token)
            finally:
                cluster.stop()
        report(rows, route, studies)
        print(
            "idle background, all 3 replicas, per second: "
            + ", ".join(
                f"{k} {idle[k] / idle['wall']:.1f}"
                for k in ("redis", "xact_commit", "tup_inserted", "tup_updated")
            )
            + "; Redis by name: "
            + str(
                {
                    k[6:]: round(v / idle["wall"], 1)
                    for k, v in idle.items()
                    if k[:6] == "redis:" and v
                }
            )
        )
    finally:
        await drop(pg_url)


if __name__ == "__main__":
    asyncio.run(main())
