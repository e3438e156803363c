"""``novaza migrate``: Alembic upgrade to head with the migrations shipped in the package."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from novaza_gateway.config import Settings
from novaza_gateway.core import datadir

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "heads") -> None:
    datadir.prepare(settings.data_dir, settings.sqlalchemy_url)  # 0700, SQLite file 0600
    config = alembic_config(settings.sqlalchemy_url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(config, revision)
        return
    raise RuntimeError("upgrade() runs its own event loop; call it from synchronous code")
