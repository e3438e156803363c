"""Rows a group of messages will look up, read in a few queries before the group runs.

A group of HL7 messages processed in one transaction looks patients up by identifier, visits
by number, orders by placer or filler number and items by accession. ``load()`` reads all of
them at once and remembers, in the session, which keys it covered: found, or known to be
absent. The repository's lookups answer a covered key from memory; records the clinical
services add (``repository.add``) are remembered as they are added, so a later message of
the group finds what an earlier one created. A key nothing covered is queried as before.

What is remembered lives as long as the session's transaction and is dropped by
``forget()`` whenever it may be stale: after a SAVEPOINT rollback (the ORM expunges what
the savepoint added and expires what it changed) and after a bulk UPDATE (a merge moves
rows under the objects' feet). A row another transaction inserts after ``load()`` is not
seen: inserting it again fails on its unique key, and the caller redoes the group.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    bindparam,
    select,
    tuple_,
    union,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from novaza_gateway.clinical import unnest
from novaza_gateway.clinical.models import (
    Encounter,
    Order,
    Patient,
    PatientIdentifier,
    WorklistItem,
)

INFO_KEY = "novaza.clinical.prefetch"
IdentifierKey = tuple[str, str]  # (assigning authority, value)


@dataclass(slots=True)
class Keys:
    """What a group will look up, for one tenant."""

    identifiers: set[IdentifierKey] = field(default_factory=set)
    visits: set[str] = field(default_factory=set)
    placers: set[str] = field(default_factory=set)
    fillers: set[str] = field(default_factory=set)
    accessions: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Snapshot:
    """One tenant's covered keys: a value of None means "known absent"."""

    identifiers: dict[IdentifierKey, PatientIdentifier | None] = field(default_factory=dict)
    patients: dict[str, Patient] = field(default_factory=dict)
    encounters: dict[str, Encounter | None] = field(default_factory=dict)
    placers: dict[str, Order | None] = field(default_factory=dict)
    fillers: dict[str, Order | None] = field(default_factory=dict)
    accessions: dict[str, WorklistItem | None] = field(default_factory=dict)
    items_of_order: dict[str, list[WorklistItem]] = field(default_factory=dict)

    def identifiers_matching(
        self, keys: Sequence[IdentifierKey]
    ) -> list[tuple[PatientIdentifier, Patient]] | None:
        """The stored identifiers among ``keys`` with their patients; None if any key is not
        covered (the caller queries)."""
        found: list[tuple[PatientIdentifier, Patient]] = []
        for key in keys:
            if key not in self.identifiers:
                return None
            ident = self.identifiers[key]
            if ident is not None:
                patient = self.patients.get(ident.patient_id)
                if patient is None:
                    return None
                found.append((ident, patient))
        return found

    def remember(self, row: object) -> None:
        """A record just added to the session (or loaded): covered from now on."""
        if isinstance(row, Patient):
            self.patients[row.id] = row
        elif isinstance(row, PatientIdentifier):
            self.identifiers[(row.assigning_authority, row.value)] = row
        elif isinstance(row, Encounter):
            self.encounters[row.visit_number] = row
        elif isinstance(row, Order):
            self.placers[row.placer_order_number] = row
            if row.filler_order_number and self.fillers.get(row.filler_order_number) is None:
                self.fillers[row.filler_order_number] = row
            self.items_of_order.setdefault(row.id, [])
        elif isinstance(row, WorklistItem):
            self.accessions[row.accession_number] = row
            items = self.items_of_order.get(row.order_id)
            if items is not None and row not in items:
                items.append(row)


# Built once per form (their cache keys too). On PostgreSQL several keys go as one array
# parameter (``unnest.any_of``: index probes, one prepared statement whatever their number);
# a single key, and every list on SQLite, as an expanding IN list (a one-element array costs
# PostgreSQL a fresh plan per execution: measured 2-3x the CPU of ``= $1``).
_TENANT: BindParameter[str] = bindparam("tenant_id", type_=String())


def _match(column: QueryableAttribute[str], name: str, pg: bool) -> ColumnElement[bool]:
    return unnest.any_of(column, name) if pg else column.in_(bindparam(name, expanding=True))


@functools.cache
def _identifiers_query(pg: bool) -> Select[PatientIdentifier, Patient]:
    columns = (PatientIdentifier.assigning_authority, PatientIdentifier.value)
    if pg:
        keys = unnest.in_rows(columns, ("authorities", "values"))
    else:
        keys = tuple_(*columns).in_(bindparam("keys", expanding=True))
    return (
        select(PatientIdentifier, Patient)
        .join(Patient, Patient.id == PatientIdentifier.patient_id)
        .where(PatientIdentifier.tenant_id == _TENANT, Patient.tenant_id == _TENANT, keys)
    )


@functools.cache
def _encounters_query(pg: bool) -> Select[Encounter]:
    return select(Encounter).where(
        Encounter.tenant_id == _TENANT, _match(Encounter.visit_number, "visits", pg)
    )


@functools.cache
def _orders_query(
    pg: bool, placers: bool, fillers: bool, accessions: bool
) -> Select[Order, WorklistItem]:
    """Orders by placer or filler number, or holding an item with one of the accessions,
    each with all its items. Each arm of the union reads one key's own index; the items join
    on their order id alone (an order's items are its tenant's) so that no tenant-wide index
    looks cheaper to the planner of a young table."""
    wanted: list[Select[str]] = []
    if placers:
        wanted.append(
            select(Order.id).where(
                Order.tenant_id == _TENANT, _match(Order.placer_order_number, "placers", pg)
            )
        )
    if fillers:
        wanted.append(
            select(Order.id).where(
                Order.tenant_id == _TENANT, _match(Order.filler_order_number, "fillers", pg)
            )
        )
    if accessions:
        wanted.append(
            select(WorklistItem.order_id).where(
                WorklistItem.tenant_id == _TENANT,
                _match(WorklistItem.accession_number, "accessions", pg),
            )
        )
    return (
        select(Order, WorklistItem)
        .outerjoin(WorklistItem, WorklistItem.order_id == Order.id)
        .where(Order.tenant_id == _TENANT, Order.id.in_(union(*wanted)))
        .order_by(WorklistItem.created_at, WorklistItem.id)
    )


def _arrays(session: AsyncSession, *lists: Collection[object]) -> bool:
    """Whether to bind the key lists as arrays: on PostgreSQL, for more than one key."""
    return max(map(len, lists)) > 1 and session.get_bind().dialect.name == "postgresql"


def snapshot(session: AsyncSession, tenant_id: str) -> Snapshot | None:
    snapshots: dict[str, Snapshot] | None = session.info.get(INFO_KEY)
    return snapshots.get(tenant_id) if snapshots is not None else None


def remember(session: AsyncSession, tenant_id: str, row: object) -> None:
    snap = snapshot(session, tenant_id)
    if snap is not None:
        snap.remember(row)


def forget(session: AsyncSession) -> None:
    session.info.pop(INFO_KEY, None)


async def load(session: AsyncSession, tenant_id: str, keys: Keys) -> Snapshot:
    """Read every row ``keys`` names (at most four queries) and cover those keys."""
    snapshots: dict[str, Snapshot] = session.info.setdefault(INFO_KEY, {})
    snap = snapshots.setdefault(tenant_id, Snapshot())
    await _identifiers(session, tenant_id, snap, keys.identifiers - snap.identifiers.keys())
    await _encounters(session, tenant_id, snap, keys.visits - snap.encounters.keys())
    await _orders(
        session,
        tenant_id,
        snap,
        keys.placers - snap.placers.keys(),
        keys.fillers - snap.fillers.keys(),
        keys.accessions - snap.accessions.keys(),
    )
    return snap


async def _identifiers(
    session: AsyncSession, tenant_id: str, snap: Snapshot, keys: set[IdentifierKey]
) -> None:
    if not keys:
        return
    pg = _arrays(session, keys)
    ordered = sorted(keys)
    params: dict[str, object] = {"tenant_id": tenant_id}
    if pg:
        params["authorities"] = [authority for authority, _ in ordered]
        params["values"] = [value for _, value in ordered]
    else:
        params["keys"] = ordered
    for key in keys:
        snap.identifiers[key] = None
    for ident, patient in (await session.execute(_identifiers_query(pg), params)).all():
        snap.patients[patient.id] = patient
        snap.identifiers[(ident.assigning_authority, ident.value)] = ident


async def _encounters(
    session: AsyncSession, tenant_id: str, snap: Snapshot, visits: set[str]
) -> None:
    if not visits:
        return
    params = {"tenant_id": tenant_id, "visits": sorted(visits)}
    for visit in visits:
        snap.encounters[visit] = None
    query = _encounters_query(_arrays(session, visits))
    for encounter in (await session.execute(query, params)).scalars():
        snap.encounters[encounter.visit_number] = encounter


async def _orders(
    session: AsyncSession,
    tenant_id: str,
    snap: Snapshot,
    placers: set[str],
    fillers: set[str],
    accessions: set[str],
) -> None:
    """Orders by placer or filler number, or holding an item with one of ``accessions``,
    each with all its items: one query."""
    if not (placers or fillers or accessions):
        return
    pg = _arrays(session, placers, fillers, accessions)
    query = _orders_query(pg, bool(placers), bool(fillers), bool(accessions))
    params: dict[str, object] = {"tenant_id": tenant_id}
    for name, values in (("placers", placers), ("fillers", fillers), ("accessions", accessions)):
        if values:
            params[name] = sorted(values)
    rows = (await session.execute(query, params)).all()
    for placer in placers:
        snap.placers[placer] = None
    for filler in fillers:
        snap.fillers[filler] = None
    for accession in accessions:
        snap.accessions[accession] = None
    fresh = {order.id for order, _ in rows if order.id not in snap.items_of_order}
    for order, item in rows:
        snap.placers[order.placer_order_number] = order
        filler = order.filler_order_number
        if filler and filler in snap.fillers and snap.fillers[filler] is None:
            snap.fillers[filler] = order
        items = snap.items_of_order.setdefault(order.id, [])
        if item is not None:
            snap.accessions[item.accession_number] = item
            if order.id in fresh and item not in items:
                items.append(item)
