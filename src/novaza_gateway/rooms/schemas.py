"""Request and answer shapes, camelCase on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from novaza_gateway.core.schemas import ApiModel, ApiResponse

VISIT_NUMBER = Annotated[str, Field(min_length=1, max_length=128)]
SUBJECT = Annotated[str, Field(min_length=1, max_length=255)]
MAX_GRANTED_ROOMS = 50
MAX_MEMBERS = 100


class TokenIn(ApiModel):
    """``rooms``: encounters (visit numbers) whose rooms the token may join; ``ttlSeconds``:
    a shorter lifetime than the default (longer asks are capped, not refused)."""

    rooms: Annotated[list[VISIT_NUMBER], Field(max_length=MAX_GRANTED_ROOMS)] = Field(
        default_factory=list
    )
    ttl_seconds: Annotated[int, Field(ge=30)] | None = None


class TokenOut(ApiResponse):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105  # the OAuth token type
    expires_in: int
    expires_at: datetime
    identity: str
    personeo_url: str | None


class RoomIn(ApiModel):
    encounter: VISIT_NUMBER
    display_name: Annotated[str, Field(max_length=255)] | None = None
    members: Annotated[list[SUBJECT], Field(max_length=MAX_MEMBERS)] = Field(default_factory=list)


class RoomOut(ApiResponse):
    id: str
    encounter: str
    display_name: str
    members: list[str]
    status: Literal["active", "archived"]
    mode: Literal["embedded", "upstream"]
    remote_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    archived_by: str | None
