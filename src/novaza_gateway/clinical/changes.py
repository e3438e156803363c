"""Whether a piece of work has written to a clinical record yet.

Several messages processed in one transaction without a SAVEPOINT each can answer one of
them AE only if it failed before its first change: nothing of it is then left to undo. The
clinical services check everything they can before they change anything; this module is the
safety net that tells a caller when that did not hold (a bug, a new code path): every write
to an attribute of a clinical record, a new one's included, counts, in the task that watches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event

from novaza_gateway.clinical.models import (
    Encounter,
    Order,
    Patient,
    PatientIdentifier,
    WorklistItem,
)


class Writes:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_watching: ContextVar[Writes | None] = ContextVar("novaza_clinical_writes", default=None)


def _written(*_: Any) -> None:
    writes = _watching.get()
    if writes is not None:
        writes.count += 1


for _model in (Patient, PatientIdentifier, Encounter, Order, WorklistItem):
    for _column in _model.__mapper__.column_attrs:
        event.listen(getattr(_model, _column.key), "set", _written)


@contextmanager
def watch() -> Iterator[Writes]:
    """Count the clinical writes made in this task inside the block."""
    writes = Writes()
    token = _watching.set(writes)
    try:
        yield writes
    finally:
        _watching.reset(token)
