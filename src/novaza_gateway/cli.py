"""The ``novaza`` command: serve, migrate, token, tenants."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import redis.asyncio as redis
import typer
import uvicorn
from pydantic import ValidationError

from novaza_gateway.app import settings_sections
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.cli import billing_cli
from novaza_gateway.config import ConfigurationError, Settings, load_settings
from novaza_gateway.core import auditchain, devkeys
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.core.errors import ApiError
from novaza_gateway.core.httpserver import protocol_factory
from novaza_gateway.core.logging import configure_logging
from novaza_gateway.core.policy import ADMIN_SCOPE, TENANT_SCOPES
from novaza_gateway.core.secretbox import secret_box
from novaza_gateway.core.tenancy import TenantCache, TenantInvalidator
from novaza_gateway.imaging.cli import build_dicom_cli
from novaza_gateway.migrate import upgrade
from novaza_gateway.tenants import repository as tenants_repository
from novaza_gateway.tenants import service as tenants
from novaza_gateway.tenants.schemas import TenantCreate
from novaza_gateway.tenants.service import TenantAdmin

app = typer.Typer(
    help="Novaza Gateway: the front door of the Novaza clinical platform.",
    no_args_is_help=True,
    add_completion=False,
)
tenants_app = typer.Typer(help="Tenant administration from the shell.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(billing_cli, name="billing")


T = TypeVar("T")


def describe_configuration_error(exc: ConfigurationError) -> str:
    """The problem in the operator's terms, without echoing the values read.

    pydantic's own message repeats the input (every ``NOVAZA_*`` value, secrets included).
    """
    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        return str(exc)
    problems = []
    for error in cause.errors(include_url=False, include_input=False, include_context=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in error["loc"])
        problems.append(f"NOVAZA_{field.upper()}: {message}" if field else message)
    return "; ".join(problems)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        typer.echo(f"configuration error: {describe_configuration_error(exc)}", err=True)
        raise typer.Exit(2) from None


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM outside uvicorn's own handling: stop without a traceback, status 0.

    uvicorn drains on SIGTERM, then restores this handler and raises the signal again; with
    the default handler the process would then die by the signal (status -15) after a clean
    shutdown, which supervisors report as a crash.
    """
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env NOVAZA_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env NOVAZA_PORT]")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
) -> None:
    """Serve the gateway. SIGTERM: readiness 503 at once, the listener closes after
    NOVAZA_SHUTDOWN_DRAIN_DELAY_SECONDS, in-flight requests get NOVAZA_SHUTDOWN_GRACE_SECONDS."""
    if host:
        os.environ["NOVAZA_HOST"] = host
    if port:
        os.environ["NOVAZA_PORT"] = str(port)
    settings = _settings()
    # the supervisor's lines too
    configure_logging(settings.log_level, settings.log_json, settings.log_sql)
    metrics_dir = None
    if workers > 1:
        # Workers import prometheus_client fresh and write their samples here: a directory
        # of this process alone, so another gateway on the same data dir (a replica, a
        # restart) neither empties nor adds to it (ADR 0067).
        metrics_dir = tempfile.mkdtemp(prefix=f"novaza-metrics-{os.getpid()}-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    trusted = settings.trusted_proxy_list  # nobody's X-Forwarded-For unless listed
    try:
        uvicorn.run(
            "novaza_gateway.asgi:create",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            access_log=False,
            log_config=None,
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted,
            http=protocol_factory(settings.edge),
            timeout_graceful_shutdown=settings.shutdown.grace_seconds,
            server_header=False,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def migrate() -> None:
    """Apply database migrations (SQLite under NOVAZA_DATA_DIR, or NOVAZA_DATABASE_URL)."""
    upgrade(_settings())
    typer.echo("database is at the latest revision")


@app.command()
def token(
    tenant: Annotated[str | None, typer.Option(help="Tenant slug for the tenant claim")] = None,
    scope: Annotated[str | None, typer.Option(help="Space-separated scopes")] = None,
    sub: Annotated[str, typer.Option(help="Subject")] = "dev-user",
    ttl: Annotated[int, typer.Option(min=1, max=86400 * 30)] = 3600,
    admin: Annotated[bool, typer.Option(help="A platform:admin token")] = False,
) -> None:
    """Print a token signed with the dev-mode key (dev mode only)."""
    settings = _settings()
    if not settings.auth.dev_mode:
        typer.echo("novaza token works in dev mode only (no issuer/JWKS configured)", err=True)
        raise typer.Exit(2)
    if not tenant and not admin:
        typer.echo("give --tenant SLUG or --admin", err=True)
        raise typer.Exit(2)
    scopes = scope.split() if scope else ([ADMIN_SCOPE] if admin else TENANT_SCOPES)
    typer.echo(
        devkeys.mint_token(
            settings.data_dir,
            subject=sub,
            scopes=scopes,
            tenant=tenant,
            tenant_claim=settings.tenant_claim,
            ttl_seconds=ttl,
            audience=settings.jwt_audience,
        )
    )


def _run_admin(action: Callable[[Any, TenantAdmin], Awaitable[T]]) -> T:
    """Run one tenant action in one transaction, audited as the shell user."""
    settings = _settings()

    async def main() -> T:
        db = Database(create_engine(settings.sqlalchemy_url))
        client = (
            # The announcement is best effort (replicas converge through the cache TTL): a
            # hung Redis must not hold the shell for redis-py's default timeout, or forever.
            redis.Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
            if settings.redis_url
            else None
        )
        invalidator = TenantInvalidator(TenantCache(_NoSource(), 0), client)
        billing = BillingArea.build(settings.billing).entitlements  # subscriptions follow
        actor = Actor(f"cli:{getpass.getuser()}")
        sections = settings_sections(secret_box(settings))
        admin = TenantAdmin(actor, sections, invalidator, billing, billing)
        try:
            async with db.session_scope() as session:
                return await action(session, admin)
        finally:
            if client is not None:
                await client.aclose()
            await db.dispose()

    try:
        return asyncio.run(main())
    except ApiError as exc:
        typer.echo(f"{exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from None


class _NoSource:
    async def load(self, key: str) -> None:
        return None


def _print(model: Any) -> None:
    typer.echo(json.dumps(model.model_dump(mode="json", by_alias=True), indent=2))


@tenants_app.command("create")
def tenants_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Display name")],
    plan: Annotated[str, typer.Option()] = "starter",
    addon: Annotated[list[str] | None, typer.Option(help="Add-on (repeatable)")] = None,
    activate: Annotated[bool, typer.Option(help="Create it active")] = False,
    if_missing: Annotated[bool, typer.Option(help="Succeed quietly if it exists")] = False,
) -> None:
    """Create a tenant."""
    try:
        body = TenantCreate.model_validate(
            {
                "slug": slug,
                "name": name,
                "plan": plan,
                "addons": addon or [],
                "status": "active" if activate else "pending",
            }
        )
    except ValueError as exc:
        typer.echo(f"VALIDATION_FAILED: {exc}", err=True)
        raise typer.Exit(1) from None

    async def create(session: Any, admin: TenantAdmin) -> Any:
        if if_missing:
            try:
                return await tenants.get_tenant(session, admin, slug)
            except ApiError:
                pass
        return await tenants.create_tenant(session, admin, body)

    _print(_run_admin(create))


@tenants_app.command("list")
def tenants_list(status: Annotated[str | None, typer.Option()] = None) -> None:
    """List tenants (all pages)."""

    async def collect(session: Any, admin: TenantAdmin) -> list[Any]:
        rows, cursor = [], None
        while True:
            page = await tenants.list_tenants(
                session, admin, status=status, cursor=cursor, limit=500
            )
            rows += page.data
            if page.next_cursor is None:
                return rows
            cursor = page.next_cursor

    for tenant in _run_admin(collect):
        typer.echo(f"{tenant.slug}\t{tenant.status}\t{tenant.plan}\t{','.join(tenant.addons)}")


@tenants_app.command("suspend")
def tenants_suspend(slug: str) -> None:
    """Suspend a tenant: its next request on every replica is refused."""
    _print(_run_admin(lambda s, a: tenants.set_status(s, a, slug, "suspended")))


@tenants_app.command("activate")
def tenants_activate(slug: str) -> None:
    """Activate a tenant."""
    _print(_run_admin(lambda s, a: tenants.set_status(s, a, slug, "active")))


async def _active_tenant_id(session: Any, slug: str) -> str | None:
    tenant = await tenants_repository.get_by_slug(session, slug)
    return tenant.id if tenant is not None and tenant.status == "active" else None


app.add_typer(build_dicom_cli(_active_tenant_id), name="dicom")

secrets_app = typer.Typer(help="Tenant secrets sealed at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-seal every stored tenant secret under the first of NOVAZA_SECRETS_KEYS."""
    count = _run_admin(tenants.reseal_secrets)
    typer.echo(f"{count} tenant secrets sealed under the current key")


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        typer.echo(f"configuration error: {describe_configuration_error(exc)}", err=True)
        sys.exit(2)


audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="One tenant's chain (slug)")] = None,
) -> None:
    """Recompute the audit hash chains; exit 1 when a row was edited or deleted."""
    settings = _settings()

    async def main() -> list[auditchain.ChainReport]:
        db = Database(create_engine(settings.sqlalchemy_url))
        try:
            async with db.sessionmaker() as session:
                tenant_id = None
                if tenant is not None:
                    found = await tenants_repository.get_by_slug(session, tenant)
                    if found is None:
                        typer.echo(f"no tenant {tenant!r}", err=True)
                        raise typer.Exit(2)
                    tenant_id = found.id
                return await auditchain.verify(session, tenant_id)
        finally:
            await db.dispose()

    reports = asyncio.run(main())
    for report in reports:
        state = "intact" if report.intact else "BROKEN"
        typer.echo(f"{report.chain}\t{state}\t{report.sealed} sealed\t{report.pending} pending")
        for problem in report.problems:
            typer.echo(f"  {problem}")
    if not all(report.intact for report in reports):
        raise typer.Exit(1)
