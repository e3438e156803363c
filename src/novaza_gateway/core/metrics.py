"""Prometheus metrics and the middleware that times every request.

Labels carry the route template, never a raw path (paths hold patient and study ids). With
several worker processes ``novaza serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
import this module, and ``/metrics`` aggregates every worker's samples.
"""

from __future__ import annotations

import asyncio
import os
import platform
from bisect import bisect_left

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

from novaza_gateway import __version__

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
HTTP_EDGE_REFUSALS = Counter(
    "novaza_http_edge_refusals_total",
    "Connections the HTTP server answered itself and closed (core.httpserver), by reason.",
    ["reason"],
)
TENANT_OVERRIDES = Counter(
    "novaza_tenant_overrides_total",
    "Requests acting for another tenant through X-Tenant-ID (tenant:override), by caller.",
    ["caller"],
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


class Tally:
    """Hot-path counts applied to Prometheus once per event-loop turn.

    prometheus_client takes a lock and walks its bucket list on every increment, ~1 us each
    and five per authenticated request. Here an increment is a dict update; the first one of
    a loop turn schedules one pass that applies them all (as the access log writes its
    lines), and ``/metrics`` applies what is pending before it renders. With several worker
    processes a scrape may miss the last loop turn of another worker.
    """

    def __init__(self) -> None:
        self._counts: dict[Counter, float] = {}
        self._buckets: dict[tuple[Histogram, int], int] = {}
        self._sums: dict[Histogram, float] = {}

    def inc(self, child: Counter, amount: float = 1.0) -> None:
        idle = not self._counts and not self._sums
        self._counts[child] = self._counts.get(child, 0.0) + amount
        if idle:
            self._schedule()

    def observe(self, child: Histogram, value: float) -> None:
        """``Histogram.observe`` by its own rule: the first bucket whose bound >= value."""
        idle = not self._counts and not self._sums
        self._sums[child] = self._sums.get(child, 0.0) + value
        key = (child, bisect_left(child._upper_bounds, value))
        self._buckets[key] = self._buckets.get(key, 0) + 1
        if idle:
            self._schedule()

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        buckets, self._buckets = self._buckets, {}
        sums, self._sums = self._sums, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for (histogram, index), n in buckets.items():
            histogram._buckets[index].inc(n)
        for histogram, total in sums.items():
            histogram._sum.inc(total)

    def _schedule(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop (a CLI command): nothing batches, apply at once
            self.flush()


TALLY = Tally()


def render_metrics() -> tuple[bytes, str]:
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Request count and latency by method, route template and status."""

    def __init__(self) -> None:
        # Children cached per label set: labels() takes a lock and builds a tuple each call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:  # arbitrary verbs must not mint label values
            method = "OTHER"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
            if len(self._children) < 10_000:
                self._children[key] = children
        TALLY.inc(children[0])
        TALLY.observe(children[1], seconds)
