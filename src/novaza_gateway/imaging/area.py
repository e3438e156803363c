"""The imaging area's runtime, built once by ``app.py``: the archive store and URL signing."""

from __future__ import annotations

from pathlib import Path

from novaza_gateway.config import ImagingConfig
from novaza_gateway.core.health import Probe
from novaza_gateway.core.metering import UsageRecorder
from novaza_gateway.imaging.archive.location import open_archive
from novaza_gateway.imaging.archive.storage import ArchiveStorage
from novaza_gateway.imaging.signing import (
    SignedUrlAuthenticator,
    UrlSigner,
    dev_keys,
    parse_keys,
)

STAGING_MAX_AGE_SECONDS = 6 * 3600  # no upload in flight is older than this


class ImagingArea:
    def __init__(
        self, config: ImagingConfig, data_dir: Path, usage: UsageRecorder | None = None
    ) -> None:
        self.config = config
        self.usage = usage  # billing's recorder: stored instances (bytes served: the guard)
        self.storage: ArchiveStorage = open_archive(config.archive, data_dir)
        self.storage.sweep_staging(STAGING_MAX_AGE_SECONDS)  # leftovers of ended processes
        keys = (
            parse_keys(config.signing_keys.get_secret_value())
            if config.signing_keys
            else dev_keys(data_dir)
        )
        self.signer = UrlSigner(keys)
        self.authenticator = SignedUrlAuthenticator(self.signer)

    def probe(self) -> Probe:
        """The archive store answers (not critical: the other areas serve without it)."""
        return Probe(f"imaging-archive-{self.storage.kind}", self.storage.check, critical=False)

    async def aclose(self) -> None:
        await self.storage.aclose()
