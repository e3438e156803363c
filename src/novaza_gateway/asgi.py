"""ASGI entry point for uvicorn workers: ``novaza_gateway.asgi:create`` (a factory)."""

from __future__ import annotations

from fastapi import FastAPI

from novaza_gateway.app import create_app
from novaza_gateway.config import load_settings
from novaza_gateway.core.logging import configure_logging


def create() -> FastAPI:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
