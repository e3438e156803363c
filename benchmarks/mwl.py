"""Modality worklist read paths over one worklist, each against the same baseline in the run.

Baseline: ``imaging.worklist.find()`` called in-process (the query both readers share).
Measured: the REST list (``GET /med/imaging/worklist``, in-process ASGI, pages of 500) and
the DICOM MWL SCP (C-FIND over loopback from pynetdicom and from dcmtk's findscu, the
threads-to-loop hop included), for
a narrow filter (one modality on one day) and the whole open worklist.

Run: ``.venv/bin/python benchmarks/mwl.py [--items 2000] [--rounds 20] [--pg URL]``.
SQLite in a temporary data dir unless ``--pg`` names a PostgreSQL database to use (its
tables are truncated first).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import _truncate_pg, gateway_settings, start_gateway
from tests.imaging.workflow import workflow_tenant

from novaza_gateway.clinical import orders, patients
from novaza_gateway.clinical.orders import ProcedureRequest
from novaza_gateway.clinical.patients import Demographics, Identifier, PatientData
from novaza_gateway.core.audit import Actor
from novaza_gateway.imaging import worklist
from novaza_gateway.imaging.mwl_scp import MWL_FIND
from novaza_gateway.imaging.worklist import WorklistFilter
from novaza_gateway.migrate import upgrade

MODALITIES = ("CT", "MR", "US", "CR", "MG")
WORKLIST = "/med/imaging/worklist"
SPS, DATE = "ScheduledProcedureStepSequence", "ScheduledProcedureStepStartDate"
START = datetime(2026, 3, 2, 7, tzinfo=UTC)


async def fill(db: object, tenant_id: str, items: int) -> None:
    actor = Actor("bench", tenant_id)
    async with db.session_scope() as session:  # type: ignore[attr-defined]
        for n in range(items):
            patient, _ = await patients.register(
                session,
                actor,
                tenant_id,
                PatientData(
                    [Identifier(f"MRN{n // 2:06d}", "BENCH", "MR")],
                    Demographics(family_name=f"Family{n // 2}", given_name="Given"),
                ),
            )
            await orders.place(
                session,
                actor,
                tenant_id,
                patient,
                ProcedureRequest(
                    placer_order_number=f"ORD{n:06d}",
                    accession_number=f"ACC{n:06d}",
                    requested_procedure_code="PROC",
                    requested_procedure_description="Benchmark procedure",
                    modality=MODALITIES[n % len(MODALITIES)],
                    station_ae_title="BENCH_AE",
                    scheduled_start=START + timedelta(minutes=10 * n),
                ),
            )
            if n % 500 == 499:
                await session.flush()


def c_find(port: int, identifier: Dataset) -> int:
    ae = AE(ae_title="BENCH_MOD")
    ae.add_requested_context(MWL_FIND)
    assoc = ae.associate("127.0.0.1", port)
    assert assoc.is_established
    found = 0
    for status, answer in assoc.send_c_find(identifier, MWL_FIND):
        if answer is not None and int(status.Status) == 0xFF00:
            found += 1
    assoc.release()
    return found


def mwl_query(modality: str | None, day: str | None) -> Dataset:
    ds = Dataset()
    ds.PatientName = ds.PatientID = ds.AccessionNumber = ds.StudyInstanceUID = ""
    step = Dataset()
    step.Modality = modality or ""
    step.ScheduledProcedureStepStartDate = day or ""
    step.ScheduledProcedureStepStartTime = ""
    step.ScheduledStationAETitle = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


async def timed(rounds: int, call: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    samples = []
    count = 0
    for _ in range(rounds):
        started = time.perf_counter()
        count = await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], count


class Readers:
    """The three ways to read one filter: find() in-process, REST pages, MWL C-FIND."""

    def __init__(self, gw: Any, tenant_id: str, auth: dict[str, str], items: int) -> None:
        self.gw, self.tenant_id, self.auth, self.items = gw, tenant_id, auth, items

    async def direct(self, wanted: WorklistFilter) -> int:
        async with self.gw.app.state.db.sessionmaker() as session:
            found = await worklist.find(session, self.tenant_id, wanted, limit=self.items + 1)
            return len(found)

    async def rest(self, params: dict[str, str]) -> int:
        count, cursor = 0, None
        while True:
            query = {**params, "limit": "500", **({"cursor": cursor} if cursor else {})}
            response = await self.gw.client.get(WORKLIST, params=query, headers=self.auth)
            body = response.json()
            count += len(body["data"])
            cursor = body["nextCursor"]
            if not cursor:
                return count

    async def dicom(self, identifier: Dataset) -> int:
        return await asyncio.to_thread(c_find, self.gw.app.state.mwl.port, identifier)

    async def findscu(self, keys: list[str]) -> int:
        """dcmtk's findscu (C++) as the modality: the SCP's cost without a Python SCU."""
        with tempfile.TemporaryDirectory() as out:
            args = ["-W", "-X", "-od", out, "-aet", "BENCH_MOD"]
            for key in keys:
                args += ["-k", key]
            process = await asyncio.create_subprocess_exec(
                "findscu", *args, "127.0.0.1", str(self.gw.app.state.mwl.port)
            )
            assert await process.wait() == 0
            return len(list(Path(out).glob("rsp*.dcm")))


async def run(items: int, rounds: int, url: str, data: Path) -> None:
    settings = gateway_settings(
        data, url, mwl_port=0, mwl_max_results=items, tenant_cache_ttl_seconds=0.1
    )
    async for gw in start_gateway(settings):
        auth = await workflow_tenant(gw, "bench", ae_titles=("BENCH_MOD",))
        tenant_id = gw.tenants["bench"]["id"]
        started = time.perf_counter()
        await fill(gw.app.state.db, tenant_id, items)
        print(f"{url.split(':')[0]}: {items} items filled in {time.perf_counter() - started:.1f} s")
        await asyncio.sleep(0.3)
        readers = Readers(gw, tenant_id, auth, items)
        day_from = START.replace(hour=0) + timedelta(days=1)
        day_to = day_from + timedelta(days=1)
        shapes = {
            "CT on one day": (
                WorklistFilter(modality="CT", start_from=day_from, start_to=day_to),
                {
                    "modality": "CT",
                    "scheduledFrom": day_from.isoformat(),
                    "scheduledTo": day_to.isoformat(),
                },
                mwl_query("CT", day_from.strftime("%Y%m%d")),
                [f"{SPS}[0].Modality=CT", f"{SPS}[0].{DATE}={day_from.strftime('%Y%m%d')}"],
            ),
            "whole worklist": (WorklistFilter(), {}, mwl_query(None, None), [f"{SPS}[0].Modality"]),
        }
        for name, (wanted, params, identifier, keys) in shapes.items():
            base = await timed(rounds, partial(readers.direct, wanted))
            print(f"{name}: {base[2]} items")
            rows = (
                ("find() in-process", base),
                ("REST", await timed(rounds, partial(readers.rest, params))),
                ("MWL pynetdicom SCU", await timed(rounds, partial(readers.dicom, identifier))),
                ("MWL findscu", await timed(rounds, partial(readers.findscu, keys))),
            )
            for label, (p50, p95, count) in rows:
                assert count == base[2], (label, count, base[2])
                print(f"  {label:18} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  ({p50 / base[0]:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pg", default=None, help="a PostgreSQL database to use (truncated)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        url = args.pg or f"sqlite:///{data / 'novaza.db'}"
        upgrade(gateway_settings(data, url))
        if args.pg:
            asyncio.run(_truncate_pg(args.pg))
        asyncio.run(run(args.items, args.rounds, url, data))


if __name__ == "__main__":
    main()
