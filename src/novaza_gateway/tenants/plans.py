"""What a plan grants at the gateway: request rate and burst per tenant.

The billing catalogue will own plans; until then these defaults are the one place the
gateway's limits come from, and the add-on list is the tenant's own.
"""

from __future__ import annotations

from novaza_gateway.core.tenancy import RateLimitPolicy

ADDONS = ("medical_imaging", "hl7_fhir", "emr")

PLAN_LIMITS: dict[str, RateLimitPolicy] = {
    "starter": RateLimitPolicy(rate_per_second=10.0, burst=20),
    "professional": RateLimitPolicy(rate_per_second=50.0, burst=100),
    "enterprise": RateLimitPolicy(rate_per_second=200.0, burst=400),
}
DEFAULT_PLAN = "starter"
