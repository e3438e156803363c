"""The HL7 HTTP operations: intake of one ADT or ORM message; (ORU send and status)."""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.audit import Actor
from novaza_gateway.core.errors import UnsupportedMediaType, ValidationFailed
from novaza_gateway.core.tenancy import TenantContext
from novaza_gateway.hl7 import intake
from novaza_gateway.hl7.intake import Outcome
from novaza_gateway.hl7.parser import encode
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.routing import TenantHl7Settings

ER7_MEDIA_TYPES = frozenset(
    {"application/hl7-v2", "x-application/hl7-v2+er7", "application/hl7-v2+er7", "text/plain"}
)


def message_bytes(body: bytes, content_type: str) -> bytes:
    """The ER7 message of a request body: as sent, or from JSON ``{"message": "..."}``."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in ER7_MEDIA_TYPES:
        return body
    if media_type != "application/json":
        raise UnsupportedMediaType(
            "Send ER7 (application/hl7-v2, x-application/hl7-v2+er7, text/plain) or JSON."
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationFailed.field("body", "not valid JSON") from None
    message = document.get("message") if isinstance(document, dict) else None
    if not isinstance(message, str) or not message.strip():
        raise ValidationFailed.field("message", "an HL7 v2 message in ER7 is required")
    return encode(message)


async def receive(
    session: AsyncSession,
    settings: TenantHl7Settings,
    tenant: TenantContext,
    actor: Actor,
    body: bytes,
    content_type: str,
    accepts: frozenset[str],
) -> Outcome:
    data = message_bytes(body, content_type)
    ctx = Hl7Context(tenant.id, actor, await settings.for_tenant(tenant.id))
    return await intake.receive(session, ctx, data, channel="http", accepts=accepts)
