from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import EmailStr, Field, field_validator

from novaza_gateway.core.schemas import ApiModel, ApiResponse
from novaza_gateway.tenants.plans import PLAN_LIMITS

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
TenantStatus = Literal["pending", "active", "suspended", "deleted"]
Addon = Literal["medical_imaging", "hl7_fhir", "emr"]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN, examples=["st-marys"])]


class RateLimitOverride(ApiModel):
    rate_per_second: float = Field(gt=0, le=100_000)
    burst: int = Field(ge=1, le=1_000_000)


class Contact(ApiModel):
    name: str | None = Field(default=None, max_length=255)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=64)


def _known_plan(plan: str | None) -> str | None:
    if plan is not None and plan not in PLAN_LIMITS:
        raise ValueError(f"unknown plan; one of {', '.join(sorted(PLAN_LIMITS))}")
    return plan


def _unique(addons: list[str] | None) -> list[str] | None:
    return sorted(set(addons)) if addons is not None else None


class TenantCreate(ApiModel):
    slug: Slug
    name: str = Field(min_length=1, max_length=255)
    plan: str = "starter"
    addons: list[Addon] = Field(default_factory=list)
    rate_limit: RateLimitOverride | None = None
    contact: Contact = Field(default_factory=Contact)
    settings: dict[str, Any] = Field(default_factory=dict)
    status: Literal["pending", "active"] = "pending"

    _plan = field_validator("plan")(_known_plan)
    _addons = field_validator("addons")(_unique)


class TenantUpdate(ApiModel):
    """Fields left out keep their value; ``rateLimit: null`` removes the override."""

    slug: Slug | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)
    plan: str | None = None
    addons: list[Addon] | None = None
    rate_limit: RateLimitOverride | None = None
    contact: Contact | None = None
    settings: dict[str, Any] | None = None

    _plan = field_validator("plan")(_known_plan)
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
