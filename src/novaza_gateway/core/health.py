"""Liveness, readiness and the metrics endpoint.

Readiness runs every registered check concurrently, each under its own timeout. A critical
check failing makes the answer 503; a degraded one (Redis down while the local rate limiter
stands in) is shown but keeps the replica in rotation, since failing every replica at once
for a cache outage would turn a degradation into a full outage. From SIGTERM on, readiness
answers 503 ``draining`` without running the checks: the replica leaves rotation while it
still serves what it was given (ADR 0066).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from novaza_gateway.core.metrics import render_metrics
from novaza_gateway.core.policy import policy
from novaza_gateway.core.stateroute import StateRoute

Check = Callable[[], Awaitable[str | None]]
"""A probe: raises when the dependency fails; may return a note (e.g. 'degraded: ...')."""


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    check: Check
    critical: bool = True
    timeout_seconds: float = 2.0


class HealthRegistry:
    def __init__(self) -> None:
        self._probes: list[Probe] = []
        self.draining = False

    def drain(self, ends_in: float = 0.0) -> None:
        """A ``Lifecycle`` drain step: from now on, not ready."""
        self.draining = True

    def register(self, probe: Probe) -> None:
        self._probes.append(probe)

    async def run(self) -> tuple[bool, dict[str, Any]]:
        results = await asyncio.gather(*(self._run_one(p) for p in self._probes))
        checks = {p.name: r for p, r in zip(self._probes, results, strict=True)}
        ready = all(
            r["status"] != "fail" for p, r in zip(self._probes, results, strict=True) if p.critical
        )
        return ready, checks

    @staticmethod
    async def _run_one(probe: Probe) -> dict[str, Any]:
        begin = time.perf_counter()
        try:
            note = await asyncio.wait_for(probe.check(), probe.timeout_seconds)
        except TimeoutError:
            status, note = "fail", f"timed out after {probe.timeout_seconds}s"
        except Exception as exc:
            status, note = "fail", type(exc).__name__
        else:
            status = "degraded" if note and note.startswith("degraded") else "ok"
        result: dict[str, Any] = {
            "status": status if probe.critical or status == "ok" else "degraded",
            "critical": probe.critical,
            "latencyMs": round((time.perf_counter() - begin) * 1000, 2),
        }
        if note:
            result["detail"] = note
        return result


router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


_ALIVE = Liveness()


async def health(request: Request) -> Liveness:
    return _ALIVE


router.add_api_route(
    "/health",
    health,
    methods=["GET"],
    **policy(public=True),
    summary="Liveness: the process answers",
    route_class_override=StateRoute,  # probed every few seconds by every balancer
)


@router.get(
    "/health/ready",
    **policy(
        public=True,
        responses={503: {"description": "A critical dependency failed, or shutting down"}},
    ),
    summary="Readiness: database, Redis, JWKS and registered downstreams",
)
async def ready(request: Request) -> JSONResponse:
    registry: HealthRegistry = request.app.state.health
    if registry.draining:
        return JSONResponse({"status": "draining", "checks": {}}, status_code=503)
    is_ready, checks = await registry.run()
    degraded = any(c["status"] != "ok" for c in checks.values())
    status = "ok" if is_ready and not degraded else ("degraded" if is_ready else "fail")
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if is_ready else 503)


@router.get("/metrics", **policy(public=True), summary="Prometheus metrics (text format)")
async def metrics() -> Response:
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
