"""Billing fixtures: a probe router gated by add-on and metered, a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import APIRouter

from novaza_gateway.core.deps import TenantDep
from novaza_gateway.core.policy import policy
from tests.conftest import Gateway, gateway_settings, start_gateway

BUILTIN = Path(__file__).parents[2] / "src/novaza_gateway/billing/catalog.toml"

probe = APIRouter(prefix="/probe", tags=["test"])


def trial_catalog(directory: Path) -> Path:
    """The built-in catalogue with a 14-day free trial on the starter plan."""
    catalog = directory / "trial.toml"
    catalog.write_text(
        BUILTIN.read_text().replace(
            "price = 9900\naddons_included = []",
            "price = 9900\ntrial_days = 14\naddons_included = []",
        )
    )
    return catalog


@probe.get("/imaging", **policy("imaging:read", addon="medical_imaging"))
async def imaging_only(tenant: TenantDep) -> dict[str, str]:
    return {"tenant": tenant.slug}


@probe.get("/support", **policy(addon="priority_support"))
async def support_only(tenant: TenantDep) -> dict[str, str]:
    return {"tenant": tenant.slug}


@probe.get("/metered", **policy(meter="imaging"))
async def metered(tenant: TenantDep) -> dict[str, str]:
    return {"tenant": tenant.slug}


class Clock:
    """The billing clock, moved by tests (periods, grace) without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def billing_gateway(tmp_path: Path, db: str) -> AsyncIterator[tuple[Gateway, Clock]]:
    clock = Clock()
    settings = gateway_settings(tmp_path / "data", db)
    async for gw in start_gateway(settings, extra_routers=(probe,)):
        gw.app.state.billing.entitlements.clock = clock
        yield gw, clock


@pytest.fixture
async def billed(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[Gateway, Clock]]:
    """A gateway with the probe routes and a billing clock, on SQLite and PostgreSQL."""
    async for pair in billing_gateway(tmp_path, db_url):
        yield pair


@pytest.fixture
async def billed_lite(tmp_path: Path, sqlite_url: str) -> AsyncIterator[tuple[Gateway, Clock]]:
    async for pair in billing_gateway(tmp_path, sqlite_url):
        yield pair
