"""What a database error means for the caller: the store is unavailable (retry later, the data
is not at fault), the statement's data was refused (this input will fail again), or neither.

Pure: looks at the exception's type, SQLSTATE (PostgreSQL) or SQLite result code, through
SQLAlchemy's wrapper and the driver's own exception. asyncpg surfaces a dropped connection
(``ConnectionDoesNotExistError``, SQLSTATE 08003) and a terminated backend (57P01) as a plain
``DBAPIError``, not an ``OperationalError``: the class alone does not tell.
"""

from __future__ import annotations

import enum
import sqlite3

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
