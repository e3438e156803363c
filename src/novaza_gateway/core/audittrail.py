"""Reading a tenant's audit trail: keyset pages by time, and the whole range as NDJSON.

Rows come out in (time, id) order with their chain fields, so an export can be checked
against ``core.auditchain`` offline. The tenant is a parameter of every query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.db import Database
from novaza_gateway.core.pagination import decode_cursor, encode_cursor

EXPORT_BATCH = 500


@dataclass(frozen=True, slots=True)
class TrailQuery:
    tenant_id: str
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    action: str | None = None  # exact, or a prefix ending in "." ("imaging.")

    def select(self) -> Select[AuditEvent]:
        query = select(AuditEvent).where(AuditEvent.tenant_id == self.tenant_id)
        if self.since is not None:
            query = query.where(AuditEvent.at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.at < self.until)
        if self.action is not None:
            query = query.where(
                AuditEvent.action.startswith(self.action, autoescape=True)
                if self.action.endswith(".")
                else AuditEvent.action == self.action
            )
        return query.order_by(AuditEvent.at, AuditEvent.id)


def as_json(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(timespec="microseconds"),
        "actor": row.actor,
        "action": row.action,
        "resourceType": row.resource_type,
        "resourceId": row.resource_id,
        "patientId": row.patient_id,
        "outcome": row.outcome,
        "requestId": row.request_id,
        "callerRequestId": row.caller_request_id,
        "homeTenantId": row.home_tenant_id,
        "viaOverride": row.via_override,
        "before": row.before,
        "after": row.after,
        "chain": {"seq": row.chain_seq, "prev": row.chain_prev, "hash": row.chain_hash},
    }


async def page(
    session: AsyncSession, query: TrailQuery, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    statement = query.select()
    if cursor is not None:
        at, row_id = decode_cursor(cursor, 2)
        after = datetime.fromisoformat(str(at))
        statement = statement.where(tuple_(AuditEvent.at, AuditEvent.id) > (after, str(row_id)))
    rows = list((await session.scalars(statement.limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    next_cursor = encode_cursor(last.at.isoformat(), last.id) if last is not None else None
    return [as_json(row) for row in rows], next_cursor


async def export(db: Database, query: TrailQuery) -> AsyncIterator[bytes]:
    """Every matching row as one JSON line, read in keyset batches (memory stays flat)."""
    after: tuple[datetime, str] | None = None
    while True:
        statement = query.select()
        if after is not None:
            statement = statement.where(tuple_(AuditEvent.at, AuditEvent.id) > after)
        async with db.sessionmaker() as session:
            rows = list((await session.scalars(statement.limit(EXPORT_BATCH))).all())
        if not rows:
            return
        yield b"".join(orjson.dumps(as_json(row)) + b"\n" for row in rows)
        after = (rows[-1].at, rows[-1].id)
