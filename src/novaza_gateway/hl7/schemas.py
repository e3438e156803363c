from __future__ import annotations

from novaza_gateway.core.schemas import ApiResponse


class AckOut(ApiResponse):
    """The answer to an accepted message (AA): the ACK, and where the message is stored."""

    ack: str
    ack_code: str
    control_id: str
    message_id: str | None
    duplicate: bool
