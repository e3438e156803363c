"""Prometheus metrics and the middleware that times every request.

Labels carry the route template, never a raw path (paths hold patient and study ids). With
several worker processes ``novaza serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
import this module, and ``/metrics`` aggregates every worker's samples.
"""

from __future__ import annotations

import os
import platform
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novaza_gateway import __version__
from novaza_gateway.core.requestid import route_template

HTTP_REQUESTS = Counter(
    "novaza_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "novaza_http_request_duration_seconds",
    "Time from request start to the last response byte.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
AUTH_FAILURES = Counter(
    "novaza_auth_failures_total", "Rejected credentials, by reason.", ["reason"]
)
RATELIMIT_DECISIONS = Counter(
    "novaza_ratelimit_decisions_total",
    "Rate-limit decisions, by outcome and the backend that decided.",
    ["outcome", "backend"],
)
RATELIMIT_FALLBACKS = Counter(
    "novaza_ratelimit_fallbacks_total",
    "Decisions the local limiter took because the shared backend failed or its breaker was open.",
    ["reason"],
)
JWKS_FETCHES = Counter(
    "novaza_jwks_fetches_total", "JWKS fetches, by source and outcome.", ["source", "outcome"]
)
TENANT_CACHE = Counter("novaza_tenant_cache_total", "Tenant cache lookups, by result.", ["result"])
DB_POOL_CHECKED_OUT = Gauge(
    "novaza_db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "novaza_db_pool_size", "Configured database pool size.", multiprocess_mode="livemax"
)
BUILD_INFO = Gauge(
    "novaza_build_info",
    "Build information; the value is always 1.",
    ["version", "python"],
    multiprocess_mode="max",
)
BUILD_INFO.labels(version=__version__, python=platform.python_version()).set(1)


def render_metrics() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Children cached per label set: labels() takes a lock and builds a tuple each call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        begin = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"]
            if method not in _METHODS:  # arbitrary verbs must not mint label values
                method = "OTHER"
            self._observe(method, route_template(scope), status, begin)

    def _observe(self, method: str, route: str, status: int, begin: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
            if len(self._children) < 10_000:
                self._children[key] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - begin)
