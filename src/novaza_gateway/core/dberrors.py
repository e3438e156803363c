"""What a database error means for the caller: the store is unavailable (retry later, the data
is not at fault), the statement's data was refused (this input will fail again), or neither.

Pure: looks at the exception's type, SQLSTATE (PostgreSQL) or SQLite result code, through
SQLAlchemy's wrapper and the driver's own exception. asyncpg surfaces a dropped connection
(``ConnectionDoesNotExistError``, SQLSTATE 08003) and a terminated backend (57P01) as a plain
``DBAPIError``, not an ``OperationalError``: the class alone does not tell.
"""

from __future__ import annotations

import enum
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import exc as sa

# PostgreSQL SQLSTATE classes and codes (Appendix A of the PostgreSQL manual).
_UNAVAILABLE_CLASSES = frozenset(
    {
        "08",  # connection exception (08003: connection does not exist)
        "40",  # transaction rollback: serialization failure, deadlock (try again)
        "53",  # insufficient resources: disk full, out of memory, too many connections
        "57",  # operator intervention: 57014 statement timeout, 57P01 backend terminated
        "58",  # system error: I/O
    }
)
_UNAVAILABLE_CODES = frozenset({"55P03", "55006"})  # lock not available, object in use
_DATA_CLASSES = frozenset(
    {
        "22",  # data exception: too long, bad encoding (NUL), out of range, invalid datetime
        "23",  # integrity constraint violation
        "54",  # program limit exceeded: an index row too large for a value
    }
)
_UNIQUE = "23505"
# SQLite extended result codes (sqlite3 exceptions carry them since Python 3.11).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 13, 14})  # BUSY LOCKED IOERR FULL CANTOPEN (primary)
_SQLITE_UNIQUE = frozenset({1555, 2067})  # CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE


class Fault(enum.Enum):
    UNAVAILABLE = "unavailable"  # the store could not answer: the same request may succeed later
    DATA = "data"  # the store refused this statement's values: the same input fails again
    OTHER = "other"  # neither is known (a bug in a statement, an unexpected driver error)


def fault(exc: BaseException) -> Fault:
    """Classify a database exception (SQLAlchemy's, or a driver's own)."""
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return Fault.UNAVAILABLE
    if isinstance(exc, sa.TimeoutError | OSError):
        return Fault.UNAVAILABLE  # a pool checkout that timed out, a socket that broke
    for cause in _causes(exc):
        found = _by_code(cause)
        if found is not None:
            return found
    if isinstance(exc, sa.DBAPIError):
        if isinstance(exc.orig, OSError):
            return Fault.UNAVAILABLE
        if isinstance(exc, sa.OperationalError):
            return Fault.UNAVAILABLE
        if isinstance(exc, sa.IntegrityError | sa.DataError):
            return Fault.DATA
    return Fault.OTHER


def unavailable(exc: BaseException) -> bool:
    return fault(exc) is Fault.UNAVAILABLE


def unique_violation(exc: BaseException) -> bool:
    """A unique key another row holds (PostgreSQL 23505, SQLite's UNIQUE/PRIMARY KEY)."""
    for cause in _causes(exc):
        if getattr(cause, "sqlstate", None) == _UNIQUE:
            return True
        if isinstance(cause, sqlite3.Error) and cause.sqlite_errorcode in _SQLITE_UNIQUE:
            return True
    return False


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, the driver's exception SQLAlchemy wraps, and what that one wraps."""
    chain: list[BaseException] = [exc]
    orig = exc.orig if isinstance(exc, sa.DBAPIError) else None
    if isinstance(orig, BaseException):
        chain.append(orig)
        if orig.__cause__ is not None:
            chain.append(orig.__cause__)
    return chain


def _by_code(cause: BaseException) -> Fault | None:
    sqlstate = getattr(cause, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate[:2] in _UNAVAILABLE_CLASSES or sqlstate in _UNAVAILABLE_CODES:
            return Fault.UNAVAILABLE
        if sqlstate[:2] in _DATA_CLASSES:
            return Fault.DATA
        return Fault.OTHER
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE:
            return Fault.UNAVAILABLE
        if isinstance(cause, sqlite3.OperationalError):
            return Fault.UNAVAILABLE
        if isinstance(cause, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.InterfaceError):
            return Fault.DATA
        return Fault.OTHER
    if _is_asyncpg_data_error(cause):
        return Fault.DATA
    return None


def _is_asyncpg_data_error(cause: BaseException) -> bool:
    """asyncpg's client-side ``DataError``: a value it could not encode for the server
    (matched by module and name: core does not import the driver)."""
    kind = type(cause)
    return kind.__name__ == "DataError" and kind.__module__.startswith("asyncpg")


# ----------------------------------------------------------------------------- answers
# ``classify`` serves core/errors.py: which answer (503 with a reason and Retry-After, or 422
# INVALID_INPUT), finer than ``fault``. Unlike ``fault`` it leaves integrity violations to be
# 500s (services handle the races they expect) and a value of a Python type the column does
# not take (asyncpg's DataError from a TypeError) too: that is our bug, not the caller's input.
# ``log_fields`` is what a log line may say about a database exception (ADR 0069): messages
# are never used, asyncpg puts the refused value into its own ("invalid input for query
# argument $1: 'Doe^Jane'"), PostgreSQL key values into constraint details.

Kind = Literal["unavailable", "invalid_input"]


@dataclass(frozen=True, slots=True)
class DbFault:
    kind: Kind
    reason: str  # details.reason of the answer: stable, documented in docs/errors.md
    retry_after_seconds: int = 0


CONNECTION_LOST = DbFault("unavailable", "connection_lost", 2)
TIMEOUT = DbFault("unavailable", "timeout", 2)
POOL_EXHAUSTED = DbFault("unavailable", "pool_exhausted", 1)
TOO_MANY_CONNECTIONS = DbFault("unavailable", "too_many_connections", 2)
RETRY_TRANSACTION = DbFault("unavailable", "transaction_conflict", 1)
UNAVAILABLE = DbFault("unavailable", "unavailable", 2)
TOO_LONG = DbFault("invalid_input", "too_long")
OUT_OF_RANGE = DbFault("invalid_input", "out_of_range")
INVALID_CHARACTERS = DbFault("invalid_input", "invalid_characters")
INVALID_VALUE = DbFault("invalid_input", "invalid_value")

# SQLSTATE (PostgreSQL appendix A) -> fault; the first match, exact code before class.
_SQLSTATES: dict[str, DbFault] = {
    "57014": TIMEOUT,  # query_canceled: statement_timeout (or a cancel request)
    "55P03": TIMEOUT,  # lock_not_available
    "25P03": TIMEOUT,  # idle_in_transaction_session_timeout
    "53300": TOO_MANY_CONNECTIONS,
    "40001": RETRY_TRANSACTION,  # serialization_failure
    "40P01": RETRY_TRANSACTION,  # deadlock_detected
    "22001": TOO_LONG,  # string_data_right_truncation
    "22003": OUT_OF_RANGE,  # numeric_value_out_of_range
    "22008": OUT_OF_RANGE,  # datetime_field_overflow
    "22021": INVALID_CHARACTERS,  # character_not_in_repertoire: NUL in text
    "22P05": INVALID_CHARACTERS,  # untranslatable_character: \u0000 in jsonb
    "08": CONNECTION_LOST,  # connection_exception (08003: connection does not exist)
    "57": CONNECTION_LOST,  # operator_intervention: admin_shutdown (pg_terminate_backend)
    "53": UNAVAILABLE,  # insufficient_resources: disk full, out of memory
    "58": UNAVAILABLE,  # system_error: I/O error
    "22": INVALID_VALUE,  # data_exception: invalid text representation, datetime format...
}
_SQLITE: dict[str, DbFault] = {
    "SQLITE_BUSY": TIMEOUT,  # the busy timeout passed with another writer holding the lock
    "SQLITE_LOCKED": TIMEOUT,
    "SQLITE_FULL": UNAVAILABLE,
    "SQLITE_IOERR": UNAVAILABLE,
    "SQLITE_CANTOPEN": UNAVAILABLE,
    "SQLITE_TOOBIG": TOO_LONG,
}


def classify(exc: BaseException) -> DbFault | None:
    """The fault ``exc`` stands for, or None when it is no database fault (a bug: 500).

    The driver's exception decides first (innermost cause), the wrappers after it. Only
    ``__cause__`` links count: an error raised while handling a timeout is not a timeout."""
    causes = _cause_chain(exc)
    for link in reversed(causes):
        fault = _fault_of(link, causes)
        if fault is not None:
            return fault
    return None


def _fault_of(exc: BaseException, causes: list[BaseException]) -> DbFault | None:
    if isinstance(exc, sa.TimeoutError):
        return POOL_EXHAUSTED
    if isinstance(exc, TimeoutError):  # asyncpg's command_timeout, a connect timeout
        return TIMEOUT
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate == "22000":  # asyncpg refused an argument before sending it
            inner = causes[-1]
            if isinstance(inner, OverflowError):
                return OUT_OF_RANGE
            return None  # a Python type the column does not take: our bug, not the input
        return _SQLSTATES.get(sqlstate) or _SQLSTATES.get(sqlstate[:2])
    sqlite_error = getattr(exc, "sqlite_errorname", None)
    if isinstance(sqlite_error, str):
        return _SQLITE.get(sqlite_error)
    if isinstance(exc, (ConnectionError, sa.DisconnectionError)):
        return CONNECTION_LOST
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return CONNECTION_LOST
    if isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
        return UNAVAILABLE
    return None


def _cause_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its ``__cause__`` links, outermost first."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        chain.append(link)
        link = link.__cause__
    return chain


# ----------------------------------------------------------------------------- logging

_QUOTED = re.compile(r"'(?:[^']|'')*'|\$\$.*?\$\$", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w$:])-?\d+(?:\.\d+)?\b")
_SPACE = re.compile(r"\s+")
MAX_SHAPE = 240


def statement_shape(sql: str | None) -> str | None:
    """The statement with literals replaced by ``?``, one line, cut at ``MAX_SHAPE``.

    Bound parameters are placeholders already ($1, ?); literals are what a hand-written
    statement could have inlined."""
    if not sql:
        return None
    shape = _SPACE.sub(" ", _NUMBER.sub("?", _QUOTED.sub("?", sql))).strip()
    return shape if len(shape) <= MAX_SHAPE else shape[: MAX_SHAPE - 1] + "…"


def log_fields(exc: BaseException) -> dict[str, Any]:
    """What a log line may say about a database exception: classes, SQLSTATE, shape."""
    fields: dict[str, Any] = {"error": type(exc).__name__}
    chain = _cause_chain(exc)
    if len(chain) > 1:
        fields["cause"] = type(chain[-1]).__name__  # the driver's own class
    sqlstate = next(
        (s for s in (getattr(link, "sqlstate", None) for link in chain) if isinstance(s, str)),
        None,
    )
    if sqlstate:
        fields["sqlstate"] = sqlstate
    statement = next(
        (link.statement for link in chain if isinstance(link, sa.StatementError)), None
    )
    shape = statement_shape(statement)
    if shape:
        fields["statement"] = shape
    return fields
