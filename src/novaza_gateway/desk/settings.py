"""The ``desk`` section of tenant settings: where the tenant's Desk is, when it has one.

Without ``baseUrl`` the gateway is the tenant's Desk directory (embedded mode). With it,
contacts are also pushed to that Desk (upstream mode), authenticated with ``apiKey``, which
is write-only: stored, never returned by ``GET /admin/tenants/{slug}``.
"""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

SECTION = "desk"


class DeskTenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    base_url: AnyHttpUrl | None = Field(default=None, alias="baseUrl")
    api_key: SecretStr | None = Field(default=None, alias="apiKey")

    @model_validator(mode="after")
    def _plain_base(self) -> DeskTenantSettings:
        url = self.base_url
        if url is not None and (url.query or url.fragment):
            raise ValueError("baseUrl is the Desk API root: no query or fragment")
        return self
