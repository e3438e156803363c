"""Billing API shapes: camelCase, money as integer minor units plus ISO 4217 currency."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from novaza_gateway.billing.catalog import PriceModel
from novaza_gateway.core.schemas import ApiModel, ApiResponse

SubscriptionStatus = Literal["trialing", "active", "past_due", "canceled", "unpaid"]
InvoiceStatus = Literal["draft", "open", "paid", "void", "uncollectible"]
EntitlementSource = Literal["plan", "addon", "override"]


class Money(ApiResponse):
    amount: int
    currency: str


class TierOut(ApiResponse):
    up_to: int | None
    unit_amount: int
    unit_size: int
    flat_amount: int


class MeteredPriceOut(ApiResponse):
    meter: str
    meter_name: str
    unit: str
    model: PriceModel
    included: int
    unit_amount: int | None = None
    unit_size: int | None = None
    package_size: int | None = None
    package_amount: int | None = None
    flat_amount: int | None = None
    tiers: list[TierOut] | None = None


class LimitsOut(ApiResponse):
    requests_per_second: float
    burst: int
    ai_tokens_per_period: int
    storage_bytes: int


class AddonOut(ApiResponse):
    id: str
    name: str
    description: str
    price: Money
    clinical: bool


class PlanOut(ApiResponse):
    id: str
    name: str
    description: str
    price: Money
    interval: str
    catalog_version: str
    features: list[str]
    addons_available: list[AddonOut]
    limits: LimitsOut
    metered_prices: list[MeteredPriceOut]


class PlanList(ApiResponse):
    data: list[PlanOut]
    catalog_version: str


class SubscriptionOut(ApiResponse):
    id: str
    plan: str
    addons: list[str]
    status: SubscriptionStatus
    currency: str
    recurring_price: Money
    current_period_start: datetime
    current_period_end: datetime
    cancel_at: datetime | None
    trial_end: datetime | None
    past_due_since: datetime | None
    created_at: datetime


class SubscriptionList(ApiResponse):
    data: list[SubscriptionOut]


class FeatureOut(ApiResponse):
    addon: str
    enabled: bool
    source: EntitlementSource
    reason: str | None


class RateLimitEntitlement(ApiResponse):
    requests_per_second: float
    burst: int
    source: EntitlementSource


class AllowanceOut(ApiResponse):
    value: int
    source: EntitlementSource


class MeterBalance(ApiResponse):
    meter: str
    included: int
    used: int
    remaining: int
    source: EntitlementSource


class EntitlementsOut(ApiResponse):
    plan: str
    subscription_status: str
    grace_until: datetime | None
    features: list[FeatureOut]
    rate_limit: RateLimitEntitlement
    ai_tokens: AllowanceOut
    storage_bytes: AllowanceOut
    balances: list[MeterBalance]
    as_of: datetime


class CreditIn(ApiModel):
    amount: int = Field(gt=0, le=10**12, description="Minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str = Field(default="Top-up", min_length=1, max_length=255)
    kind: Literal["top_up", "grant"] = "top_up"


class FloorIn(ApiModel):
    floor: int = Field(
        le=0,
        ge=-(10**12),
        description="Minor units, at most 0: how far below zero debits may take the balance",
    )


class WalletEntryOut(ApiResponse):
    id: str
    kind: str
    amount: int
    currency: str
    balance_after: int
    description: str
    reference: str | None
    created_at: datetime


class WalletOut(ApiResponse):
    balance: Money
    floor: Money
    transactions: list[WalletEntryOut]


class UsagePoint(ApiResponse):
    start: datetime
    quantity: int


class DimensionTotal(ApiResponse):
    dimensions: dict[str, str]
    total: int


class MeterUsage(ApiResponse):
    meter: str
    name: str
    unit: str
    total: int
    by_dimensions: list[DimensionTotal]
    series: list[UsagePoint]
    included: int
    used_this_period: int
    remaining: int


class UsageOut(ApiResponse):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    granularity: str
    period_start: datetime
    period_end: datetime
    meters: list[MeterUsage]
    as_of: datetime


class InvoiceLineOut(ApiResponse):
    kind: str
    description: str
    meter: str | None = None
    quantity: int
    unit_amount: str = Field(description="Minor units per unit, as an exact decimal string")
    amount: int


class InvoiceOut(ApiResponse):
    id: str
    number: int | None = Field(description="Sequential per tenant; null on the upcoming draft")
    status: InvoiceStatus
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[InvoiceLineOut]
    subtotal: int
    total: int
    amount_paid_wallet: int
    amount_due: int
    catalog_version: str
    issued_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None = None
    marked_uncollectible_at: datetime | None = None


class CreditOut(ApiResponse):
    entry: WalletEntryOut
    balance: Money


class PortalSessionIn(ApiModel):
    return_url: str | None = Field(default=None, max_length=2048)


class PortalSessionOut(ApiResponse):
    url: str
    expires_at: datetime


class OverridesIn(ApiModel):
    """Entitlement overrides; the whole set is replaced (``{}`` removes them)."""

    addons: list[str] = Field(default_factory=list, max_length=20)
    ai_tokens: int | None = Field(default=None, ge=0, le=10**15)
