"""Opaque cursors: ``{"data": [...], "nextCursor": "..."|null}`` for every list."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from novaza_gateway.core.controlchars import has_control
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.core.params import INT64_MAX, in_range

T = TypeVar("T")
MAX_CURSOR = 1024  # the cursors we issue are a few keys: ~200 characters at most
MAX_CURSOR_ITEM = 512


class Page(BaseModel, Generic[T]):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    data: list[T]
    next_cursor: str | None


def encode_cursor(*position: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[str | int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise ValidationFailed.field("cursor", "not a cursor this API issued") from None
    if not isinstance(position, list) or len(position) != arity:
        raise ValidationFailed.field("cursor", "not a cursor this API issued")
    if not all(_storable(item) for item in position):
        raise ValidationFailed.field("cursor", "not a cursor this API issued")
    return position


def _storable(item: object) -> bool:
    """A cursor is the caller's text: its values go into queries, so they are held to what
    the stores take (no NUL, a bigint, an instant Python can move to UTC) like any
    parameter (core.params)."""
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return -INT64_MAX - 1 <= item <= INT64_MAX
    if not isinstance(item, str) or len(item) > MAX_CURSOR_ITEM or has_control(item):
        return False
    try:
        return in_range(datetime.fromisoformat(item))  # the services read some as instants
    except ValueError:
        return True


LimitQuery = Annotated[int, Query(ge=1, le=500, description="Page size")]
CursorQuery = Annotated[
    str | None, Query(max_length=MAX_CURSOR, description="Opaque cursor from `nextCursor`")
]
