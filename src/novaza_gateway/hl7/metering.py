"""HL7 usage for billing: every stored message once, inbound and outbound.

Recorded after the transaction that stores the message commits. The event id is the stored
row's id, so a duplicate (answered with the original ACK and the original row) or a resend
after a lost ACK is the same event: counted once, as the idempotent recorder keys it.
"""

from __future__ import annotations

from collections.abc import Iterable

from novaza_gateway.core.metering import HL7_MESSAGES, UsageRecorder, dimensions
from novaza_gateway.hl7.outcome import Outcome

INBOUND = dimensions(direction="inbound")
OUTBOUND = dimensions(direction="outbound")


def record_inbound(usage: UsageRecorder, tenant_id: str, outcomes: Iterable[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.message_id is not None:  # rejected (AR) messages were never stored
            usage.record(
                tenant_id,
                HL7_MESSAGES,
                dimensions=INBOUND,
                source="hl7",
                event_id=outcome.message_id,
            )


def record_outbound(usage: UsageRecorder, tenant_id: str, message_id: str) -> None:
    usage.record(tenant_id, HL7_MESSAGES, dimensions=OUTBOUND, source="hl7", event_id=message_id)
