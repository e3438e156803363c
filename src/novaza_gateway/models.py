"""Every table the gateway owns, imported in one place for Alembic and test set-up."""

from __future__ import annotations

from novaza_gateway.ai.models import AiConversation, AiMessage
from novaza_gateway.billing.models import (
    CatalogVersion,
    Invoice,
    PendingItem,
    PortalSession,
    Subscription,
    UsageHourly,
    UsageRecord,
    Wallet,
    WalletEntry,
)
from novaza_gateway.clinical.models import (
    Encounter,
    Order,
    Patient,
    PatientIdentifier,
    WorklistItem,
)
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.auditchain import AuditChainHead
from novaza_gateway.core.db import Base
from novaza_gateway.core.idempotency import IdempotencyKey
from novaza_gateway.core.leases import Lease
from novaza_gateway.desk.models import DeskContact, DeskOutboxEntry
from novaza_gateway.hl7.models import DeliveryAttempt, InboundMessage, OutboundMessage
from novaza_gateway.imaging.models import (
    ImagingInstance,
    ImagingPatient,
    ImagingSeries,
    ImagingStudy,
)
from novaza_gateway.rooms.models import ReconcileItem, Room
from novaza_gateway.tenants.models import Tenant

metadata = Base.metadata

__all__ = [
    "AuditChainHead",
    "AuditEvent",
    "CatalogVersion",
    "Invoice",
    "PendingItem",
    "PortalSession",
    "Subscription",
    "Tenant",
    "UsageHourly",
    "UsageRecord",
    "Wallet",
    "WalletEntry",
    "metadata",
]

__all__ += [
    "DeliveryAttempt",
    "Encounter",
    "InboundMessage",
    "Order",
    "OutboundMessage",
    "Patient",
    "PatientIdentifier",
    "WorklistItem",
]

__all__ += ["ImagingInstance", "ImagingPatient", "ImagingSeries", "ImagingStudy"]

__all__ += ["AiConversation", "AiMessage"]

__all__ += ["ReconcileItem", "Room"]

__all__ += ["DeskContact", "DeskOutboxEntry"]

__all__ += ["IdempotencyKey"]

__all__ += ["Lease"]
