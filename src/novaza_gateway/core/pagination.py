"""Opaque cursors: ``{"data": [...], "nextCursor": "..."|null}`` for every list."""

from __future__ import annotations

import base64
from typing import Annotated, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from novaza_gateway.core.errors import ValidationFailed

T = TypeVar("T")


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
    return position


LimitQuery = Annotated[int, Query(ge=1, le=500, description="Page size")]
CursorQuery = Annotated[str | None, Query(description="Opaque cursor from `nextCursor`")]
