"""The imaging area's runtime, built once by ``app.py``: archive storage and URL signing."""

from __future__ import annotations

from pathlib import Path

from novaza_gateway.config import ImagingConfig
from novaza_gateway.core.metering import UsageRecorder
from novaza_gateway.imaging.signing import (
    SignedUrlAuthenticator,
    UrlSigner,
    dev_keys,
    parse_keys,
)
from novaza_gateway.imaging.storage import ArchiveStorage, FileSystemStorage

STAGING_MAX_AGE_SECONDS = 6 * 3600  # no upload in flight is older than this


class ImagingArea:
    def __init__(
        self, config: ImagingConfig, data_dir: Path, usage: UsageRecorder | None = None
    ) -> None:
        self.config = config
        self.usage = usage  # billing's recorder: stored instances (bytes served: the guard)
        storage = FileSystemStorage(data_dir / "imaging")
        storage.sweep_staging(STAGING_MAX_AGE_SECONDS)  # leftovers of a crash mid-upload
        self.storage: ArchiveStorage = storage
        keys = (
            parse_keys(config.signing_keys.get_secret_value())
            if config.signing_keys
            else dev_keys(data_dir)
        )
        self.signer = UrlSigner(keys)
        self.authenticator = SignedUrlAuthenticator(self.signer)
