"""Work billing does outside requests, each step in its own transaction: registering the
catalogue version at start-up, and closing ended periods (scheduler and CLI)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from novaza_gateway.billing import invoices, repository
from novaza_gateway.billing.catalog import Catalog
from novaza_gateway.billing.models import CatalogVersion, Invoice
from novaza_gateway.config import ConfigurationError
from novaza_gateway.core.db import Database, after_commit
from novaza_gateway.core.leases import Leases, lease_seconds

log = logging.getLogger("novaza.billing")

CLOSE_LEASE = "billing-close-periods"
Announce = Callable[[str], Awaitable[None]]  # tenant id -> drop cached entitlements


async def register_catalog(db: Database, catalog: Catalog, now: datetime) -> None:
    """Refuse a catalogue that changes the prices of a version already used on an invoice."""
    digest = catalog.digest()
    try:
        async with db.session_scope() as session:
            row = await repository.get_catalog_version(session, catalog.version)
            if row is None:
                session.add(
                    CatalogVersion(
                        version=catalog.version,
                        digest=digest,
                        document=catalog.model_dump(mode="json"),
                        first_seen_at=now,
                    )
                )
            elif row.digest != digest:
                if row.used_at is not None:
                    raise ConfigurationError(
                        f"billing catalogue version {catalog.version!r} was used on invoices "
                        "with other prices; publish the change under a new version"
                    )
                row.digest, row.document = digest, catalog.model_dump(mode="json")
    except IntegrityError:  # another replica registered it first
        await register_catalog(db, catalog, now)


async def close_due(
    db: Database, catalog: Catalog, now: datetime, announce: Announce | None = None
) -> list[Invoice]:
    """Close every ended period (a tenant behind by several periods gets one invoice each)."""
    closed: list[Invoice] = []
    while True:
        async with db.session_scope() as session:
            due = await repository.subscriptions_due(session, now, limit=100)
        progressed = False
        for tenant_id in due:
            async with db.session_scope() as session:
                invoice = await invoices.close_period(session, catalog, tenant_id, now)
                if invoice is not None and announce is not None:
                    after_commit(session, _announcer(announce, tenant_id))
            if invoice is not None:
                closed.append(invoice)
                progressed = True
        if not due or not progressed:
            return closed


def _announcer(announce: Announce, tenant_id: str) -> Callable[[], Coroutine[Any, Any, None]]:
    async def run() -> None:
        await announce(tenant_id)

    return run


class PeriodScheduler:
    """Closes ended periods every ``interval`` on one replica at a time (the
    ``billing-close-periods`` lease: closing stays exactly-once without it, as the
    subscription row is locked and re-checked, but N replicas would each scan and queue on
    those locks); never before the catalogue was checked."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        clock: Callable[[], datetime],
        interval: float,
        announce: Announce | None,
        leases: Leases | None = None,
    ) -> None:
        self.db, self.catalog, self.clock = db, catalog, clock
        self.interval, self.announce = interval, announce
        self.leases = leases or Leases(db)
        self.catalog_checked = False

    async def check_catalog(self) -> None:
        """At start-up: a changed used version stops the gateway; an unreachable database
        does not (the gateway serves, readiness reports it, the loop checks again)."""
        try:
            await register_catalog(self.db, self.catalog, self.clock())
        except ConfigurationError:
            raise
        except Exception as exc:
            log.warning("billing catalogue not checked yet", extra={"error": type(exc).__name__})
            return
        self.catalog_checked = True

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.run_once()
                except Exception as exc:
                    log.warning(
                        "closing billing periods failed", extra={"error": type(exc).__name__}
                    )
        finally:
            await self.leases.release_quietly(CLOSE_LEASE)

    async def run_once(self) -> list[Invoice]:
        """One pass, if this replica holds the lease: the invoices it issued."""
        if not await self.leases.acquire(CLOSE_LEASE, lease_seconds(self.interval)):
            return []
        if not self.catalog_checked:
            await register_catalog(self.db, self.catalog, self.clock())
            self.catalog_checked = True
        closed = await close_due(self.db, self.catalog, self.clock(), self.announce)
        if closed:
            log.info("billing periods closed", extra={"invoices": len(closed)})
        return closed
