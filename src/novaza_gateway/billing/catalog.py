"""The catalogue: plans, add-on prices, limits and metered prices, from a versioned TOML file.

The default ships in the package (``catalog.toml``); ``NOVAZA_BILLING_CATALOG`` names another.
Loaded and validated once at start-up; a bad catalogue stops the gateway before any request.
"""

from __future__ import annotations

import hashlib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from novaza_gateway.config import ConfigurationError

PriceModel = Literal["flat", "per_unit", "package", "graduated", "volume"]
CLINICAL_DEFAULT = True


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Meter(_Strict):
    name: str
    unit: str
    dimensions: tuple[str, ...] = ()


class Addon(_Strict):
    name: str
    description: str = ""
    price: int = Field(ge=0)
    clinical: bool = CLINICAL_DEFAULT


class Limits(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)
    ai_tokens: int = Field(ge=0)
    storage_bytes: int = Field(ge=0)


class Tier(_Strict):
    up_to: int | None = Field(default=None, ge=1)
    unit_amount: int = Field(default=0, ge=0)
    unit_size: int = Field(default=1, ge=1)
    flat_amount: int = Field(default=0, ge=0)


class MeteredPrice(_Strict):
    model: PriceModel
    included: int = Field(default=0, ge=0)
    unit_amount: int = Field(default=0, ge=0)
    unit_size: int = Field(default=1, ge=1)
    package_size: int = Field(default=1, ge=1)
    package_amount: int = Field(default=0, ge=0)
    flat_amount: int = Field(default=0, ge=0)
    tiers: tuple[Tier, ...] = ()

    @model_validator(mode="after")
    def _tiers_fit_the_model(self) -> MeteredPrice:
        if self.model in ("graduated", "volume"):
            if not self.tiers:
                raise ValueError(f"a {self.model} price needs tiers")
            bounds = [t.up_to for t in self.tiers]
            if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
                raise ValueError("only the last tier is open-ended (no up_to)")
            closed = [b for b in bounds if b is not None]
            if closed != sorted(set(closed)):
                raise ValueError("tier bounds must increase")
        elif self.tiers:
            raise ValueError(f"a {self.model} price takes no tiers")
        return self


class Plan(_Strict):
    name: str
    description: str = ""
    price: int = Field(ge=0)
    trial_days: int = Field(default=0, ge=0, le=365)
    addons_included: tuple[str, ...] = ()
    limits: Limits
    metered: dict[str, MeteredPrice] = Field(default_factory=dict)


class Catalog(_Strict):
    version: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    interval: Literal["month"] = "month"
    past_due_grace_days: int = Field(default=14, ge=0)
    default_plan: str = "starter"
    meters: dict[str, Meter]
    addons: dict[str, Addon]
    plans: dict[str, Plan]

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not a plan")
        for plan_id, plan in self.plans.items():
            for addon in plan.addons_included:
                if addon not in self.addons:
                    raise ValueError(f"plan {plan_id}: unknown add-on {addon!r}")
            for meter in plan.metered:
                if meter not in self.meters:
                    raise ValueError(f"plan {plan_id}: unknown meter {meter!r}")
        return self

    def digest(self) -> str:
        """A fingerprint of the content: the same version must always mean the same prices.
        Defaults are left out, so a new optional catalogue field does not change old digests."""
        document = orjson.dumps(
            self.model_dump(mode="json", exclude_defaults=True), option=orjson.OPT_SORT_KEYS
        )
        return hashlib.sha256(document).hexdigest()

    def plan(self, plan_id: str) -> Plan:
        return self.plans.get(plan_id) or self.plans[self.default_plan]

    def recurring_amount(self, plan_id: str, addons: frozenset[str]) -> int:
        """Base price plus the add-ons bought on top of what the plan includes."""
        plan = self.plan(plan_id)
        bought = addons - set(plan.addons_included)
        return plan.price + sum(self.addons[a].price for a in bought if a in self.addons)


def parse_catalog(text: str, origin: str) -> Catalog:
    try:
        return Catalog.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigurationError(f"billing catalogue {origin} is not valid: {exc}") from exc


def load_catalog(path: Path | None = None) -> Catalog:
    if path is None:
        text = resources.files("novaza_gateway.billing").joinpath("catalog.toml").read_text()
        return parse_catalog(text, "(built-in)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"billing catalogue {path} cannot be read: {exc}") from exc
    return parse_catalog(text, str(path))
