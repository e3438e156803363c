"""ASGI entry point for uvicorn workers: ``novaza_gateway.asgi:create`` (a factory).

Used by ``novaza serve`` only, so what belongs to a served process is wired here: SIGTERM
drains (ADR 0066), and a worker of ``--workers N`` dies with its supervisor (ADR 0067).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from novaza_gateway.app import create_app
from novaza_gateway.config import load_settings
from novaza_gateway.core import workers
from novaza_gateway.core.lifecycle import Lifecycle, drain_on_sigterm
from novaza_gateway.core.logging import configure_logging


def create() -> FastAPI:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json, settings.log_sql)
    supervisor = workers.supervisor_pid()
    if supervisor is not None:
        workers.die_with_parent(supervisor)
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:  # the worker this one replaces, if any, is gone
            workers.forget_dead_workers(Path(metrics_dir))
    app = create_app(settings)
    lifecycle: Lifecycle = app.state.runtime.lifecycle
    shutdown = settings.shutdown
    drain_on_sigterm(lifecycle, shutdown.drain_delay_seconds, shutdown.grace_seconds)
    return app
