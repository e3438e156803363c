"""Everything billing owns for the app's lifetime, built once in ``app.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from novaza_gateway.billing.catalog import Catalog, load_catalog
from novaza_gateway.billing.entitlements import BillingEntitlements, Clock
from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.portal import SettingsSource
from novaza_gateway.billing.prepaid import PrepaidSettler
from novaza_gateway.billing.quota import QuotaBook
from novaza_gateway.config import BillingSettings
from novaza_gateway.core.db import Database, utcnow


@dataclass
class BillingArea:
    settings: BillingSettings
    catalog: Catalog
    entitlements: BillingEntitlements
    meter: UsageMeter = field(default_factory=UsageMeter)
    tenant_settings: SettingsSource | None = None  # wired in app.py (portal return origins)
    quota: QuotaBook | None = None  # the AI token allowance; needs the database
    settler: PrepaidSettler | None = None

    def attach(self, db: Database) -> None:
        """The parts that read the database: the AI token quota and prepaid settlement."""
        self.quota = QuotaBook(db, self.entitlements, self.meter)
        self.settler = PrepaidSettler(db, self.entitlements, self.meter)

    @classmethod
    def build(cls, settings: BillingSettings, clock: Clock = utcnow) -> BillingArea:
        catalog = load_catalog(settings.catalog)
        return cls(settings, catalog, BillingEntitlements(catalog, clock))
