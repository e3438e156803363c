"""``GET /api/v1/whoami``: what the gateway makes of the caller's token and tenant.

Answers from the token and the tenant cache alone (no database round trip), so it is also
the reference route for the gateway's own overhead in ``benchmarks/``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from novaza_gateway.core.auth import Principal
from novaza_gateway.core.policy import policy
from novaza_gateway.core.schemas import ApiResponse
from novaza_gateway.core.stateroute import StateRoute
from novaza_gateway.core.tenancy import TenantContext

# StateRoute: the guard resolved everything this answer needs; skip FastAPI's per-request work.
router = APIRouter(prefix="/api/v1", tags=["identity"], route_class=StateRoute)


class RateLimitOut(ApiResponse):
    rate_per_second: float
    burst: int


class WhoAmI(ApiResponse):
    subject: str
    scopes: list[str]
    tenant: str
    tenant_id: str
    plan: str
    addons: list[str]
    rate_limit: RateLimitOut


@router.get(
    "/whoami", response_model=WhoAmI, **policy(), summary="The caller as the gateway sees it"
)
async def whoami(request: Request) -> dict[str, Any]:
    # WhoAmI's wire form built directly (a test holds the two together): every value comes
    # typed from the token and tenant caches, and building the model cost ~6 us, more than
    # the guard's whole decision.
    state = request.scope["state"]
    principal: Principal = state["principal"]
    tenant: TenantContext = state["tenant"]
    limit = tenant.rate_limit
    return {
        "subject": principal.subject,
        "scopes": sorted(principal.scopes),
        "tenant": tenant.slug,
        "tenantId": tenant.id,
        "plan": tenant.plan,
        "addons": sorted(tenant.addons),
        "rateLimit": {"ratePerSecond": float(limit.rate_per_second), "burst": limit.burst},
    }
