"""``create_app(settings)``: wiring. Middleware order, routers, guards, lifespan.

The request path, outermost first:
FrontDoor (id, version, metrics, access log, last-resort 500; finds the route) ->
[framework: exception handlers, exit stack; skipped by StateRoutes] ->
RouteGuard per route (authenticate, tenant, authorize, rate limit, body limit) -> endpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as redis
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from sqlalchemy import event, text

from novaza_gateway import __version__
from novaza_gateway.ai.area import AiArea
from novaza_gateway.ai.router import router as ai_router
from novaza_gateway.ai.settings import AiTenantSettings
from novaza_gateway.billing.area import BillingArea
from novaza_gateway.billing.closing import PeriodScheduler
from novaza_gateway.billing.flusher import UsageFlusher
from novaza_gateway.billing.relay import UsageRelay, relay_key
from novaza_gateway.billing.router import routes as billing_router
from novaza_gateway.billing.settings import BillingTenantSettings
from novaza_gateway.config import Settings
from novaza_gateway.core import datadir
from novaza_gateway.core.auditchain import AuditSealer
from novaza_gateway.core.auth import TokenVerifier
from novaza_gateway.core.authlimit import AuthFailureLimit
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.core.errors import install_handlers
from novaza_gateway.core.frontdoor import GatewayApp
from novaza_gateway.core.health import HealthRegistry, Probe
from novaza_gateway.core.health import router as health_router
from novaza_gateway.core.jwks import KeyStore
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.core.metrics import DB_POOL_CHECKED_OUT, DB_POOL_SIZE
from novaza_gateway.core.policy import POLICY_KEY, Gatekeeper, Policy, RouteGuard
from novaza_gateway.core.ratelimit import RateLimiter, RedisLimiter
from novaza_gateway.core.resp import PipelinedRedis
from novaza_gateway.core.routeindex import RouteIndex
from novaza_gateway.core.secretbox import SecretBox, secret_box
from novaza_gateway.core.tenancy import TenantCache, TenantInvalidator
from novaza_gateway.core.tenant_settings import SettingsSections
from novaza_gateway.core.whoami import router as whoami_router
from novaza_gateway.desk.area import DeskArea
from novaza_gateway.desk.router import router as desk_router
from novaza_gateway.desk.settings import DeskTenantSettings
from novaza_gateway.hl7.area import Hl7Area
from novaza_gateway.hl7.router import router as hl7_router
from novaza_gateway.hl7.settings import Hl7Settings
from novaza_gateway.imaging.area import ImagingArea
from novaza_gateway.imaging.mwl_scp import MwlServer
from novaza_gateway.imaging.patient_router import router as patient_router
from novaza_gateway.imaging.proxy import ImagingProxy
from novaza_gateway.imaging.qido_router import router as qido_router
from novaza_gateway.imaging.router import router as imaging_router
from novaza_gateway.imaging.settings import ImagingSettings
from novaza_gateway.imaging.stow_router import router as stow_router
from novaza_gateway.imaging.upstream import clash as imaging_upstream_clash
from novaza_gateway.imaging.wado_router import router as wado_router
from novaza_gateway.rooms.area import RoomsArea
from novaza_gateway.rooms.router import router as rooms_router
from novaza_gateway.rooms.settings import RoomsTenantSettings
from novaza_gateway.tenants.directory import TenantSettingsDirectory
from novaza_gateway.tenants.entitlements import DatabaseTenantSource
from novaza_gateway.tenants.router import router as tenants_router

ROUTERS: tuple[APIRouter, ...] = (
    health_router,
    whoami_router,
    tenants_router,
    hl7_router,
    billing_router,
    stow_router,
    qido_router,
    wado_router,
    imaging_router,
    patient_router,
    ai_router,
    rooms_router,
    desk_router,
)
# The product area each router's admitted requests are billed to (meter api_requests, by
# area). Routes may declare their own ``meter=``; identity, admin and billing's own reads are
# not billed.
METERED_AREAS: dict[int, str] = {
    id(hl7_router): "hl7",
    id(stow_router): "imaging",
    id(qido_router): "imaging",
    id(wado_router): "imaging",
    id(imaging_router): "imaging",
    id(patient_router): "patients",
    id(ai_router): "ai",
    id(desk_router): "desk",
    id(rooms_router): "rooms",
}


@dataclass
class Runtime:
    """Everything the app owns for its lifetime; closed in reverse on shutdown."""

    settings: Settings
    db: Database
    http: httpx.AsyncClient
    redis_fast: redis.Redis | None
    redis_pubsub: redis.Redis | None
    keys: KeyStore
    tenants: TenantCache
    invalidator: TenantInvalidator
    limiter: RateLimiter
    billing: BillingArea
    secrets: SecretBox
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


def build_runtime(settings: Settings) -> Runtime:
    datadir.prepare(settings.data_dir, settings.sqlalchemy_url)  # 0700, SQLite file 0600
    db = Database(create_engine(settings.sqlalchemy_url, settings.db))
    http = httpx.AsyncClient(timeout=settings.outbound_timeout_seconds, follow_redirects=False)
    redis_fast = redis_pubsub = None
    if settings.redis_url:
        timeout = settings.ratelimit.redis_timeout_seconds
        redis_fast = redis.Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        redis_pubsub = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0)
    keys = KeyStore(settings.auth, settings.data_dir, http)
    billing = BillingArea.build(settings.billing)
    billing.attach(db)
    source = DatabaseTenantSource(db, billing.entitlements)  # billing resolves entitlements
    tenants = TenantCache(source, settings.tenant_cache_ttl_seconds)
    shared = (
        RedisLimiter(
            PipelinedRedis.from_url(settings.redis_url, settings.ratelimit.redis_timeout_seconds)
        )
        if settings.redis_url
        else None
    )
    limiter = RateLimiter(shared, settings.ratelimit)
    return Runtime(
        settings=settings,
        db=db,
        http=http,
        redis_fast=redis_fast,
        redis_pubsub=redis_pubsub,
        keys=keys,
        tenants=tenants,
        invalidator=TenantInvalidator(tenants, redis_pubsub, publisher=redis_fast),
        limiter=limiter,
        billing=billing,
        secrets=secret_box(settings),
    )


def wire_core(rt: Runtime) -> None:
    """Core start-up and shutdown; areas add theirs after this, so they stop first."""

    async def close_clients() -> None:
        for client in (rt.redis_fast, rt.redis_pubsub):
            if client is not None:
                await client.aclose()
        await rt.limiter.aclose()
        await rt.http.aclose()
        await rt.db.dispose()

    rt.lifecycle.on_startup(rt.keys.refresh)
    rt.lifecycle.on_shutdown(close_clients)
    rt.lifecycle.run_in_background("jwks-refresh", rt.keys.run_refresher)
    rt.lifecycle.run_in_background("tenant-invalidation", rt.invalidator.listen)
    rt.lifecycle.run_in_background("audit-seal", AuditSealer(rt.db).run)  # ADR 0081


def wire_billing(rt: Runtime) -> None:
    """The catalogue version is checked against the database before anything is billed;
    usage is flushed every second, replayed from the spool at start, drained at shutdown;
    ended periods are closed by the scheduler."""
    billing = rt.billing
    billing.tenant_settings = TenantSettingsDirectory(rt.db, rt.secrets)  # portal return origins
    scheduler = PeriodScheduler(
        rt.db,
        billing.catalog,
        lambda: billing.entitlements.clock(),
        rt.settings.billing.close_interval_seconds,
        rt.invalidator.announce,
    )
    rt.lifecycle.on_startup(scheduler.check_catalog)
    relay = None
    if rt.redis_pubsub is not None:  # the client without the rate limiter's 25 ms timeout
        relay = UsageRelay(rt.redis_pubsub, relay_key(rt.settings.sqlalchemy_url))
    flusher = UsageFlusher(
        rt.billing.meter,
        rt.db,
        rt.settings.billing.spool_dir or rt.settings.data_dir / "billing-spool",
        rt.settings.billing.flush_interval_seconds,
        relay,
        after_flush=billing.settler,
    )
    rt.lifecycle.on_startup(flusher.replay)
    rt.lifecycle.run_in_background("billing-usage-flush", flusher.run)
    rt.lifecycle.on_shutdown(flusher.drain)
    rt.lifecycle.run_in_background("billing-close-periods", scheduler.run)


def health_registry(rt: Runtime) -> HealthRegistry:
    registry = HealthRegistry()

    async def database() -> str | None:
        async with rt.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None

    async def jwks() -> str | None:
        if not rt.keys.has_keys():
            raise RuntimeError(rt.keys.last_error or "no signing keys")
        if rt.keys.last_error:
            return f"degraded: serving cached keys ({rt.keys.last_error})"
        return None

    async def ratelimit() -> str | None:
        if rt.limiter.fallback_active:
            return f"degraded: local limiter (breaker {rt.limiter.breaker_state})"
        return f"{rt.limiter.backend} backend"

    registry.register(Probe("database", database))
    registry.register(Probe("jwks", jwks))
    registry.register(Probe("ratelimit", ratelimit, critical=False))
    if rt.redis_pubsub is not None:
        client = rt.redis_pubsub

        async def redis_ping() -> str | None:
            await client.ping()
            return None

        registry.register(Probe("redis", redis_ping, critical=False, timeout_seconds=0.5))
    return registry


def settings_sections(box: SecretBox) -> SettingsSections:
    sections = SettingsSections(box)
    sections.register("imaging", ImagingSettings, clash=imaging_upstream_clash)
    sections.register("hl7", Hl7Settings)
    sections.register("billing", BillingTenantSettings)
    sections.register("ai", AiTenantSettings)
    sections.register("desk", DeskTenantSettings)
    sections.register("rooms", RoomsTenantSettings)
    return sections


def guard_routes(app: FastAPI, routers: tuple[APIRouter, ...], gate: Gatekeeper) -> None:
    """Put each area's routes on the app, each behind a guard holding its declared policy."""
    for area in routers:
        for route in area.routes:
            if not isinstance(route, APIRoute):
                # A mount, websocket or included sub-app would bypass the guard: refuse it
                # at start-up rather than serve it unauthenticated.
                raise RuntimeError(f"{type(route).__name__} {route!r} cannot be guarded")
            described = (route.openapi_extra or {}).get(POLICY_KEY)
            if described is None:
                raise RuntimeError(f"route {route.path} declares no policy")
            declared = Policy.from_description(described)
            area_meter = METERED_AREAS.get(id(area))
            if area_meter and declared.tenant and declared.meter is None:
                declared = dataclasses.replace(declared, meter=area_meter)
            # The area's router is module state shared by every app: guard a copy.
            guarded = copy.copy(route)
            guarded.openapi_extra = {**(route.openapi_extra or {}), POLICY_KEY: declared.describe()}
            guarded.app = RouteGuard(route.app, declared, gate)
            app.router.routes.append(guarded)


def wire_mwl(rt: Runtime) -> MwlServer | None:
    """The DICOM Modality Worklist SCP, when NOVAZA_MWL_PORT is set; stopped before the
    database closes (it queries through the app's engine on the app's loop)."""
    if rt.settings.mwl.port is None:
        return None
    mwl = MwlServer(
        rt.settings.mwl,
        rt.db,
        TenantSettingsDirectory(rt.db, rt.secrets),
        rt.tenants,
        rt.settings.tenant_cache_ttl_seconds,
    )
    mwl.wire(rt.lifecycle)
    return mwl


def _watch_pool(db: Database, size: int) -> None:
    DB_POOL_SIZE.set(size)
    pool = db.engine.sync_engine.pool
    event.listen(pool, "checkout", lambda *_: DB_POOL_CHECKED_OUT.inc())
    event.listen(pool, "checkin", lambda *_: DB_POOL_CHECKED_OUT.dec())


def create_app(settings: Settings, extra_routers: tuple[APIRouter, ...] = ()) -> FastAPI:
    rt = build_runtime(settings)

    wire_core(rt)
    hl7 = Hl7Area(
        settings.hl7,
        rt.db,
        TenantSettingsDirectory(rt.db, rt.secrets),
        rt.tenants,
        usage=rt.billing.meter,
    )
    hl7.wire(rt.lifecycle)
    wire_billing(rt)
    ai = AiArea(  # after billing: the engine stops (metering its last tokens) before the drain
        settings.ai,
        rt.db,
        TenantSettingsDirectory(rt.db, rt.secrets),
        settings.tenant_cache_ttl_seconds,
        usage=rt.billing.meter,
        quota=rt.billing.quota,
        http=rt.http,  # an OpenAI-compatible upstream, when configured
    )
    ai.wire(rt.lifecycle)
    desk = DeskArea(settings.desk, rt.db, TenantSettingsDirectory(rt.db, rt.secrets), rt.http)
    desk.wire(rt.lifecycle)
    rooms = RoomsArea(
        settings.rooms,
        settings.data_dir,
        TenantSettingsDirectory(rt.db, rt.secrets),
        rt.http,
        rt.db,
    )
    rooms.wire(rt.lifecycle)
    mwl = wire_mwl(rt)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.lifecycle.start()
        try:
            yield
        finally:
            await rt.lifecycle.stop()

    app = GatewayApp(  # the front door outermost (core/frontdoor.py)
        title="Novaza Gateway",
        version=__version__,
        summary="The one front door of the Novaza clinical platform.",
        lifespan=lifespan,
        # Metrics are Prometheus (core/metrics.py). FastAPI's OpenTelemetry hooks would ask
        # on every request whether a provider is configured: ~15 us of a 100 us request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = rt
    app.state.db = rt.db
    app.state.settings = settings
    app.state.invalidator = rt.invalidator
    app.state.hl7 = hl7
    app.state.ai = ai
    app.state.desk = desk
    app.state.rooms = rooms
    app.state.imaging = imaging = ImagingArea(
        settings.imaging, settings.data_dir, usage=rt.billing.meter
    )
    app.state.billing = rt.billing
    app.state.tenant_cache = rt.tenants
    app.state.subscriptions = rt.billing.entitlements  # tenant admin -> subscription
    app.state.entitlements = rt.billing.entitlements
    app.state.settings_sections = settings_sections(rt.secrets)
    app.state.health = health_registry(rt)
    rt.lifecycle.on_drain(app.state.health.drain)  # SIGTERM: out of rotation at once
    for probe in [*hl7.probes(), *ai.probes(), *rooms.probes()]:
        app.state.health.register(probe)
    app.state.mwl = mwl
    for probe in mwl.probes() if mwl else []:
        app.state.health.register(probe)
    app.state.imaging_proxy = proxy = ImagingProxy.build(  # tenants in proxy mode
        TenantSettingsDirectory(rt.db, rt.secrets),
        rt.db,
        settings.imaging,
        settings.tenant_cache_ttl_seconds,
    )
    rt.lifecycle.on_shutdown(proxy.clients.aclose)
    app.state.health.register(proxy.probe())
    rt.lifecycle.on_shutdown(imaging.aclose)  # the archive store's pool and staging lock
    app.state.health.register(imaging.probe())
    install_handlers(app)
    gate = Gatekeeper(
        verifier=TokenVerifier(settings.auth, rt.keys),
        tenants=rt.tenants,
        limiter=rt.limiter,
        default_max_body_bytes=settings.max_body_bytes,
        usage=rt.billing.meter,
        auth_failures=AuthFailureLimit(rt.limiter, settings.auth_failures_per_minute),
    )
    gate.alt_auth["signed_url"] = imaging.authenticator  # WADO/QIDO viewer links
    guard_routes(app, ROUTERS + extra_routers, gate)
    app.router.middleware_stack = RouteIndex(app.router)  # no linear search of 60 routes
    _watch_pool(rt.db, settings.db_pool_size)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        app.openapi_schema = schema
    return app.openapi_schema
