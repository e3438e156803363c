"""The ``rooms`` section of tenant settings: the tenant's own Personeo, when it has one.

With ``baseUrl`` set the tenant is in upstream mode: rooms are also created and archived at
that Personeo API (bearer ``apiKey``, write-only). Without it the gateway is the registry.
"""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator


class RoomsTenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    base_url: AnyHttpUrl | None = Field(default=None, alias="baseUrl")  # Personeo's API root
    api_key: SecretStr | None = Field(default=None, alias="apiKey")
    personeo_url: AnyHttpUrl | None = Field(default=None, alias="personeoUrl")  # for clients

    @model_validator(mode="after")
    def _key_needs_a_base(self) -> RoomsTenantSettings:
        if self.api_key is not None and self.base_url is None:
            raise ValueError("apiKey needs baseUrl")
        if self.base_url is not None and (self.base_url.query or self.base_url.fragment):
            raise ValueError("baseUrl is an API root: no query or fragment")
        return self
