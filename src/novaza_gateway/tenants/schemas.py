from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import EmailStr, Field, field_validator

from novaza_gateway.core.schemas import ApiModel, ApiResponse

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
TenantStatus = Literal["pending", "active", "suspended", "deleted"]
# Plan and add-on names are the billing catalogue's: the service validates them through the
# ``SubscriptionHook`` (a catalogue may offer more add-ons than the clinical three).
Addon = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["medical_imaging"])]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN, examples=["st-marys"])]


class RateLimitOverride(ApiModel):
    rate_per_second: float = Field(gt=0, le=100_000)
    burst: int = Field(ge=1, le=1_000_000)


class Contact(ApiModel):
    name: str | None = Field(default=None, max_length=255)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=64)


def _unique(addons: list[str] | None) -> list[str] | None:
    return sorted(set(addons)) if addons is not None else None


class TenantCreate(ApiModel):
    slug: Slug
    name: str = Field(min_length=1, max_length=255)
    plan: str = Field(default="starter", max_length=64)
    addons: list[Addon] = Field(default_factory=list)
    rate_limit: RateLimitOverride | None = None
    contact: Contact = Field(default_factory=Contact)
    settings: dict[str, Any] = Field(default_factory=dict)
    status: Literal["pending", "active"] = "pending"

    _addons = field_validator("addons")(_unique)


class TenantUpdate(ApiModel):
    """Fields left out keep their value; ``rateLimit: null`` removes the override."""

    slug: Slug | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)
    plan: str | None = Field(default=None, max_length=64)
    addons: list[Addon] | None = None
    rate_limit: RateLimitOverride | None = None
    contact: Contact | None = None
    settings: dict[str, Any] | None = None

    _addons = field_validator("addons")(_unique)


class TenantOut(ApiResponse):
    id: str
    slug: str
    name: str
    status: TenantStatus
    plan: str
    addons: list[str]
    rate_limit: RateLimitOverride | None
    effective_rate_limit: RateLimitOverride
    contact: dict[str, Any]
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    suspended_at: datetime | None
    deleted_at: datetime | None
