"""Desk error codes (docs/desk.md, docs/errors.md). Rendered by the one handler in core."""

from __future__ import annotations

from novaza_gateway.core.errors import Conflict, NotFound, PayloadTooLarge


class ContactNotFound(NotFound):
    code = "CONTACT_NOT_FOUND"
    default_message = "No contact of this tenant has this id."


class TooManyContacts(PayloadTooLarge):
    default_message = "A sync takes at most 1000 contacts; split the batch."

    def __init__(self, received: int, limit: int) -> None:
        super().__init__(
            f"A sync takes at most {limit} contacts; this one has {received}.",
            details={"maxContacts": limit, "received": received},
        )


class ConcurrentSync(Conflict):
    default_message = "Another sync changed some of these contacts meanwhile; send it again."


class DeskNotUpstream(Conflict):
    code = "DESK_NOT_UPSTREAM"
    default_message = (
        "This tenant names no upstream Desk (settings desk.baseUrl): there is nothing to push."
    )
