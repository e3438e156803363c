"""Usage metering: an in-memory aggregate on the request path, flushed in idempotent batches.

``record`` adds to a dict keyed by (tenant, meter, dimensions, hour): no I/O. Every second
(and on graceful shutdown) the flusher seals the dict into a *batch* with a fixed identity:
each row is stored under ``(tenant_id, source, event_id)`` with ``source`` this process's
instance and ``event_id`` = batch number + row number, inserted with ON CONFLICT DO NOTHING.
A batch stays pending until its transaction is known to have committed; a retry after a
failure (or after a commit whose acknowledgement was lost) inserts the same keys again and
counts nothing twice. Events recorded with their own ``source`` and ``event_id`` keep those.
On shutdown a batch neither Redis (when configured, ``billing/relay.py``) nor the database
takes is spooled to files in the spool directory (``DATA_DIR/billing-spool/`` unless
``NOVAZA_BILLING_SPOOL_DIR`` names a volume that outlives the pod), adopted by the next
start or by any replica sharing that directory (ADR 0064), so a clean stop loses nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing.models import UsageHourly, UsageRecord
from novaza_gateway.core.db import Database, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.metering import Dimensions

log = logging.getLogger("novaza.billing.metering")

AggregateKey = tuple[str, str, Dimensions, int]  # tenant, meter, dimensions, hour (epoch)
KeyedEvent = tuple[str, str, str, str, Dimensions, int, int]  # tenant, source, id, meter, ...


@dataclass(frozen=True, slots=True)
class UsageRow:
    tenant_id: str
    source: str
    event_id: str
    meter: str
    dimensions: str
    hour: datetime
    quantity: int

    def as_values(self, recorded_at: datetime) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "source": self.source,
            "event_id": self.event_id,
            "meter": self.meter,
            "dimensions": self.dimensions,
            "hour": self.hour,
            "quantity": self.quantity,
            "recorded_at": recorded_at,
        }


@functools.lru_cache(maxsize=4096)  # a handful of distinct values, one per sealed row
def dimensions_key(dimensions: Dimensions) -> str:
    """``k=v,k=v``, cut to the column's 255 characters (a batch must never fail on data)."""
    return ",".join(f"{k}={v}" for k, v in dimensions)[:255]


@functools.lru_cache(maxsize=256)
def _hour(epoch_hour: int) -> datetime:
    return datetime.fromtimestamp(epoch_hour * 3600, UTC)


class UsageMeter:
    """Implements ``core.metering.UsageRecorder``; owns the pending batches."""

    def __init__(self, instance: str | None = None, clock: Callable[[], float] = time.time):
        self.instance = instance or f"gw-{new_id()[:12]}"
        self.clock = clock
        self._aggregate: dict[AggregateKey, int] = {}
        self._keyed: dict[tuple[str, str, str], KeyedEvent] = {}
        self._batch_no = 0
        self.pending: list[list[UsageRow]] = []
        self.flushed_rows = 0
        self.flush_generation = 0  # bumped when batches leave the process (quota reloads)
        self.touched: set[tuple[str, str]] = set()  # (tenant, meter) sealed since taken
        # One hand-off of pending batches at a time (a flush here, a push to the Redis relay):
        # two interleaved would each pop pending[0] after their await, and the second pop
        # dropped a batch unwritten.
        self.handing_off = asyncio.Lock()

    def record(
        self,
        tenant_id: str,
        meter: str,
        quantity: int = 1,
        *,
        dimensions: Dimensions = (),
        source: str | None = None,
        event_id: str | None = None,
    ) -> None:
        hour = int(self.clock() // 3600)
        if event_id is not None:
            event_source = source or "external"
            key = (tenant_id, event_source, event_id)
            if key not in self._keyed:
                self._keyed[key] = (
                    tenant_id, event_source, event_id, meter, dimensions, hour, quantity
                )  # fmt: skip
            return
        agg = (tenant_id, meter, dimensions, hour)
        self._aggregate[agg] = self._aggregate.get(agg, 0) + quantity

    def seal(self) -> None:
        """Turn what was recorded since the last seal into a batch with a fixed identity."""
        aggregate, keyed = self._aggregate, self._keyed
        if not aggregate and not keyed:
            return
        self._aggregate, self._keyed = {}, {}
        self.touched.update((tenant, meter) for tenant, meter, _, _ in aggregate)
        self.touched.update((event[0], event[3]) for event in keyed.values())
        self._batch_no += 1
        prefix = f"{self.instance}:{self._batch_no}"
        rows = [
            UsageRow(tenant, self.instance, f"{prefix}:{n}", meter[:64], dimensions_key(dims),
                     _hour(hour), quantity)
            for n, ((tenant, meter, dims, hour), quantity) in enumerate(aggregate.items())
        ]  # fmt: skip
        rows += [
            UsageRow(
                tenant,
                source[:64],
                event_id[:255],
                meter[:64],
                dimensions_key(dims),
                _hour(hour),
                quantity,
            )
            for tenant, source, event_id, meter, dims, hour, quantity in keyed.values()
        ]
        self.pending.append(rows)

    def unflushed(self, tenant_id: str, meter: str) -> int:
        """What this process recorded for the tenant's meter that has not left it yet."""
        total = sum(
            q for (t, m, _, _), q in self._aggregate.items() if t == tenant_id and m == meter
        )
        total += sum(e[6] for e in self._keyed.values() if e[0] == tenant_id and e[3] == meter)
        for batch in self.pending:
            total += sum(r.quantity for r in batch if r.tenant_id == tenant_id and r.meter == meter)
        return total

    def take_touched(self, meter: str) -> set[str]:
        """The tenants with sealed usage of ``meter`` since the last call."""
        tenants = {tenant for tenant, m in self.touched if m == meter}
        self.touched -= {(tenant, meter) for tenant in tenants}
        return tenants

    @property
    def backlog(self) -> int:
        return sum(len(b) for b in self.pending) + len(self._aggregate) + len(self._keyed)

    async def flush(self, db: Database) -> int:
        """Write every pending batch; a failed one stays pending (and blocks later ones)."""
        async with self.handing_off:
            self.seal()
            written = 0
            while self.pending:
                batch = self.pending[0]
                async with db.session_scope() as session:
                    await insert_rows(session, batch)
                self.pending.pop(0)
                written += len(batch)
                self.flush_generation += 1
            self.flushed_rows += written
            return written

    # -- spooling across a restart
    def spool(self, directory: Path) -> Path | None:
        """Write what is pending to a new file in ``directory``, whole or not at all: it is
        written under a temporary name, synced and renamed, so a replica adopting the
        directory's files never reads half of one."""
        self.seal()
        if not self.pending:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.instance}-{new_id()[:8]}.jsonl"
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            for batch in self.pending:
                for row in batch:
                    out.write(orjson.dumps(row.as_values(utcnow())) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        self.pending.clear()
        return path

    def load_spool(self, directory: Path, skip: Collection[Path] = ()) -> list[Path]:
        """Every spooled file in ``directory`` but ``skip``, as pending batches (any
        replica's: their rows keep their keys, so a file loaded twice counts once)."""
        files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
        loaded = []
        for path in files:
            if path in skip:
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # another replica flushed and removed it meanwhile
                continue
            loaded.append(path)
            rows = []
            for line in data.splitlines():
                values = orjson.loads(line)
                values.pop("recorded_at", None)
                values["hour"] = datetime.fromisoformat(values["hour"])
                rows.append(UsageRow(**values))
            if rows:
                self.pending.append(rows)
        return loaded


# PostgreSQL: the batch as one JSON array (orjson writes the rows' dataclasses directly),
# the events inserted and the new ones rolled up into the hourly rows by the server, in one
# statement. Parameters per row (a dict and a RETURNING row each) cost the event loop ~14 us
# of CPU an event, ~18 ms a second at 1,300 HL7 messages/s, stalling whatever ran beside
# it; arrays cost ~5 us (asyncpg checks each element against three ABCs); JSON well under 1.
_PG_INSERT = text(
    """
    WITH inserted AS (
        INSERT INTO billing_usage
            (tenant_id, source, event_id, meter, dimensions, hour, quantity, recorded_at)
        SELECT tenant_id, source, event_id, meter, dimensions, hour, quantity, :recorded_at
        FROM json_to_recordset(CAST(:batch AS json)) AS batch(
            tenant_id text, source text, event_id text, meter text, dimensions text,
            hour timestamptz, quantity bigint)
        ON CONFLICT (tenant_id, source, event_id) DO NOTHING
        RETURNING tenant_id, meter, dimensions, hour, quantity
    )
    INSERT INTO billing_usage_hourly AS h (tenant_id, meter, hour, dimensions, quantity)
    SELECT tenant_id, meter, hour, dimensions, sum(quantity) FROM inserted
    GROUP BY tenant_id, meter, hour, dimensions
    ORDER BY tenant_id, meter, dimensions, hour
    ON CONFLICT (tenant_id, meter, hour, dimensions)
    DO UPDATE SET quantity = h.quantity + excluded.quantity
    """
).bindparams(bindparam("recorded_at", type_=DateTime(timezone=True)))


async def insert_rows(session: AsyncSession, rows: list[UsageRow]) -> None:
    if not rows:
        return
    now = utcnow()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await _insert_postgresql(session, rows, now)
        return
    insert = sqlite.insert
    statement = (
        insert(UsageRecord)
        .on_conflict_do_nothing(index_elements=["tenant_id", "source", "event_id"])
        .returning(
            UsageRecord.tenant_id,
            UsageRecord.meter,
            UsageRecord.dimensions,
            UsageRecord.hour,
            UsageRecord.quantity,
        )
    )
    rollup: dict[tuple[str, str, str, datetime], int] = {}
    for start in range(0, len(rows), 5000):  # executemany: one compiled statement, batched
        chunk = [row.as_values(now) for row in rows[start : start + 5000]]
        inserted = await session.execute(statement, chunk)
        for tenant_id, meter, dims, hour, quantity in inserted.all():  # not the duplicates
            key = (tenant_id, meter, dims, hour)
            rollup[key] = rollup.get(key, 0) + quantity
    if rollup:
        await _add_hourly(session, insert, rollup)


async def _insert_postgresql(session: AsyncSession, rows: list[UsageRow], now: datetime) -> None:
    for start in range(0, len(rows), 20_000):  # a bounded document per statement
        batch = orjson.dumps(rows[start : start + 20_000]).decode()
        await session.execute(_PG_INSERT, {"batch": batch, "recorded_at": now})


async def _add_hourly(
    session: AsyncSession, insert: Any, rollup: dict[tuple[str, str, str, datetime], int]
) -> None:
    values = [
        {"tenant_id": t, "meter": m, "dimensions": d, "hour": h, "quantity": q}
        for (t, m, d, h), q in sorted(rollup.items())  # one lock order for every flusher
    ]
    upsert = insert(UsageHourly)
    upsert = upsert.on_conflict_do_update(
        index_elements=["tenant_id", "meter", "hour", "dimensions"],
        set_={"quantity": UsageHourly.quantity + upsert.excluded.quantity},
    )
    for start in range(0, len(values), 5000):
        await session.execute(upsert, values[start : start + 5000])
