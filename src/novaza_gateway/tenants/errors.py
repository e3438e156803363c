from __future__ import annotations

from novaza_gateway.core.errors import Conflict, NotFound


class TenantNotFound(NotFound):
    default_message = "No tenant has this slug."


class SlugTaken(Conflict):
    default_message = "A tenant with this slug exists (or existed: slugs are never reused)."


class TenantDeleted(Conflict):
    default_message = "The tenant is deleted; it can no longer change."
