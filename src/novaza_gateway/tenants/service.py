"""Tenant lifecycle: create, update, activate, suspend, soft delete. Every action audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core import audit, audittrail
from novaza_gateway.core.audittrail import TrailQuery
from novaza_gateway.core.db import after_commit, utcnow
from novaza_gateway.core.entitlements import EntitlementResolver, SubscriptionHook
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.pagination import Page, decode_cursor, encode_cursor
from novaza_gateway.core.tenancy import TenantInvalidator
from novaza_gateway.core.tenant_settings import SettingsSections
from novaza_gateway.tenants import repository
from novaza_gateway.tenants.entitlements import plan_choice
from novaza_gateway.tenants.errors import SlugTaken, TenantDeleted, TenantNotFound
from novaza_gateway.tenants.models import Tenant
from novaza_gateway.tenants.schemas import TenantCreate, TenantOut, TenantUpdate


@dataclass(frozen=True, slots=True)
class TenantAdmin:
    """What a tenant change needs besides the session: who acts, settings schemas, fan-out,
    and billing's answers (wired in ``app.py``): the subscription follows plan and add-ons."""

    actor: audit.Actor
    sections: SettingsSections
    invalidator: TenantInvalidator
    subscriptions: SubscriptionHook
    entitlements: EntitlementResolver


def to_out(tenant: Tenant, admin: TenantAdmin) -> TenantOut:
    limit = admin.entitlements.rate_limit(plan_choice(tenant))
    return TenantOut.model_validate(
        {
            "id": tenant.id,
            "slug": tenant.slug,
            "name": tenant.name,
            "status": tenant.status,
            "plan": tenant.plan,
            "addons": list(tenant.addons or []),
            "rate_limit": tenant.rate_limit,
            "effective_rate_limit": {"ratePerSecond": limit.rate_per_second, "burst": limit.burst},
            "contact": tenant.contact or {},
            "settings": admin.sections.public_view(tenant.settings or {}),
            "created_at": tenant.created_at,
            "updated_at": tenant.updated_at,
            "activated_at": tenant.activated_at,
            "suspended_at": tenant.suspended_at,
            "deleted_at": tenant.deleted_at,
        }
    )


def _snapshot(tenant: Tenant, admin: TenantAdmin) -> dict[str, Any]:
    return to_out(tenant, admin).model_dump(mode="json", by_alias=True)


def _announce(session: AsyncSession, admin: TenantAdmin, tenant: Tenant) -> None:
    keys = (tenant.slug, tenant.id)

    async def announce() -> None:
        await admin.invalidator.announce(*keys)

    after_commit(session, announce)


async def _load(session: AsyncSession, slug: str) -> Tenant:
    tenant = await repository.get_by_slug(session, slug, for_update=True)
    if tenant is None:
        raise TenantNotFound()
    return tenant


async def list_tenants(
    session: AsyncSession, admin: TenantAdmin, *, status: str | None, cursor: str | None, limit: int
) -> Page[TenantOut]:
    after = str(decode_cursor(cursor, 1)[0]) if cursor else None
    rows = await repository.list_page(session, status=status, after_slug=after, limit=limit + 1)
    data = [to_out(t, admin) for t in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1].slug) if len(rows) > limit else None
    return Page[TenantOut](data=data, next_cursor=next_cursor)


async def get_tenant(session: AsyncSession, admin: TenantAdmin, slug: str) -> TenantOut:
    tenant = await repository.get_by_slug(session, slug)
    if tenant is None:
        raise TenantNotFound()
    return to_out(tenant, admin)


async def create_tenant(session: AsyncSession, admin: TenantAdmin, body: TenantCreate) -> TenantOut:
    if await repository.get_by_slug(session, body.slug) is not None:
        raise SlugTaken()
    admin.subscriptions.validate(body.plan, body.addons)
    now = utcnow()
    tenant_id = str(uuid.uuid4())
    tenant = Tenant(
        id=tenant_id,
        slug=body.slug,
        name=body.name,
        status=body.status,
        plan=body.plan,
        addons=list(body.addons),
        rate_limit=body.rate_limit.model_dump(by_alias=True) if body.rate_limit else None,
        contact=body.contact.model_dump(mode="json", by_alias=True, exclude_none=True),
        settings=admin.sections.merge({}, body.settings, tenant_id),
        created_at=now,
        updated_at=now,
        activated_at=now if body.status == "active" else None,
    )
    if admin.sections.exclusive(body.settings):
        others = await repository.settings_of_others(session, tenant.id)
        admin.sections.check_clashes(tenant.settings, others)
    session.add(tenant)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create won the unique slug
        raise SlugTaken() from None
    await admin.subscriptions.follow(session, plan_choice(tenant))
    after = _snapshot(tenant, admin)
    audit.record(
        session,
        admin.actor,
        "tenant.create",
        "tenant",
        tenant.slug,
        tenant_id=tenant.id,
        after=after,
    )
    _announce(session, admin, tenant)
    return to_out(tenant, admin)


async def update_tenant(
    session: AsyncSession, admin: TenantAdmin, slug: str, body: TenantUpdate
) -> TenantOut:
    tenant = await _load(session, slug)
    if tenant.status == "deleted":
        raise TenantDeleted()
    if body.slug is not None and body.slug != slug:
        raise ValidationFailed.field("slug", "is immutable")
    before = _snapshot(tenant, admin)
    fields = body.model_fields_set
    admin.subscriptions.validate(
        body.plan if body.plan is not None else tenant.plan,
        body.addons if body.addons is not None else [],
    )
    if body.name is not None:
        tenant.name = body.name
    if body.plan is not None:
        tenant.plan = body.plan
    if body.addons is not None:
        tenant.addons = list(body.addons)
    if "rate_limit" in fields:
        tenant.rate_limit = body.rate_limit.model_dump(by_alias=True) if body.rate_limit else None
    if body.contact is not None:
        tenant.contact = body.contact.model_dump(mode="json", by_alias=True, exclude_none=True)
    if body.settings is not None:
        tenant.settings = admin.sections.merge(tenant.settings or {}, body.settings, tenant.id)
        if admin.sections.exclusive(body.settings):
            others = await repository.settings_of_others(session, tenant.id)
            admin.sections.check_clashes(tenant.settings, others)
    tenant.updated_at = utcnow()
    if body.plan is not None or body.addons is not None:
        await admin.subscriptions.follow(session, plan_choice(tenant))
    return _finish(session, admin, tenant, "tenant.update", before)


async def set_status(
    session: AsyncSession, admin: TenantAdmin, slug: str, status: str
) -> TenantOut:
    """Activate or suspend; asking for the state the tenant is in changes nothing."""
    tenant = await _load(session, slug)
    if tenant.status == "deleted":
        raise TenantDeleted()
    if tenant.status == status:
        return to_out(tenant, admin)
    before = _snapshot(tenant, admin)
    now = utcnow()
    tenant.status = status
    tenant.updated_at = now
    if status == "active":
        tenant.activated_at = now
        tenant.suspended_at = None
    else:
        tenant.suspended_at = now
    action = "tenant.activate" if status == "active" else "tenant.suspend"
    return _finish(session, admin, tenant, action, before)


async def delete_tenant(session: AsyncSession, admin: TenantAdmin, slug: str) -> None:
    """Soft delete: the slug stays reserved and the audit trail stays intact."""
    tenant = await _load(session, slug)
    if tenant.status == "deleted":
        return
    before = _snapshot(tenant, admin)
    now = utcnow()
    tenant.status = "deleted"
    tenant.deleted_at = now
    tenant.updated_at = now
    await admin.subscriptions.cancel(session, tenant.id)
    _finish(session, admin, tenant, "tenant.delete", before)


def _finish(
    session: AsyncSession, admin: TenantAdmin, tenant: Tenant, action: str, before: dict[str, Any]
) -> TenantOut:
    out = to_out(tenant, admin)
    audit.record(
        session,
        admin.actor,
        action,
        "tenant",
        tenant.slug,
        tenant_id=tenant.id,
        before=before,
        after=out.model_dump(mode="json", by_alias=True),
    )
    _announce(session, admin, tenant)
    return out


async def reseal_secrets(session: AsyncSession, admin: TenantAdmin) -> int:
    """Seal every stored tenant secret under the first of NOVAZA_SECRETS_KEYS (plaintext
    ones from before sealing too); answer how many were rewritten. Audited per tenant, by
    count only."""
    total = 0
    for tenant in await repository.all_for_update(session):
        resealed, changed = admin.sections.reseal(tenant.settings or {}, tenant.id)
        if not changed:
            continue
        tenant.settings = resealed
        total += changed
        audit.record(
            session,
            admin.actor,
            "tenant.secrets_reseal",
            "tenant",
            tenant.slug,
            tenant_id=tenant.id,
            after={"secretsResealed": changed},
        )
    return total


async def audit_query(
    session: AsyncSession,
    admin: TenantAdmin,
    slug: str,
    since: datetime | None,
    until: datetime | None,
    action: str | None,
) -> TrailQuery:
    """What of a tenant's audit trail is asked for (a deleted tenant's too); the reading is
    itself audited, on that tenant's trail."""
    tenant = await repository.get_by_slug(session, slug)
    if tenant is None:
        raise TenantNotFound()
    query = TrailQuery(tenant.id, _utc(since, "from"), _utc(until, "to"), action)
    filters = {"from": since and since.isoformat(), "to": until and until.isoformat()}
    audit.record(
        session,
        admin.actor,
        "tenant.audit_read",
        "tenant",
        tenant.slug,
        tenant_id=tenant.id,
        after={**filters, "action": action},
    )
    return query


async def audit_page(
    session: AsyncSession,
    admin: TenantAdmin,
    slug: str,
    since: datetime | None,
    until: datetime | None,
    action: str | None,
    cursor: str | None,
    limit: int,
) -> Page[dict[str, Any]]:
    query = await audit_query(session, admin, slug, since, until, action)
    rows, next_cursor = await audittrail.page(session, query, cursor, limit)
    return Page[dict[str, Any]](data=rows, next_cursor=next_cursor)


def _utc(moment: datetime | None, name: str) -> datetime | None:
    """An instant in UTC (a time without an offset is read as UTC); 422 past year 9999."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise ValidationFailed.field(name, "out of range") from None
