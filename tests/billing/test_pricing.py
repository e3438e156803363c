"""Catalogue loading and the price arithmetic, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from novaza_gateway.billing.catalog import MeteredPrice, Tier, load_catalog, parse_catalog
from novaza_gateway.billing.periods import add_months
from novaza_gateway.billing.pricing import late_charge, metered_charge, prorate
from novaza_gateway.config import ConfigurationError

BUILTIN = Path(__file__).parents[2] / "src/novaza_gateway/billing/catalog.toml"


def graduated() -> MeteredPrice:
    return MeteredPrice(
        model="graduated",
        included=100,
        tiers=(
            Tier(up_to=1_000, unit_amount=10, unit_size=1),
            Tier(up_to=5_000, unit_amount=5, unit_size=1, flat_amount=1_000),
            Tier(unit_amount=1, unit_size=1),
        ),
    )


def test_builtin_catalogue_has_three_plans_with_limits_and_prices() -> None:
    catalog = load_catalog()
    assert list(catalog.plans) == ["starter", "professional", "enterprise"]
    starter = catalog.plans["starter"]
    assert (starter.limits.requests_per_second, starter.limits.burst) == (10, 20)
    assert catalog.plans["professional"].limits.burst == 100
    assert catalog.plans["enterprise"].limits.requests_per_second == 200
    models = {p.model for plan in catalog.plans.values() for p in plan.metered.values()}
    assert models == {"flat", "per_unit", "package", "graduated", "volume"}
    assert catalog.addons["medical_imaging"].clinical
    assert not catalog.addons["priority_support"].clinical


def test_recurring_amount_charges_only_addons_the_plan_lacks() -> None:
    catalog = load_catalog()
    emr, imaging = catalog.addons["emr"].price, catalog.addons["medical_imaging"].price
    base = catalog.plans["professional"].price
    assert catalog.recurring_amount("professional", frozenset({"emr"})) == base
    assert catalog.recurring_amount("professional", frozenset({"medical_imaging"})) == (
        base + imaging
    )
    assert catalog.recurring_amount("starter", frozenset({"emr"})) == (
        catalog.plans["starter"].price + emr
    )


def test_catalogue_from_a_file_and_bad_ones_refused(tmp_path: Path) -> None:
    text = BUILTIN.read_text().replace('version = "2026-11-01"', 'version = "site-7"')
    custom = tmp_path / "catalog.toml"
    custom.write_text(text)
    assert load_catalog(custom).version == "site-7"
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_catalog(tmp_path / "missing.toml")
    broken = text.replace('addons_included = ["emr"]', 'addons_included = ["teleport"]')
    with pytest.raises(ConfigurationError, match="unknown add-on"):
        parse_catalog(broken, "test")
    bad_tiers = text.replace("{ up_to = 1_000_000, unit_amount = 10", "{ unit_amount = 10")
    with pytest.raises(ConfigurationError, match="open-ended"):
        parse_catalog(bad_tiers, "test")


def test_graduated_prices_each_tier_its_own_units() -> None:
    price = graduated()
    assert metered_charge(price, 100).amount == 0  # all included
    assert metered_charge(price, 600).amount == 500 * 10
    # 1000 units in tier 1, then 1000 in tier 2 (plus its flat fee), 100 included first
    charge = metered_charge(price, 2_100)
    assert charge.quantity == 2_000
    assert charge.amount == 1_000 * 10 + 1_000 + 1_000 * 5
    assert metered_charge(price, 10_100).amount == 10_000 + 1_000 + 4_000 * 5 + 5_000 * 1


def test_volume_package_flat_and_fractional_per_unit() -> None:
    volume = MeteredPrice(
        model="volume", tiers=(Tier(up_to=100, unit_amount=3), Tier(unit_amount=2))
    )
    assert metered_charge(volume, 100).amount == 300
    assert metered_charge(volume, 101).amount == 202  # every unit at the reached tier
    package = MeteredPrice(model="package", included=10, package_size=100, package_amount=50)
    assert [metered_charge(package, q).amount for q in (10, 11, 110, 111)] == [0, 50, 50, 100]
    flat = MeteredPrice(model="flat", included=5, flat_amount=999)
    assert [metered_charge(flat, q).amount for q in (5, 6, 10_000)] == [0, 999, 999]
    per_unit = MeteredPrice(model="per_unit", unit_amount=10, unit_size=1_000)
    assert metered_charge(per_unit, 1_049).amount == 10  # 10.49 -> 10
    assert metered_charge(per_unit, 1_050).amount == 11  # 10.5 rounds half up


def test_late_usage_is_priced_at_the_margin() -> None:
    price = graduated()
    invoiced = 1_050  # 950 billable, all in tier 1
    late = 100  # 50 more in tier 1, then 50 in tier 2 with its flat fee
    assert late_charge(price, invoiced, late) == 50 * 10 + 1_000 + 50 * 5
    assert late_charge(price, invoiced, late) == (
        metered_charge(price, invoiced + late).amount - metered_charge(price, invoiced).amount
    )


def test_proration_and_month_arithmetic() -> None:
    start = datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert add_months(start) == datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert add_months(datetime(2026, 2, 28, tzinfo=UTC), 1, anchor_day=31).day == 31
    assert add_months(datetime(2026, 12, 15, tzinfo=UTC)).year == 2027
    period_start = datetime(2026, 4, 1, tzinfo=UTC)
    period_end = datetime(2026, 5, 1, tzinfo=UTC)  # 30 days
    assert prorate(30_000, period_start, period_end, datetime(2026, 4, 16, tzinfo=UTC)) == 15_000
    assert prorate(30_000, period_start, period_end, period_start) == 30_000
    assert prorate(30_000, period_start, period_end, period_end) == 0
    assert prorate(10_000, period_start, period_end, datetime(2026, 4, 21, tzinfo=UTC)) == 3_333
