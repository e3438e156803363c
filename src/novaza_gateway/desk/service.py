"""Desk contacts: the batch upsert, and reads. Services never commit (one request, one
transaction); every statement names the tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from novaza_gateway.core import audit
from novaza_gateway.core.db import after_commit, utcnow
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.idempotency import KeyedRequest, Outcome
from novaza_gateway.core.pagination import Page, decode_cursor, encode_cursor
from novaza_gateway.core.tenancy import TenantContext
from novaza_gateway.desk import bulk, repository
from novaza_gateway.desk.area import DeskArea
from novaza_gateway.desk.errors import (
    ConcurrentSync,
    ContactNotFound,
    DeskNotUpstream,
    TooManyContacts,
)
from novaza_gateway.desk.models import DeskContact
from novaza_gateway.desk.plan import Plan, outbox_row, parse_items
from novaza_gateway.desk.schemas import (
    MAX_CONTACTS,
    ContactOut,
    RequeueIn,
    RequeueOut,
    SyncIn,
    SyncOut,
)
from novaza_gateway.desk.views import contact_out

EXTERNAL_PREFIX = "ext:"
SYNC_OPERATION = "desk.contacts.sync"  # the Idempotency-Key scope of a sync


async def sync(
    session: AsyncSession,
    area: DeskArea,
    tenant: TenantContext,
    actor: audit.Actor,
    body: SyncIn,
    keyed: KeyedRequest | None = None,
) -> SyncOut | Response:
    """The batch upsert; with an ``Idempotency-Key``, once per key (core.idempotency)."""
    if keyed is None:  # the hot path: nothing of the idempotency machinery
        return await _sync(session, area, tenant, actor, body)

    async def execute() -> Outcome:
        return Outcome.json(await _sync(session, area, tenant, actor, body))

    return await area.idempotency.run(session, tenant.id, SYNC_OPERATION, keyed, execute)


async def _sync(
    session: AsyncSession, area: DeskArea, tenant: TenantContext, actor: audit.Actor, body: SyncIn
) -> SyncOut:
    if len(body.contacts) > MAX_CONTACTS:
        raise TooManyContacts(len(body.contacts), MAX_CONTACTS)
    items = parse_items(body.contacts)
    valid = [item for item in items if item.contact is not None]
    stored = await repository.contacts_by_external_id(
        session, tenant.id, [item.external_id for item in valid if item.external_id]
    )
    asked = [i.contact.patient_id for i in valid if i.contact and i.contact.patient_id]
    links = await repository.patient_links(session, tenant.id, asked) if asked else {}
    upstream = await area.settings.for_tenant(tenant.id) is not None
    plan = Plan(tenant.id, utcnow(), upstream)
    for item in items:
        plan.decide(item, stored, links)
    await _write(session, tenant.id, actor, plan)
    if plan.outbox:
        after_commit(session, area.pusher.nudge)
    return plan.answer()


async def _write(session: AsyncSession, tenant_id: str, actor: audit.Actor, plan: Plan) -> None:
    try:
        inserted = await bulk.insert_rows(
            session, repository.CONTACTS, plan.inserts, ("tenant_id", "external_id")
        )
    except IntegrityError:  # SQLite: a concurrent sync created one of them first
        raise ConcurrentSync() from None
    if inserted != len(plan.inserts):
        raise ConcurrentSync()
    replaced = await bulk.update_versioned(session, repository.CONTACTS, plan.updates, ("id",))
    if replaced != len(plan.updates):
        raise ConcurrentSync()
    if plan.outbox:
        await repository.supersede(session, tenant_id, [row["contact_id"] for row in plan.outbox])
        await bulk.insert_rows(session, repository.OUTBOX, plan.outbox)
    audits = [
        audit.values(
            actor,
            f"desk.contact.{action}",
            "desk_contact",
            contact_id,
            tenant_id=tenant_id,
            patient_id=patient_id,
            after={"version": version},
        )
        for action, contact_id, patient_id, version in plan.patient_touches
    ]
    await bulk.insert_rows(session, audit.AuditEvent.__table__, audits)  # type: ignore[arg-type]


async def requeue(
    session: AsyncSession,
    area: DeskArea,
    tenant: TenantContext,
    actor: audit.Actor,
    body: RequeueIn | None,
) -> RequeueOut:
    """Push failed contacts again: their current version goes back in the outbox, due now
    with no attempts, and ``syncStatus`` is ``pending``. Contacts not failed are skipped."""
    if await area.settings.for_tenant(tenant.id) is None:
        raise DeskNotUpstream()
    named = list(dict.fromkeys(body.contact_ids)) if body and body.contact_ids else None
    ids, external_ids = _split_refs(named or [])
    rows = await repository.requeue_failed(
        session, tenant.id, ids if named is not None else None, external_ids
    )
    now = utcnow()
    contacts = [row._asdict() for row in rows]
    await repository.supersede(session, tenant.id, [row["id"] for row in contacts])
    outbox = [outbox_row(tenant.id, row, now) for row in contacts]
    await bulk.insert_rows(session, repository.OUTBOX, outbox)
    audits = [
        audit.values(actor, "desk.contact.requeue", "desk_contact", row["id"],
                     tenant_id=tenant.id, patient_id=row["patient_id"],
                     after={"version": row["version"]})
        for row in contacts
        if row["patient_id"] is not None
    ]  # fmt: skip
    await bulk.insert_rows(session, audit.AuditEvent.__table__, audits)  # type: ignore[arg-type]
    if outbox:
        after_commit(session, area.pusher.nudge)
    matched = {row["id"] for row in contacts} | {
        EXTERNAL_PREFIX + row["external_id"] for row in contacts
    }
    skipped = sum(1 for ref in named if ref not in matched) if named else 0
    return RequeueOut(requeued=len(contacts), skipped=skipped)


def _split_refs(refs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Gateway ids and ``ext:`` external ids, apart."""
    ids = [ref for ref in refs if not ref.startswith(EXTERNAL_PREFIX)]
    external = [ref[len(EXTERNAL_PREFIX) :] for ref in refs if ref.startswith(EXTERNAL_PREFIX)]
    return ids, external


async def get_contact(
    session: AsyncSession, tenant: TenantContext, actor: audit.Actor, contact_id: str
) -> ContactOut:
    """By the gateway's id, or ``ext:{externalId}``; another tenant's contact is not found."""
    if contact_id.startswith(EXTERNAL_PREFIX):
        external = contact_id[len(EXTERNAL_PREFIX) :]
        found = await repository.contact_by_external_id(session, tenant.id, external)
    else:
        found = await repository.contact(session, tenant.id, contact_id)
    if found is None:
        raise ContactNotFound()
    _audit_reads(session, actor, tenant.id, [found])
    return contact_out(found)


async def list_contacts(
    session: AsyncSession,
    tenant: TenantContext,
    actor: audit.Actor,
    *,
    limit: int,
    cursor: str | None,
    updated_since: datetime | None,
    include_deleted: bool,
    external_id: str | None = None,
) -> Page[ContactOut]:
    after = None
    if cursor is not None:
        at, last_id = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(str(at)), str(last_id))
        except ValueError:
            raise ValidationFailed.field("cursor", "not a cursor this API issued") from None
    if updated_since is not None and updated_since.tzinfo is None:
        raise ValidationFailed.field("updatedSince", "needs a UTC offset (RFC 3339)")
    rows = await repository.contacts_page(
        session,
        tenant.id,
        limit=limit + 1,
        after=after,
        updated_since=updated_since,
        include_deleted=include_deleted,
        external_id=external_id,
    )
    page, more = list(rows[:limit]), len(rows) > limit
    _audit_reads(session, actor, tenant.id, page)
    last = page[-1] if page else None
    next_cursor = encode_cursor(last.updated_at.isoformat(), last.id) if more and last else None
    return Page[ContactOut](data=[contact_out(row) for row in page], next_cursor=next_cursor)


def _audit_reads(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, contacts: Sequence[DeskContact]
) -> None:
    for found in contacts:
        if found.patient_id is not None:
            audit.record(
                session,
                actor,
                "desk.contact.read",
                "desk_contact",
                found.id,
                tenant_id=tenant_id,
                patient_id=found.patient_id,
            )
