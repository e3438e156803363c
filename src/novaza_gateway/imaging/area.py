"""The imaging area's runtime, built once by ``app.py``: archive storage and URL signing."""

from __future__ import annotations

from pathlib import Path

from novaza_gateway.config import ImagingConfig
from novaza_gateway.imaging.signing import (
    SignedUrlAuthenticator,
    UrlSigner,
    dev_keys,
    parse_keys,
)
from novaza_gateway.imaging.storage import ArchiveStorage, FileSystemStorage


class ImagingArea:
    def __init__(self, config: ImagingConfig, data_dir: Path) -> None:
        self.config = config
        self.storage: ArchiveStorage = FileSystemStorage(data_dir / "imaging")
        keys = (
            parse_keys(config.signing_keys.get_secret_value())
            if config.signing_keys
            else dev_keys(data_dir)
        )
        self.signer = UrlSigner(keys)
        self.authenticator = SignedUrlAuthenticator(self.signer)
