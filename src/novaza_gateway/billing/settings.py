"""The ``billing`` section of tenant settings."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator


class BillingTenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    portal_return_origins: list[AnyHttpUrl] = Field(
        default_factory=list,
        alias="portalReturnOrigins",
        description="Origins a customer-portal returnUrl may point to (scheme://host[:port])",
        max_length=20,
    )

    @field_validator("portal_return_origins")
    @classmethod
    def _origins_only(cls, values: list[AnyHttpUrl]) -> list[AnyHttpUrl]:
        for value in values:
            if value.path not in (None, "", "/") or value.query or value.fragment:
                raise ValueError("an origin has no path, query or fragment")
        return values
