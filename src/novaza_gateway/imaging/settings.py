"""The ``imaging`` section of tenant settings: where the tenant's images live."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

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
    # Modality worklist (MWL SCP): calling AE titles above name this tenant; DICOM dates and
    # times, which carry no offset, are read and written in this IANA time zone.
    time_zone: str = Field(default="UTC", alias="timeZone", max_length=64)

    @field_validator("ae_titles")
    @classmethod
    def _ae_titles(cls, titles: list[str]) -> list[str]:
        for title in titles:
            if not re.fullmatch(AE_TITLE, title) or not title.strip():
                raise ValueError(f"'{title[:20]}' is not an AE title (1-16 printable characters)")
        return [title.strip() for title in titles]

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{name}' is not an IANA time zone") from None
        return name

    @model_validator(mode="after")
    def _proxy_needs_upstream(self) -> ImagingSettings:
        if self.mode == "proxy" and self.upstream_url is None:
            raise ValueError("mode 'proxy' needs upstreamUrl")
        url = self.upstream_url
        if url is not None and (url.query or url.fragment):
            raise ValueError("upstreamUrl is a DICOMweb root: no query or fragment")
        return self
