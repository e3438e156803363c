"""The ``imaging`` section of tenant settings: where the tenant's images live."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

AE_TITLE = r"^[ -~]{1,16}$"


class ImagingSettings(BaseModel):
    """``mode``: ``embedded`` (the gateway's archive) or ``proxy`` (DICOMweb forwarded to
    ``upstreamUrl``, the upstream's DICOMweb root, with basic auth when a username is set)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mode: Literal["embedded", "proxy"] = "embedded"
    upstream_url: AnyHttpUrl | None = Field(default=None, alias="upstreamUrl")
    upstream_username: str | None = Field(default=None, alias="upstreamUsername")
    upstream_password: SecretStr | None = Field(default=None, alias="upstreamPassword")
    ae_titles: list[str] = Field(default_factory=list, alias="aeTitles")
    station_ae_title: str | None = Field(default=None, alias="stationAeTitle", pattern=AE_TITLE)

    @model_validator(mode="after")
    def _proxy_needs_upstream(self) -> ImagingSettings:
        if self.mode == "proxy" and self.upstream_url is None:
            raise ValueError("mode 'proxy' needs upstreamUrl")
        url = self.upstream_url
        if url is not None and (url.query or url.fragment):
            raise ValueError("upstreamUrl is a DICOMweb root: no query or fragment")
        return self
