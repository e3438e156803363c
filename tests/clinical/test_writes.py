"""The group write buffer (``clinical.writes``) writes what ``core.audit.record`` writes."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import writes
from novaza_gateway.clinical.models import WorklistItem
from novaza_gateway.core.audit import Actor, AuditEvent


class FakeSession:
    """What ``audit.record`` and the buffer touch of a session: ``add`` and ``info``."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.added: list[Any] = []

    def add(self, row: Any) -> None:
        self.added.append(row)


def test_a_buffered_audit_row_is_the_record_core_writes() -> None:
    actor = Actor("mllp:EPIC", "t1")
    kwargs: dict[str, Any] = {
        "tenant_id": "t1",
        "patient_id": "p1",
        "outcome": "error",
        "before": {"status": None},
        "after": {"status": "scheduled"},
    }
    plain = FakeSession()
    writes.audit(cast(AsyncSession, plain), actor, "order.place", "worklist_item", "A1", **kwargs)
    (event,) = plain.added  # not buffering: core's own record, in the session
    assert isinstance(event, AuditEvent)

    grouped = FakeSession()
    writes.buffer(cast(AsyncSession, grouped))
    writes.audit(cast(AsyncSession, grouped), actor, "order.place", "worklist_item", "A1", **kwargs)
    assert grouped.added == [] and writes.count(cast(AsyncSession, grouped)) == 1
    ((table, (row,)),) = writes.take(cast(AsyncSession, grouped))
    assert table is AuditEvent.__table__
    sealed_later = {"chain_seq", "chain_prev", "chain_hash"}  # by core.auditchain, after commit
    assert set(row) == {c.key for c in AuditEvent.__table__.columns} - sealed_later
    expected = {k: getattr(event, k) for k in row if k not in ("id", "at")}
    assert {k: v for k, v in row.items() if k not in ("id", "at")} == expected
    assert writes.take(cast(AsyncSession, grouped)) == []  # taken once


def test_a_buffered_record_is_inserted_as_it_ends_up() -> None:
    session = FakeSession()
    writes.buffer(cast(AsyncSession, session))
    item = writes.new(WorklistItem, id="i1", tenant_id="t1", status="scheduled")
    writes.record(cast(AsyncSession, session), item)
    item.status = "canceled"  # a later message of the group moves it
    ((_, (row,)),) = writes.take(cast(AsyncSession, session))
    assert row["status"] == "canceled" and row["modality"] == ""  # unset: the column default
    assert session.added == []
