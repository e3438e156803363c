"""One tenant's trouble and another tenant's ACK latency (issue 11, ADR 0018, 0019).

A real ``novaza serve`` per store. Tenant B (the victim) sends valid A08 and ORM NW: MLLP open
loop at ``--rate`` messages/s over ``--connections`` connections (latency from when each was
due), plus ``--http`` HTTP clients in a closed loop. Each round runs B's load alone, then
with tenant A (the noisy one) sending big messages, then poison (``--noise``), paced (a
tenant flooding the gateway's CPU is the rate limiter's business, not the group commit's):

- the largest order message allowed (``NOVAZA_HL7_MAX_ORDER_GROUPS``, 50 OBRs) over MLLP,
  ``--big-rate`` a second,
- a 5,000-OBR ORM (~470 KB, answered AR at the cap) over MLLP, ``--huge-rate`` a second,
- three HTTP senders of poison: a NUL in PID-5 (AR before the store, ``--nul-rate``), a
  value the store refuses (AE: the group is redone with a SAVEPOINT per message,
  ``--refused-rate``), a message row the store refuses (AR: each message of the group
  alone, ``--row-rate``). The refusals are real database errors,
  raised by a trigger the benchmark installs (PostgreSQL: SQLSTATE 22023; SQLite: RAISE).

Printed per row: B's MLLP ACK p50/p99/max and HTTP p99, B's messages answered AA (must be all),
A's messages answered and its big messages' own ACK latency.

    .venv/bin/python benchmarks/hl7_isolation.py [--seconds 15] [--rate 300] [--rounds 2]

Target (issue 11): B's ACK p99 under 100 ms while A's messages arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from hl7_intake import analyze, drop, free_port, percentile, pg_database, serve

from novaza_gateway.app import create_app
from novaza_gateway.config import Settings
from novaza_gateway.core import devkeys
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from novaza_gateway.migrate import upgrade

VICTIM = {"mllpRoutes": [{"receivingApplication": "NOVAZA", "receivingFacility": "RADIOLOGY"}]}
NOISY = {"mllpRoutes": [{"sendingFacility": "NOISY"}]}
PG_POISON = [
    """CREATE OR REPLACE FUNCTION bench_poison() RETURNS trigger AS $$
    BEGIN
      IF NEW.family_name = 'POISON' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER bench_poison BEFORE INSERT OR UPDATE ON clinical_patients "
    "FOR EACH ROW EXECUTE FUNCTION bench_poison()",
    """CREATE OR REPLACE FUNCTION bench_poison_row() RETURNS trigger AS $$
    BEGIN
      IF NEW.control_id LIKE 'POISONROW%' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22001';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER bench_poison_row BEFORE INSERT ON hl7_inbound_messages "
    "FOR EACH ROW EXECUTE FUNCTION bench_poison_row()",
]
SQLITE_POISON = [
    "CREATE TRIGGER bench_poison BEFORE INSERT ON clinical_patients "
    "WHEN NEW.family_name = 'POISON' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    "CREATE TRIGGER bench_poison_row BEFORE INSERT ON hl7_inbound_messages "
    "WHEN NEW.control_id LIKE 'POISONROW%' BEGIN SELECT RAISE(ABORT, 'refused'); END",
]
IDS = itertools.count()


def a08(cid: str, mrn: str, family: str = "Doe", facility: str = "STMARYS") -> bytes:
    return (
        f"MSH|^~\\&|EPIC|{facility}|NOVAZA|RADIOLOGY|20260303140211||ADT^A08^ADT_A01|{cid}|P|"
        f"2.5.1\rEVN|A08|20260303140200\rPID|1||{mrn}^^^{facility}^MR||{family}^Jane||19700101|F"
        f"\rPV1|1|O\r"
    ).encode()


def orm(cid: str, mrn: str, procedures: int = 1, facility: str = "STMARYS") -> bytes:
    head = (
        f"MSH|^~\\&|EPIC|{facility}|NOVAZA|RADIOLOGY|20260301094500||ORM^O01^ORM_O01|{cid}|P|"
        f"2.5.1\rPID|1||{mrn}^^^{facility}^MR||Doe^Jane||19700101|F\r"
        f"ORC|NW|P{cid}|F{cid}||SC\r"
    )
    obrs = "".join(
        f"OBR|{n}|P{cid}|F{cid}|CT-CHEST^CT chest^LOCAL{'|' * 14}A{cid}-{n}|||||CT\r"
        for n in range(1, procedures + 1)
    )
    return (head + obrs).encode()


def victim_message(run: str) -> tuple[bytes, str]:
    n = next(IDS)
    if n % 2:
        return a08(f"B{run}{n}", f"M{n % 500}"), "/med/hl7/adt"
    return orm(f"B{run}{n}", f"M{n % 500}"), "/med/hl7/orm"


@dataclass
class Tally:
    mllp: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    noisy: Counter[str] = field(default_factory=Counter)
    big: list[float] = field(default_factory=list)
    huge: list[float] = field(default_factory=list)


class Connection:
    """One MLLP connection, one message in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.decoder = reader, writer, MllpDecoder(1 << 20)

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, message: bytes) -> bytes:
        self.writer.write(frame(message))
        acks: list[bytes] = []
        while not acks:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError("closed without an ACK")
            acks = self.decoder.feed(chunk)
        return acks[0]


def ack_code(ack: bytes) -> str:
    return ack.split(b"MSA|", 1)[1][:2].decode()


async def victim_mllp(port: int, seconds: float, rate: float, conns: int, tally: Tally) -> None:
    """Open loop: message i due at start + i/rate, on the first idle connection."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await Connection.open(port))
    run = uuid.uuid4().hex[:4]

    async def one(message: bytes, due: float) -> None:
        connection = await idle.get()
        tally.answers[ack_code(await connection.send(message))] += 1
        tally.mllp.append(time.perf_counter() - due)
        idle.put_nowait(connection)

    tasks = []
    started = time.perf_counter()
    for n in range(int(seconds * rate)):
        due = started + n / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(victim_message(run)[0], due)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().writer.close()


async def victim_http(url: str, token: str, stop: asyncio.Event, tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/hl7-v2"}
    run = uuid.uuid4().hex[:4]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            message, path = victim_message(run)
            started = time.perf_counter()
            response = await client.post(path, content=message)
            tally.http.append(time.perf_counter() - started)
            tally.answers["AA" if response.status_code == 200 else str(response.status_code)] += 1


async def paced(stop: asyncio.Event, rate: float) -> AsyncIterator[None]:
    """Yield at most ``rate`` times a second (a sender busier than that waits for answers)."""
    due = time.perf_counter()
    while not stop.is_set():
        yield
        due += 1 / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)


async def noisy_mllp(
    port: int, procedures: int, rate: float, stop: asyncio.Event, into: list[float]
) -> None:
    connection = await Connection.open(port)
    run = uuid.uuid4().hex[:4]
    async for _ in paced(stop, rate):
        n = next(IDS)
        message = orm(f"A{run}{n}", f"N{n}", procedures, facility="NOISY")
        started = time.perf_counter()
        await connection.send(message)
        into.append(time.perf_counter() - started)
    connection.writer.close()


async def noisy_http(
    url: str, token: str, kind: str, rate: float, stop: asyncio.Event, tally: Tally
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/hl7-v2"}
    run = uuid.uuid4().hex[:4]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        async for _ in paced(stop, rate):
            n = next(IDS)
            if kind == "nul":
                message = a08(f"A{run}{n}", f"N{n}", "POISONNAME^O\x00NE", "NOISY")
            elif kind == "refused":
                message = a08(f"A{run}{n}", f"N{n}", "POISON", "NOISY")
            else:
                message = a08(f"POISONROW{run}{n}", f"N{n}", "ROW", "NOISY")
            response = await client.post("/med/hl7/adt", content=message)
            tally.noisy[f"{kind} {response.status_code}"] += 1


async def row(url: str, mllp: int, tokens: dict[str, str], noise: str, args: Any) -> Tally:
    tally, stop = Tally(), asyncio.Event()
    background = [
        asyncio.create_task(victim_http(url, tokens["victim"], stop, tally))
        for _ in range(args.http)
    ]
    if noise in ("big", "both"):
        background += [
            asyncio.create_task(noisy_mllp(mllp, 50, args.big_rate, stop, tally.big)),
            asyncio.create_task(noisy_mllp(mllp, 5000, args.huge_rate, stop, tally.huge)),
        ]
    if noise in ("poison", "both"):
        background += [
            *(
                asyncio.create_task(noisy_http(url, tokens["noisy"], kind, rate, stop, tally))
                for kind, rate in (
                    ("nul", args.nul_rate),
                    ("refused", args.refused_rate),
                    ("row", args.row_rate),
                )
                if rate > 0
            ),
        ]
    await victim_mllp(mllp, args.seconds, args.rate, args.connections, tally)
    stop.set()
    await asyncio.gather(*background)
    return tally


def ms(values: list[float], q: float | None = None) -> str:
    if not values:
        return "-"
    value = statistics.median(values) if q == 0.5 else max(values) if q is None else None
    return f"{(value if value is not None else percentile(values, q or 0)) * 1000:.1f}"


def report(store: str, noise: str, tally: Tally) -> None:
    victims = len(tally.mllp) + len(tally.http)
    aa = tally.answers["AA"]
    noisy = ", ".join(f"{k}: {v}" for k, v in sorted(tally.noisy.items()))
    if tally.big or tally.huge:
        noisy += f"{', ' if noisy else ''}50-OBR: {len(tally.big)}, 5,000-OBR: {len(tally.huge)}"
    load = {"none": "B alone", "big": "+ A big", "poison": "+ A poison", "both": "+ A both"}
    print(
        f"| {store} | {load[noise]} | {ms(tally.mllp, 0.5)} "
        f"| **{ms(tally.mllp, 0.99)}** | {ms(tally.mllp)} | {ms(tally.http, 0.99)} "
        f"| {aa:,}/{victims:,} | {ms(tally.big, 0.5)} / {ms(tally.big, 0.99)} "
        f"| {ms(tally.huge, 0.5)} | {noisy or '-'} |",
        flush=True,
    )


async def prepare(data_dir: Path, database_url: str | None) -> dict[str, str]:
    settings = Settings(env="test", data_dir=data_dir, database_url=database_url, log_json=True)
    await asyncio.to_thread(upgrade, settings)
    app = create_app(settings)
    admin = devkeys.mint_token(data_dir, subject="bench", scopes=["platform:admin"], tenant=None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for slug, hl7 in (("victim", VICTIM), ("noisy", NOISY)):
                body = {
                    "slug": slug, "name": slug, "status": "active", "addons": ["hl7_fhir"],
                    "rateLimit": {"ratePerSecond": 100_000, "burst": 1_000_000},
                    "settings": {"hl7": hl7},
                }  # fmt: skip
                response = await client.post(
                    "/admin/tenants/", json=body, headers={"Authorization": f"Bearer {admin}"}
                )
                assert response.status_code == 201, response.text
    if database_url is None:
        with sqlite3.connect(data_dir / "novaza.db") as db:
            for statement in SQLITE_POISON:
                db.execute(statement)
    else:
        conn = await asyncpg.connect(database_url, timeout=3)
        try:
            for statement in PG_POISON:
                await conn.execute(statement)
        finally:
            await conn.close()
    return {
        slug: devkeys.mint_token(data_dir, subject="bench", scopes=["hl7:write"], tenant=slug)
        for slug in ("victim", "noisy")
    }


async def backend(store: str, database_url: str | None, args: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        tokens = await prepare(data_dir, database_url)
        http, mllp = free_port(), free_port()
        process = serve(data_dir, database_url, http, mllp)
        url = f"http://127.0.0.1:{http}"
        try:
            warm = await Connection.open(mllp)  # patients known, planner statistics gathered
            for _ in range(args.warmup):
                await warm.send(victim_message("W")[0])
            warm.writer.close()
            await analyze(data_dir, database_url)
            for _ in range(args.rounds):
                for noise in ("none", *args.noise):
                    report(store, noise, await row(url, mllp, tokens, noise, args))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=300, help="B's MLLP messages/s")
    parser.add_argument("--connections", type=int, default=16, help="B's MLLP connections")
    parser.add_argument("--http", type=int, default=2, help="B's HTTP clients")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--noise", nargs="+", default=["big", "poison"], choices=["big", "poison", "both"],
        help="rows after B alone, each round: A's big messages, A's poison, or both",
    )  # fmt: skip
    parser.add_argument("--big-rate", type=float, default=1, help="A's 50-OBR ORMs/s")
    parser.add_argument("--huge-rate", type=float, default=1, help="A's 5,000-OBR ORMs/s")
    parser.add_argument("--nul-rate", type=float, default=5, help="A's NUL poison/s")
    parser.add_argument("--refused-rate", type=float, default=1, help="A's refused values/s")
    parser.add_argument("--row-rate", type=float, default=0.5, help="A's refused rows/s")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    print(
        f"B: MLLP open loop {args.rate:,.0f}/s over {args.connections} connections + "
        f"{args.http} HTTP clients, {args.seconds:.0f} s a row; A per second: "
        f"{args.big_rate:g} 50-OBR ORMs, {args.huge_rate:g} 5,000-OBR, {args.nul_rate:g} NUL, "
        f"{args.refused_rate:g} refused values, {args.row_rate:g} refused rows\n\n"
        "| store | load | B MLLP p50 ms | B MLLP p99 ms | B MLLP max ms | B HTTP p99 ms "
        "| B answered AA | A 50-OBR ACK p50 / p99 ms | A 5,000-OBR AR ms | A's answers |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    if "sqlite" in args.stores:
        await backend("SQLite", None, args)
    if "postgresql" in args.stores:
        url, name = await pg_database()
        if url and name:
            try:
                await backend("PostgreSQL", url, args)
            finally:
                await drop(name)


if __name__ == "__main__":
    uvloop.run(main())
