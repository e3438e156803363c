"""New clinical records and audit records of a group, written with one INSERT per table.

A group of HL7 messages processed in one transaction without a SAVEPOINT each (ADR 0013)
creates many rows: patients, visits, an order and its worklist item per ORM, two or three
audit records per message. Through the ORM's unit of work each new row costs bookkeeping
(construction events, the session's new list, the flush's per-row work, identity-map
registration) that a plain INSERT of a list of rows does not (ADR 0014). While ``buffer()``
is on for a session:

- ``repository.add`` keeps a new record out of the session, in the buffer; the group's
  lookups find it all the same (``prefetch`` remembers it);
- ``audit()`` keeps the audit record as a row;
- ``flush()`` writes what was kept: one INSERT per table, parents first, each record as it
  is at that moment (a later message of the group may have changed a record an earlier one
  created). Changes to loaded records remain the ORM's: the caller flushes the session after.

Nothing here outlives the transaction: a failure rolls the whole group back, and the caller
runs it again with a SAVEPOINT per message and without the buffer (``record``/``audit`` then
go to the session as before). ``count()`` tells the caller whether a message created anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy import insert as sql_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapper, configure_mappers
from sqlalchemy.orm.attributes import manager_of_class

from novaza_gateway.clinical import unnest
from novaza_gateway.clinical.models import (
    Encounter,
    Order,
    Patient,
    PatientIdentifier,
    WorklistItem,
)
from novaza_gateway.core import audit as core_audit
from novaza_gateway.core.audit import Actor, AuditEvent

M = TypeVar("M")
INFO_KEY = "novaza.clinical.writes"
# Foreign keys point up this list: a table's rows go in after those of the tables before it.
MODELS: tuple[type[Any], ...] = (Patient, PatientIdentifier, Encounter, Order, WorklistItem)
AUDIT = cast(Table, AuditEvent.__table__)


@dataclass(slots=True)
class Buffer:
    records: dict[type[Any], list[Any]] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0  # records and audit rows kept so far


def _columns(model: type[Any]) -> list[tuple[str, str, Any]]:
    """(attribute, column, value when never set) for each column of ``model``'s table."""
    mapper = cast(Mapper[Any], model.__mapper__)
    found = []
    for column in mapper.columns:
        default = column.default
        value = None
        if default is not None and default.is_scalar:
            value = default.arg  # type: ignore[attr-defined]
        elif default is not None and default.is_callable:
            value = default.arg(None)  # type: ignore[attr-defined]
        found.append((mapper.get_property_by_column(column).key, column.key, value))
    return found


_COLUMNS = {model: _columns(model) for model in MODELS}
_configured: list[bool] = []


def new(model: type[M], **values: Any) -> M:
    """A new, transient ``model`` record with ``values``, built without attribute events
    (a record about to be created has no history to keep). Attributes set later go through
    the ORM as usual."""
    if not _configured:  # what the ORM's constructor does first
        configure_mappers()
        _configured.append(True)
    record: M = manager_of_class(model).new_instance()
    record.__dict__.update(values)
    return record


def buffer(session: AsyncSession) -> None:
    """Keep new records and audit rows for ``flush()`` until the transaction ends."""
    session.info[INFO_KEY] = Buffer()


def _buffer(session: AsyncSession) -> Buffer | None:
    found: Buffer | None = session.info.get(INFO_KEY)
    return found


def count(session: AsyncSession) -> int:
    """Records and audit rows kept so far (0 when not buffering)."""
    kept = _buffer(session)
    return kept.count if kept is not None else 0


def record(session: AsyncSession, row: Any) -> None:
    """A new clinical record: into the buffer when there is one, else into the session."""
    kept = _buffer(session)
    if kept is None:
        session.add(row)
        return
    kept.records.setdefault(type(row), []).append(row)
    kept.count += 1


def audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    *,
    tenant_id: str | None = None,
    patient_id: str | None = None,
    outcome: str = "success",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """``core.audit.record``, kept as a row while buffering (the same columns and values)."""
    kept = _buffer(session)
    if kept is None:
        core_audit.record(
            session,
            actor,
            action,
            resource_type,
            resource_id,
            tenant_id=tenant_id,
            patient_id=patient_id,
            outcome=outcome,
            before=before,
            after=after,
        )
        return
    kept.audits.append(
        core_audit.values(
            actor,
            action,
            resource_type,
            resource_id,
            tenant_id=tenant_id,
            patient_id=patient_id,
            outcome=outcome,
            before=before,
            after=after,
        )
    )
    kept.count += 1


Rows = list[tuple[Table, list[dict[str, Any]]]]  # each table's rows, by column key


def take(session: AsyncSession) -> Rows:
    """What the buffer kept, as rows per table (parents first), and empty it. The caller
    inserts them (``insert``, or with rows of its own in one statement, ``unnest``)."""
    kept = _buffer(session)
    if kept is None:
        return []
    session.info[INFO_KEY] = Buffer()
    tables: Rows = []
    for model in MODELS:
        records = kept.records.get(model)
        if records:
            columns = _COLUMNS[model]
            rows = [
                {col: record.__dict__.get(attr, value) for attr, col, value in columns}
                for record in records
            ]
            tables.append((cast(Table, model.__table__), rows))
    if kept.audits:
        tables.append((AUDIT, kept.audits))
    return tables


async def insert(connection: AsyncConnection, tables: Rows) -> None:
    """Plain INSERTs on the connection (not the ORM's bulk path): on PostgreSQL one
    statement for every table (``unnest``), elsewhere an executemany per table."""
    if not tables:
        return
    if connection.dialect.name == "postgresql":
        await connection.execute(*unnest.insert_all(tables))
        return
    for table, rows in tables:
        await connection.execute(sql_insert(table), rows)


async def flush(session: AsyncSession) -> None:
    """INSERT what the buffer kept, and empty it."""
    tables = take(session)
    if tables:
        await insert(await session.connection(), tables)
