"""The ``imaging`` section of tenant settings: where the tenant's images live."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

AE_TITLE = r"^[ -~]{1,16}$"


class ImagingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mode: Literal["embedded", "proxy"] = "embedded"
    upstream_url: AnyHttpUrl | None = Field(default=None, alias="upstreamUrl")
    upstream_username: str | None = Field(default=None, alias="upstreamUsername")
    upstream_password: SecretStr | None = Field(default=None, alias="upstreamPassword")
    ae_titles: list[str] = Field(default_factory=list, alias="aeTitles")
    station_ae_title: str | None = Field(default=None, alias="stationAeTitle", pattern=AE_TITLE)
