"""Structured logs: one JSON object per line, the request id on every line.

Log lines carry ids, tenant, route template, status and timings. Never bodies, raw paths,
query strings, patient data or tokens: callers pass only such fields as ``extra``.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from novaza_gateway.core import accesslog

request_id_var: ContextVar[str | None] = ContextVar("novaza_request_id", default=None)
# The caller's own X-Request-Id, when it sent a valid one: kept beside the gateway's id (which
# the caller cannot choose, so audit rows and log lines cannot be forged to collide).
caller_request_id_var: ContextVar[str | None] = ContextVar("novaza_caller_request_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of msg
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["requestId"] = request_id
        caller_id = caller_request_id_var.get()
        if caller_id:
            entry["callerRequestId"] = caller_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        request_id = request_id_var.get()
        return f"{base} [req={request_id}]" if request_id else base


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    accesslog.use_json_lines(sys.stderr.fileno() if json else None)
    # uvicorn's access log prints raw paths and query strings (signed tokens live there).
    logging.getLogger("uvicorn.access").disabled = True
    # The lines carry none of these, and gathering them is most of the cost of a log call
    # (findCaller walks the stack): see "Optimization" in the logging HOWTO.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
