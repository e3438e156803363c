"""Billing tables. Every row belongs to one tenant (``tenant_id``) except the catalogue record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime


class CatalogVersion(Base):
    """Each catalogue version the gateway ran with; a used version's content never changes."""

    __tablename__ = "billing_catalog_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Subscription(Base):
    """One per tenant: follows the plan and add-ons tenant administration sets."""

    __tablename__ = "billing_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36), unique=True)
    plan: Mapped[str] = mapped_column(String(64))
    addons: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    current_period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    current_period_end: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    cancel_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    trial_end: Mapped[datetime | None] = mapped_column(UtcDateTime())
    past_due_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PendingItem(Base):
    """A charge or credit waiting for the next invoice: proration, late usage."""

    __tablename__ = "billing_pending_items"
    __table_args__ = (Index("ix_billing_pending_items_tenant_open", "tenant_id", "invoice_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    invoice_id: Mapped[str | None] = mapped_column(String(36))


class UsageRecord(Base):
    """Aggregated usage: one row per flushed (meter, dimensions, hour) or per keyed event."""

    __tablename__ = "billing_usage"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "event_id", name="uq_billing_usage_event"),
        Index("ix_billing_usage_tenant_meter_hour", "tenant_id", "meter", "hour"),
        Index("ix_billing_usage_tenant_invoice", "tenant_id", "invoice_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(255))
    meter: Mapped[str] = mapped_column(String(64))
    dimensions: Mapped[str] = mapped_column(String(255))  # "k=v,k=v", sorted; "" for none
    hour: Mapped[datetime] = mapped_column(UtcDateTime())
    quantity: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    invoice_id: Mapped[str | None] = mapped_column(String(36))


class UsageHourly(Base):
    """Usage rolled up per (meter, dimensions, hour): what ``/usage`` and balances read.

    Maintained in the flush's transaction from the rows the flush actually inserted, so an
    event deduplicated in ``billing_usage`` is never added here twice.
    """

    __tablename__ = "billing_usage_hourly"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    dimensions: Mapped[str] = mapped_column(String(255), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger)


class Invoice(Base):
    __tablename__ = "billing_invoices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "number", name="uq_billing_invoices_number"),
        Index("ix_billing_invoices_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    period_end: Mapped[datetime] = mapped_column(UtcDateTime())
    currency: Mapped[str] = mapped_column(String(3))
    catalog_version: Mapped[str] = mapped_column(String(64))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    subtotal: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    amount_paid_wallet: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    voided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    marked_uncollectible_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Wallet(Base):
    """The balance cache and floor of a tenant's ledger; balance == sum of its entries."""

    __tablename__ = "billing_wallets"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    floor: Mapped[int] = mapped_column(BigInteger, default=0)
    entries: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WalletEntry(Base):
    """Append-only: credits positive, debits negative; one entry per idempotency key."""

    __tablename__ = "billing_wallet_entries"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_billing_wallet_entries_key"),
        UniqueConstraint("tenant_id", "seq", name="uq_billing_wallet_entries_seq"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3... per tenant, in posting order
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    balance_after: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(255))
    reference: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PortalSession(Base):
    """Customer-portal credentials, stored as the token's hash, never the token: the
    single-use link, and the browser session the link is exchanged for."""

    __tablename__ = "billing_portal_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "link" (single use) or "browser" (cookie)
    tenant_id: Mapped[str] = mapped_column(String(36))
    return_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
