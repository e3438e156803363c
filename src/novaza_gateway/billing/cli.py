"""``novaza billing ...``: period closing from the shell (cron, or by hand after an outage)."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as redis
import typer

from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.closing import close_due, register_catalog
from novaza_gateway.config import load_settings
from novaza_gateway.core.db import Database, create_engine, utcnow
from novaza_gateway.core.tenancy import TenantCache, TenantContext, TenantInvalidator

billing_cli = typer.Typer(help="Billing: close periods, issue invoices.", no_args_is_help=True)


class _NoTenants:
    async def load(self, key: str) -> TenantContext | None:
        return None


@billing_cli.command("close-period")
def close_period() -> None:
    """Close every subscription period that has ended: issue its invoice, pay it from the
    wallet when the wallet covers it. Safe to run again, and beside the in-process scheduler."""
    settings = load_settings()
    billing = BillingArea.build(settings.billing)

    async def main() -> list[dict[str, object]]:
        db = Database(create_engine(settings.sqlalchemy_url))
        client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
        invalidator = TenantInvalidator(TenantCache(_NoTenants(), 0), client)
        try:
            await register_catalog(db, billing.catalog, utcnow())
            invoices = await close_due(db, billing.catalog, utcnow(), invalidator.announce)
            return [
                {
                    "tenantId": i.tenant_id,
                    "number": i.number,
                    "status": i.status,
                    "total": i.total,
                    "currency": i.currency,
                }
                for i in invoices
            ]
        finally:
            if client is not None:
                await client.aclose()
            await db.dispose()

    closed = asyncio.run(main())
    for invoice in closed:
        typer.echo(json.dumps(invoice))
    typer.echo(f"{len(closed)} invoice(s) issued", err=True)
