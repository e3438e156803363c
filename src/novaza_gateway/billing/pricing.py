"""Pure price arithmetic: metered charges and proration, in integer minor units.

Fractions stay exact until one final rounding per charge (half up), so a charge never
depends on the order its parts were added in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from novaza_gateway.billing.catalog import MeteredPrice, Tier


def round_half_up(value: Fraction) -> int:
    if value >= 0:
        return int((value + Fraction(1, 2)).__floor__())
    return -round_half_up(-value)


@dataclass(frozen=True, slots=True)
class Charge:
    quantity: int  # billable units (after the included ones)
    amount: int  # minor units
    unit_amount: Fraction  # effective price per unit, for the invoice line


def _per(amount: int, size: int, units: int) -> Fraction:
    return Fraction(amount * units, size)


def _graduated(tiers: tuple[Tier, ...], units: int) -> Fraction:
    total, lower = Fraction(0), 0
    for tier in tiers:
        if units <= lower:
            break
        upper = tier.up_to if tier.up_to is not None else units
        inside = min(units, upper) - lower
        if inside > 0:
            total += tier.flat_amount + _per(tier.unit_amount, tier.unit_size, inside)
        lower = upper
    return total


def _volume(tiers: tuple[Tier, ...], units: int) -> Fraction:
    for tier in tiers:
        if tier.up_to is None or units <= tier.up_to:
            return tier.flat_amount + _per(tier.unit_amount, tier.unit_size, units)
    raise AssertionError("the catalogue guarantees an open-ended last tier")


def exact_amount(price: MeteredPrice, quantity: int) -> Fraction:
    """The unrounded charge for ``quantity`` units used in one period."""
    units = max(0, quantity - price.included)
    if units == 0:
        return Fraction(0)
    match price.model:
        case "flat":
            return Fraction(price.flat_amount)
        case "per_unit":
            return _per(price.unit_amount, price.unit_size, units)
        case "package":
            packages = -(-units // price.package_size)
            return Fraction(packages * price.package_amount)
        case "graduated":
            return _graduated(price.tiers, units)
        case "volume":
            return _volume(price.tiers, units)
    raise AssertionError(price.model)


def metered_charge(price: MeteredPrice, quantity: int) -> Charge:
    units = max(0, quantity - price.included)
    exact = exact_amount(price, quantity)
    unit = exact / units if units else Fraction(0)
    return Charge(quantity=units, amount=round_half_up(exact), unit_amount=unit)


def late_charge(price: MeteredPrice, invoiced: int, late: int) -> int:
    """What ``late`` more units cost on top of ``invoiced`` already billed for the period."""
    return round_half_up(exact_amount(price, invoiced + late)) - round_half_up(
        exact_amount(price, invoiced)
    )


def prorate(amount: int, period_start: datetime, period_end: datetime, at: datetime) -> int:
    """The share of a period's ``amount`` for the time left from ``at`` to the period's end."""
    total = (period_end - period_start).total_seconds()
    left = max(0.0, min(total, (period_end - at).total_seconds()))
    if total <= 0:
        return 0
    return round_half_up(Fraction(amount) * Fraction(int(left)) / Fraction(int(total)))
