"""Structured logs: one JSON object per line, the request id on every line.

Log lines carry ids, tenant, route template, status and timings. Never bodies, raw paths,
query strings, patient data or tokens: callers pass only such fields as ``extra``.

Two rules keep what we do not write ourselves out too (docs/security.md, "No PHI in logs"):
- a logged exception shows its frames and classes, never its message: a database error's
  message embeds the value it refused, an HTTP error's the URL with its token;
- libraries that log statements, parameters, URLs, headers or DICOM datasets below WARNING
  stay at WARNING whatever the level; ``NOVAZA_LOG_SQL=true`` (unsafe for PHI) lets the
  database ones follow it.
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
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


# Libraries whose records below WARNING may carry statements with their parameters,
# URLs with tokens, headers, multipart fields or DICOM identifiers.
SQL_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg")
QUIET_LOGGERS = (
    *SQL_LOGGERS,
    *("httpx", "httpcore", "hpack", "h2", "h11", "urllib3", "botocore", "boto3", "s3transfer"),
    *("multipart", "python_multipart", "pynetdicom", "pydicom", "redis", "asyncio"),
    *("llama_cpp", "filelock", "fsspec"),
)
OWN_LOGGERS = ("novaza", "uvicorn")  # records of any other logger need WARNING to pass

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def redacted_exception(exc: BaseException) -> str:
    """A traceback as Python prints it, each exception's message withheld."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    parts: list[str] = []
    for link in reversed(chain):
        if parts:
            parts.append("\n(raised from or while handling the above)\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.StackSummary.extract(traceback.walk_tb(link.__traceback__)).format())
        cls = type(link)
        parts.append(f"{cls.__module__}.{cls.__qualname__}: <message withheld>")
    return "".join(parts)


class _Redacting(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 (logging's name)
        return redacted_exception(ei[1]) if ei[1] is not None else ""


class _OwnOrWarning(logging.Filter):
    """A backstop for libraries not in ``QUIET_LOGGERS``: below WARNING, only our lines."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__()
        self.allowed = allowed

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(self.allowed)


class JsonFormatter(_Redacting):
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


class TextFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        request_id = request_id_var.get()
        return f"{base} [req={request_id}]" if request_id else base


def configure_logging(level: str = "INFO", json: bool = True, log_sql: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(_OwnOrWarning(OWN_LOGGERS + (SQL_LOGGERS if log_sql else ())))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        quiet = not (log_sql and name in SQL_LOGGERS)
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    accesslog.use_json_lines(sys.stderr.fileno() if json else None)
    # uvicorn's access log prints raw paths and query strings (signed tokens live there).
    logging.getLogger("uvicorn.access").disabled = True
    # The lines carry none of these, and gathering them is most of the cost of a log call
    # (findCaller walks the stack): see "Optimization" in the logging HOWTO.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
