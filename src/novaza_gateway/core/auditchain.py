"""The audit trail made provable: rows hash-chained per tenant, sealed after they commit.

Each sealed row holds its place in its tenant's chain (``chain_seq`` 1, 2, ...), the hash of
the row before it and its own: SHA-256 of its canonical form (every recorded field, the
sequence number and the previous hash, as sorted-key JSON). The last (sequence, hash) of each
chain is kept in ``audit_chain_heads``. An edited row no longer matches its hash, a deleted
row leaves a gap (or, at the tail, a head that points past the last row): ``verify`` names
the place, never the content.

Rows are written by their requests without any chain work (no lock per tenant on the hot
path); a sealer pass, once a second, chains what committed since (one replica at a time:
a PostgreSQL advisory lock; SQLite serializes writers itself). A row is tamper-evident from
its sealing, about a second after its commit. Anchors: HIPAA 164.312(b) audit controls,
CloudTrail log file integrity (digests that chain).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, String, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.db import Base, Database, UtcDateTime, utcnow

log = logging.getLogger("novaza.audit")

PLATFORM = "platform"  # the chain of rows without a tenant (platform administration)
GENESIS = "0" * 64
SEAL_LOCK = zlib.crc32(b"novaza:audit-seal")
MAX_PROBLEMS = 20  # per chain: where it breaks, not a copy of the table
RECORDED = (
    "id",
    "tenant_id",
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "patient_id",
    "outcome",
    "request_id",
    "caller_request_id",
    "home_tenant_id",
    "via_override",
    "before",
    "after",
)


class AuditChainHead(Base):
    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime] = mapped_column(UtcDateTime())


def chain_of(tenant_id: str | None) -> str:
    return tenant_id if tenant_id is not None else PLATFORM


def canonical(row: AuditEvent, seq: int, prev: str) -> bytes:
    values: dict[str, Any] = {name: getattr(row, name) for name in RECORDED}
    values["at"] = row.at.astimezone(UTC).isoformat(timespec="microseconds")
    values["seq"], values["prev"] = seq, prev
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def row_hash(row: AuditEvent, seq: int, prev: str) -> str:
    return hashlib.sha256(canonical(row, seq, prev)).hexdigest()


async def seal_pass(session: AsyncSession, batch: int = 2000) -> int:
    """Chain up to ``batch`` unsealed rows, oldest first; how many were sealed (0 also when
    another replica holds the sealer's lock)."""
    if session.get_bind().dialect.name == "postgresql":
        locked = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEAL_LOCK}
        )
        if not locked:
            return 0
    query = (
        select(AuditEvent)
        .where(AuditEvent.chain_seq.is_(None))
        .order_by(AuditEvent.at, AuditEvent.id)
        .limit(batch)
    )
    rows = list((await session.scalars(query)).all())
    chains: dict[str, list[AuditEvent]] = defaultdict(list)
    for row in rows:
        chains[chain_of(row.tenant_id)].append(row)
    if not chains:
        return 0
    found = await session.scalars(select(AuditChainHead).where(AuditChainHead.chain.in_(chains)))
    heads = {head.chain: head for head in found}
    now = utcnow()
    for chain, members in chains.items():
        head = heads.get(chain)
        seq, prev = (head.seq, head.hash) if head else (0, GENESIS)
        for row in members:
            seq += 1
            row.chain_seq, row.chain_prev = seq, prev
            row.chain_hash = prev = row_hash(row, seq, prev)
        if head is None:
            session.add(AuditChainHead(chain=chain, seq=seq, hash=prev, sealed_at=now))
        else:
            head.seq, head.hash, head.sealed_at = seq, prev, now
    return len(rows)


class AuditSealer:
    """The background loop: a pass every ``interval`` seconds, more at once while a backlog
    remains."""

    def __init__(self, db: Database, interval_seconds: float = 1.0, batch: int = 2000) -> None:
        self._db = db
        self._interval = interval_seconds
        self._batch = batch

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                while await self.seal() == self._batch:
                    pass
            except Exception as exc:  # the rows wait for the next pass; never lost
                log.warning("audit sealing failed", extra={"error": type(exc).__name__})

    async def seal(self) -> int:
        async with self._db.session_scope() as session:
            return await seal_pass(session, self._batch)


@dataclass
class ChainReport:
    chain: str
    sealed: int = 0
    pending: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession, tenant_id: str | None = None) -> list[ChainReport]:
    """Recompute every chain (or one tenant's): each report names its breaks by place."""
    wanted = [chain_of(tenant_id)] if tenant_id is not None else await _chains(session)
    return [await _verify_chain(session, chain) for chain in wanted]


async def _chains(session: AsyncSession) -> list[str]:
    tenants = await session.scalars(select(AuditEvent.tenant_id).distinct())
    heads = await session.scalars(select(AuditChainHead.chain))
    return sorted({chain_of(t) for t in tenants} | set(heads))


async def _verify_chain(session: AsyncSession, chain: str) -> ChainReport:
    report = ChainReport(chain)
    tenant = AuditEvent.tenant_id.is_(None) if chain == PLATFORM else AuditEvent.tenant_id == chain
    query = select(AuditEvent).where(tenant, AuditEvent.chain_seq.is_not(None))
    expected, prev = 1, GENESIS
    stream = await session.stream_scalars(
        query.order_by(AuditEvent.chain_seq).execution_options(yield_per=1000)
    )
    async for row in stream:
        seq = row.chain_seq or 0
        if seq != expected:
            report.problems.append(f"rows {expected}..{seq - 1} are missing (deleted)")
        elif row.chain_prev != prev:
            report.problems.append(f"row {seq} does not follow row {seq - 1}")
        if row.chain_hash != row_hash(row, seq, row.chain_prev or ""):
            report.problems.append(f"row {seq} was changed after it was sealed")
        expected, prev = seq + 1, row.chain_hash or ""
        report.sealed += 1
    head = await session.get(AuditChainHead, chain)
    if head is not None and (head.seq, head.hash) != (expected - 1, prev):
        report.problems.append(f"rows {expected}..{head.seq} at the end are missing (deleted)")
    if head is None and report.sealed:
        report.problems.append("the chain's head record is missing")
    pending = select(func.count()).where(tenant, AuditEvent.chain_seq.is_(None))
    report.pending = int(await session.scalar(pending.select_from(AuditEvent)) or 0)
    del report.problems[MAX_PROBLEMS:]
    return report
