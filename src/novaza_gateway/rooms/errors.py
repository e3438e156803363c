"""Rooms error codes (docs/rooms.md). Rendered by the one handler in ``core.errors``."""

from __future__ import annotations

from novaza_gateway.core.errors import ApiError, Conflict, NotFound, UpstreamUnavailable


class EncounterNotFound(NotFound):
    code = "ENCOUNTER_NOT_FOUND"
    default_message = "No encounter has this visit number for this tenant."


class EncounterCanceled(Conflict):
    code = "ENCOUNTER_CANCELED"
    default_message = "The encounter was canceled; it gets no room."


class RoomNotFound(NotFound):
    code = "ROOM_NOT_FOUND"
    default_message = "This encounter has no room for this tenant."

    def __init__(self, encounter: str) -> None:
        super().__init__(details={"encounter": encounter[:128]})


class RoomArchived(Conflict):
    code = "ROOM_ARCHIVED"
    default_message = "The encounter's room is archived; a create reopens it."

    def __init__(self, encounter: str) -> None:
        super().__init__(details={"encounter": encounter[:128]})


class RoomsNotConfigured(ApiError):
    status = 503
    code = "ROOMS_NOT_CONFIGURED"
    default_message = "No Personeo token secret is configured (NOVAZA_ROOMS_TOKEN_SECRET)."


class PersoneoUnavailable(UpstreamUnavailable):
    """The tenant's Personeo API failed (refused, timed out, 4xx/5xx, an answer without id).

    ``maybe_applied``: the request may have reached Personeo and taken effect there (a timeout
    after connecting, a dropped connection, a 2xx without a usable id); a refused connection
    or a non-2xx answer did not.
    """

    def __init__(self, reason: str, *, maybe_applied: bool = False) -> None:
        super().__init__("The tenant's Personeo service failed; nothing was changed.", status=502)
        self.details = {"reason": reason}
        self.maybe_applied = maybe_applied


class RoomOperationTakenOver(UpstreamUnavailable):
    """The request outlived its write-ahead intent: the reconciler undid the Personeo half."""

    def __init__(self) -> None:
        super().__init__("The room operation took too long and was undone; retry.", status=503)
