"""HL7 intake throughput and ACK latency: MLLP and HTTP, ADT^A08 and ORM^O01 NW, durable ACKs.

Runs a real ``novaza serve`` process per storage backend (SQLite; PostgreSQL when reachable),
drives it with C concurrent senders (MLLP: one connection each, one message in flight, as
interface engines do; HTTP: keep-alive clients), and prints messages/s and ACK latency
p50/p99. The baseline in the same run is python-hl7 parsing the same messages in a loop.

    .venv/bin/python benchmarks/hl7_intake.py [--messages 3000] [--concurrency 8] [--repeat 1]

Target (issue 5): >= 1,000 messages/s over MLLP with p99 ACK under 25 ms on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import uvloop
from readiness import wait_healthy
from sqlalchemy import event
from sqlalchemy import text as sql_text

import hl7 as python_hl7
from novaza_gateway.app import create_app
from novaza_gateway.config import Settings
from novaza_gateway.core import devkeys
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.hl7.batcher import IntakeBatcher
from novaza_gateway.hl7.intake import Received
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from novaza_gateway.hl7.parser import parse
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.settings import Hl7Settings
from novaza_gateway.migrate import upgrade

PG_ADMIN = os.environ.get("NOVAZA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
A08 = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260303140211||ADT^A08^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|A08|20260303140200\r"
    "PID|1||{mrn}^^^STMARYS^MR||Doe^Jane^A||19700101|F|||{n} Main St^^Boston^MA^02110\r"
    "PV1|1|O|RAD^^^STMARYS|||||||||||||||OP\r"
)
ORM = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260301094500||ORM^O01^ORM_O01|{cid}|P|2.5.1\r"
    "PID|1||{mrn}^^^STMARYS^MR||Doe^Jane^A||19700101|F\r"
    "ORC|NW|P{cid}|F{cid}||SC||^^^20260301110000||20260301094500|||1234^Kaur^Priya\r"
    "OBR|1|P{cid}|F{cid}|CT-CHEST^CT chest^LOCAL|||20260301094500|||||||||1234^Kaur^Priya||"
    "A{cid}|||||CT|||^^^20260301110000\r"
)


def messages(kind: str, count: int, run: str, offset: int = 0) -> list[bytes]:
    """``count`` messages for the 500 patients M0..M499; an A08's address is its number
    (plus ``offset``): the first run after the warm-up changes all but 500 patients' rows."""
    template = A08 if kind == "A08" else ORM
    return [
        template.format(cid=f"{run}{kind[0]}{n:07d}", mrn=f"M{n % 500}", n=n + offset).encode()
        for n in range(count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive_mllp(port: int, batch: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(reversed(batch))

    async def sender() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = MllpDecoder(1 << 20)
        while queue:
            payload = queue.pop()
            started = time.perf_counter()
            writer.write(frame(payload))
            await writer.drain()
            acks: list[bytes] = []
            while not acks:
                chunk = await reader.read(65536)
                if not chunk:  # the gateway hung up without an ACK: not measurable, stop
                    raise ConnectionError("connection closed without an ACK")
                acks = decoder.feed(chunk)
            latencies.append(time.perf_counter() - started)
            assert b"MSA|AA|" in acks[0], acks[0][:200]
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def drive_mllp_open(
    port: int, batch: list[bytes], connections: int, rate: float
) -> tuple[float, list[float]]:
    """Open loop: message i is due at start + i/rate and goes out on the first idle
    connection (one message in flight each, as engines send); its latency runs from when it
    was due, so time spent waiting for a free connection counts (no coordinated omission)."""
    latencies: list[float] = []
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, MllpDecoder]]
    idle = asyncio.Queue()
    for _ in range(connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        idle.put_nowait((reader, writer, MllpDecoder(1 << 20)))

    async def send_one(payload: bytes, due: float) -> None:
        conn = await idle.get()
        reader, writer, decoder = conn
        writer.write(frame(payload))
        acks: list[bytes] = []
        while not acks:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("connection closed without an ACK")
            acks = decoder.feed(chunk)
        latencies.append(time.perf_counter() - due)
        assert b"MSA|AA|" in acks[0], acks[0][:200]
        idle.put_nowait(conn)

    tasks = []
    started = time.perf_counter()
    for n, payload in enumerate(batch):
        due = started + n / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(send_one(payload, due)))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait()[1].close()
    return took, latencies


async def drive_http(
    url: str, token: str, path: str, batch: list[bytes], concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    retries: list[int] = []
    queue = list(reversed(batch))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/hl7-v2"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def sender() -> None:
            while queue:
                payload = queue.pop()
                started = time.perf_counter()
                response = await client.post(path, content=payload)
                while response.status_code == 503:  # store busy: a sender retries, as engines do
                    retries.append(1)
                    await asyncio.sleep(0.05)
                    response = await client.post(path, content=payload)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text[:300]

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        if retries:
            print(f"  ({len(retries)} answers were 503 and resent)", flush=True)
        return time.perf_counter() - started, latencies


def baseline(batch: list[bytes]) -> float:
    texts = [m.decode() for m in batch]
    started = time.perf_counter()
    for text in texts:
        python_hl7.parse(text)
    return len(texts) / (time.perf_counter() - started)


async def prepare(data_dir: Path, database_url: str | None) -> tuple[Settings, str]:
    settings = Settings(env="test", data_dir=data_dir, database_url=database_url, log_json=True)
    await asyncio.to_thread(upgrade, settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        admin = devkeys.mint_token(
            data_dir, subject="bench", scopes=["platform:admin"], tenant=None
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = {
                "slug": "bench",
                "name": "Bench",
                "status": "active",
                "addons": ["hl7_fhir"],
                "rateLimit": {"ratePerSecond": 100_000, "burst": 1_000_000},
                "settings": {"hl7": {"mllpRoutes": [{"receivingApplication": "NOVAZA"}]}},
            }
            response = await client.post(
                "/admin/tenants/", json=body, headers={"Authorization": f"Bearer {admin}"}
            )
            assert response.status_code == 201, response.text
    token = devkeys.mint_token(data_dir, subject="bench", scopes=["hl7:write"], tenant="bench")
    return settings, token


WORKERS = [1]  # --workers


def serve(
    data_dir: Path, database_url: str | None, http: int, mllp: int
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
    env.update(
        NOVAZA_DATA_DIR=str(data_dir), NOVAZA_ENV="test", NOVAZA_PORT=str(http),
        NOVAZA_MLLP_PORT=str(mllp), NOVAZA_LOG_LEVEL="WARNING",
    )  # fmt: skip
    if database_url:
        env["NOVAZA_DATABASE_URL"] = database_url
    log = (data_dir / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "novaza_gateway", "serve", "--workers", str(WORKERS[0])],
        env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    wait_healthy(f"http://127.0.0.1:{http}", process)
    return process


async def backend(
    name: str, database_url: str | None, count: int, concurrency: int, args: argparse.Namespace
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        _, token = await prepare(data_dir, database_url)
        http, mllp = free_port(), free_port()
        process = serve(data_dir, database_url, http, mllp)
        try:
            run = uuid.uuid4().hex[:4].upper()
            if args.warmup:  # steady state: patients known, planner statistics gathered
                for kind in args.kinds:
                    await drive_mllp(mllp, messages(kind, args.warmup, f"W{run}"), concurrency)
                await analyze(data_dir, database_url)
            rows = [
                (k, c, r) for k in args.kinds for c in args.channels for r in range(args.repeat)
            ]
            for kind, channel, rep in rows:  # a repeat changes every address again
                batch = messages(kind, count, f"{run}{channel[0]}{rep}", offset=rep * count)
                meter = await Meter.start(process.pid, database_url, http)
                if channel == "mllp" and args.rate:
                    took, lat = await drive_mllp_open(mllp, batch, concurrency, args.rate)
                elif channel == "mllp":
                    took, lat = await drive_mllp(mllp, batch, concurrency)
                else:
                    path = "/med/hl7/adt" if kind == "A08" else "/med/hl7/orm"
                    took, lat = await drive_http(
                        f"http://127.0.0.1:{http}", token, path, batch, concurrency
                    )
                used = await meter.stop(count)
                p50 = statistics.median(lat) * 1000
                p99 = percentile(lat, 0.99) * 1000
                rate, parsed = count / took, baseline(batch)
                shown = (
                    f"{channel} @ {args.rate:,.0f}/s"
                    if channel == "mllp" and args.rate
                    else channel
                )
                row = f"| {name} | {shown} | {kind} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |"
                print(f"{row} {used} {parsed:,.0f} |", flush=True)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc; 0 where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(pid: int) -> float:
    """A process's CPU and its children's (``--workers``: uvicorn's worker processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


class Meter:
    """CPU the gateway and this database's PostgreSQL backends spent on a row, per message,
    and the gateway's mean messages per group commit (from its /metrics)."""

    def __init__(self, pid: int, database_url: str | None, http: int | None) -> None:
        self.pid, self.database_url, self.http = pid, database_url, http
        self.gateway = 0.0
        self.backends: dict[int, float] = {}
        self.groups = (0.0, 0.0)

    @classmethod
    async def start(cls, pid: int, database_url: str | None, http: int | None) -> Meter:
        meter = cls(pid, database_url, http)
        meter.gateway = process_tree_cpu(pid)
        meter.backends = {p: cpu_seconds(p) for p in await meter.backend_pids()}
        meter.groups = meter.group_counts()
        return meter

    async def backend_pids(self) -> list[int]:
        if self.database_url is None:
            return []
        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
        try:
            name = self.database_url.rsplit("/", 1)[1]
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
        finally:
            await conn.close()
        return [int(r["pid"]) for r in rows]

    def group_counts(self) -> tuple[float, float]:
        if self.http is None:
            return 0.0, 0.0
        text = httpx.get(f"http://127.0.0.1:{self.http}/metrics", timeout=5).text
        found = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            for part in found:
                if line.startswith(f"novaza_hl7_intake_group_messages_{part} "):
                    found[part] += float(line.split()[-1])
        return found["sum"], found["count"]

    async def database_cpu(self, messages: int) -> str:
        """The database backends' CPU per message since ``start`` ("-" for SQLite)."""
        if self.database_url is None:
            return "-"
        pids = await self.backend_pids()
        spent = sum(cpu_seconds(p) - self.backends.get(p, 0.0) for p in pids)
        return f"{spent / messages * 1000:.3f}"

    async def stop(self, messages: int) -> str:
        gateway = (process_tree_cpu(self.pid) - self.gateway) / messages * 1000
        pids = await self.backend_pids()
        spent = sum(cpu_seconds(p) - self.backends.get(p, 0.0) for p in pids)
        database = f"{spent / messages * 1000:.2f}" if self.database_url else "-"
        total, count = (a - b for a, b in zip(self.group_counts(), self.groups, strict=True))
        group = f"{total / count:.1f}" if count else "-"
        return f"{gateway:.2f} | {database} | {group} |"


async def analyze(data_dir: Path, database_url: str | None) -> None:
    """What autovacuum does to a live database within a minute: planner statistics."""
    if database_url is None:
        with sqlite3.connect(data_dir / "novaza.db") as db:
            db.execute("ANALYZE")
        return
    conn = await asyncpg.connect(database_url, timeout=3)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def pg_database() -> tuple[str | None, str | None]:
    name = f"novaza_bench_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None, None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


async def drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def in_process(name: str, database_url: str | None, args: argparse.Namespace) -> None:
    """The intake's own cost, without sockets: messages parsed and handed to an
    ``IntakeBatcher`` in this process, ``--concurrency`` at a time (so groups of that size).
    Reported: the process's CPU per message (parsing, storing and processing, ACKs built),
    the database backends' CPU per message, and statements per group (BEGIN and COMMIT not
    counted). Steadier than rates on a shared machine."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        settings, _ = await prepare(data_dir, database_url)
        db = Database(create_engine(settings.sqlalchemy_url))
        statements = [0]

        def counted(*_: object) -> None:
            statements[0] += 1

        event.listen(db.engine.sync_engine, "before_cursor_execute", counted)
        async with db.engine.connect() as conn:
            query = sql_text("SELECT id FROM tenants WHERE slug = 'bench'")
            tenant_id = (await conn.execute(query)).scalar_one()
        routes = {"mllpRoutes": [{"receivingApplication": "NOVAZA"}]}
        ctx = Hl7Context(
            tenant_id, Actor("mllp:EPIC", tenant_id), Hl7Settings.model_validate(routes)
        )
        batcher = IntakeBatcher(db)
        batcher.start()

        async def feed(batch: list[bytes]) -> None:
            for i in range(0, len(batch), args.concurrency):
                wave = [
                    batcher.submit(Received(ctx, data, parse(data), "mllp"))
                    for data in batch[i : i + args.concurrency]
                ]
                for outcome in await asyncio.gather(*wave):
                    assert outcome.ack.code == "AA", outcome.ack.text[:200]

        try:
            run = uuid.uuid4().hex[:4].upper()
            for kind in args.kinds:
                await feed(messages(kind, args.warmup, f"W{run}"))
            await analyze(data_dir, database_url)
            for kind, rep in [(k, r) for k in args.kinds for r in range(args.repeat)]:
                batch = messages(kind, args.messages, f"{run}I{rep}", offset=rep * args.messages)
                meter = await Meter.start(os.getpid(), database_url, None)
                before, cpu, wall = statements[0], time.process_time(), time.perf_counter()
                await feed(batch)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                pg = await meter.database_cpu(args.messages)
                groups = -(-args.messages // args.concurrency)
                per_group = (statements[0] - before) / groups
                print(
                    f"| {name} | {kind} | {args.concurrency} | {cpu / args.messages * 1000:.3f} "
                    f"| {pg} | {per_group:.1f} | {args.messages / wall:,.0f} |",
                    flush=True,
                )
        finally:
            await batcher.stop()
            await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--channels", nargs="+", default=["mllp", "http"])
    parser.add_argument("--kinds", nargs="+", default=["A08", "ORM"])
    parser.add_argument(
        "--warmup", type=int, default=500, help="messages of each kind sent, then ANALYZE, first"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rows per kind and channel")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="MLLP open loop: offer this many messages/s over --concurrency connections and "
        "time each ACK from when its message was due (default: closed loop, as fast as ACKs)",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="the intake's CPU and statements, no sockets"
    )
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    args = parser.parse_args()
    WORKERS[0] = args.workers
    if args.in_process:
        print(
            "| store | message | msgs/group | gateway CPU ms/msg | PostgreSQL CPU ms/msg "
            "| statements/group | msgs/s |\n|---|---|---|---|---|---|---|"
        )
        if "sqlite" in args.stores:
            await in_process("SQLite", None, args)
        if "postgresql" in args.stores:
            url, name = await pg_database()
            if url and name:
                try:
                    await in_process("PostgreSQL", url, args)
                finally:
                    await drop(name)
        return
    print(
        f"{args.messages} messages per row, {args.concurrency} concurrent senders"
        f"{f' (MLLP open loop at {args.rate:,.0f}/s)' if args.rate else ''}, "
        f"after {args.warmup} warm-up messages of each kind and ANALYZE\n"
    )
    print(
        "| store | channel | message | msgs/s | ACK p50 ms | ACK p99 ms "
        "| gateway CPU ms/msg | PostgreSQL CPU ms/msg | msgs/group | python-hl7 parse/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    if "sqlite" in args.stores:
        await backend("SQLite", None, args.messages, args.concurrency, args)
    if "postgresql" not in args.stores:
        return
    url, name = await pg_database()
    if url and name:
        try:
            await backend("PostgreSQL", url, args.messages, args.concurrency, args)
        finally:
            await drop(name)
    else:
        print("| PostgreSQL | - | - | not reachable | | | | | | |")


if __name__ == "__main__":
    uvloop.run(main())  # the senders share the two CPUs with the gateway: keep them light
