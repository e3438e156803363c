"""HL7 error codes. The negative ACK rides in ``details.ack``."""

from __future__ import annotations

from typing import Any

from novaza_gateway.core.errors import ApiError, Conflict, NotFound, UpstreamUnavailable


class Hl7Rejected(ApiError):
    """AR: not HL7, no MSH, wrong message type for the endpoint, unsupported event or version."""

    status = 400
    code = "HL7_REJECTED"
    default_message = "The message was rejected (AR); see details.ack."

    def __init__(self, message: str | None = None, *, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)


class Hl7ApplicationError(ApiError):
    """AE: the message is HL7 but could not be applied (unknown order, invalid field...)."""

    status = 422
    code = "HL7_APPLICATION_ERROR"
    default_message = "The message could not be processed (AE); see details.ack."

    def __init__(self, message: str | None = None, *, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)


class MessageInFlight(Conflict):
    code = "HL7_MESSAGE_IN_FLIGHT"
    default_message = (
        "A message with this sender and control id is being processed; resend it for its ACK."
    )


class MessageNotFound(NotFound):
    default_message = "No HL7 message has this id."


class DestinationUnknown(ApiError):
    status = 422
    code = "HL7_DESTINATION_UNKNOWN"
    default_message = "The tenant's HL7 settings name no such destination."


class StoreUnavailable(UpstreamUnavailable):
    """The message store failed (a connection lost, a timeout): nothing was acknowledged, so
    the sender resends; a message stored after all is then answered from the store."""

    default_message = "The message store is unavailable; the message was not acknowledged."

    def __init__(self) -> None:
        super().__init__(status=503)
        self.headers["Retry-After"] = "1"
