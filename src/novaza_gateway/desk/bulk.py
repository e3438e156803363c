"""Many rows in one statement: INSERT and versioned UPDATE of a table's rows.

On PostgreSQL the rows are bound as one array of the table's row type and unnested by the
server (as ``clinical.unnest`` inserts): one statement and one round trip for 1,000 rows.
SQLite (in-process, no round trips) takes an executemany.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, TextClause, bindparam, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical.unnest import bind_converter

Row = dict[str, Any]


@functools.cache
def _converters(table: Table) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    return tuple(
        (column.key, convert)
        for column in table.columns
        if (convert := bind_converter(column.type)) is not None
    )


def _bound(table: Table, rows: Sequence[Row]) -> list[Row]:
    converters = _converters(table)
    return [{**row, **{name: convert(row[name]) for name, convert in converters}} for row in rows]


def _names(table: Table) -> str:
    return ", ".join(f'"{column.key}"' for column in table.columns)


@functools.cache
def _pg_insert(table: Table, conflict: tuple[str, ...]) -> TextClause:
    names = _names(table)
    sql = f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM unnest(CAST(:rows AS "{table.name}"[]))'  # noqa: E501, S608
    if conflict:
        target = ", ".join(f'"{name}"' for name in conflict)
        sql += f' ON CONFLICT ({target}) DO NOTHING RETURNING "id"'
    return text(sql)


@functools.cache
def _pg_update(table: Table, keys: tuple[str, ...]) -> TextClause:
    assignments = ", ".join(
        f'"{column.key}" = n."{column.key}"' for column in table.columns if column.key not in keys
    )
    matches = " AND ".join(f't."{key}" = n."{key}"' for key in keys)
    return text(
        f'UPDATE "{table.name}" AS t SET {assignments} '  # noqa: S608
        f'FROM unnest(CAST(:rows AS "{table.name}"[])) AS n '
        f'WHERE {matches} AND t."version" = n."version" - 1'
    )


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[Row], conflict: tuple[str, ...] = ()
) -> int:
    """Insert ``rows`` (complete, by column key); answers how many went in. With ``conflict``
    (a unique key), a row whose key is taken is skipped, not an error (PostgreSQL)."""
    if not rows:
        return 0
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        result = await connection.execute(
            _pg_insert(table, conflict), {"rows": _bound(table, rows)}
        )
        return len(result.all()) if conflict else len(rows)
    await connection.execute(insert(table), list(rows))  # SQLite: a taken key raises
    return len(rows)


async def update_versioned(
    session: AsyncSession, table: Table, rows: Sequence[Row], keys: tuple[str, ...]
) -> int:
    """Replace the rows matched by ``keys`` whose stored version is the row's ``version`` - 1
    (optimistic concurrency); answers how many were replaced."""
    if not rows:
        return 0
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        result = await connection.execute(_pg_update(table, keys), {"rows": _bound(table, rows)})
        return int(result.rowcount)
    statement = (
        update(table)
        .where(*(table.c[key] == bindparam(f"k_{key}") for key in keys))
        .where(table.c.version == bindparam("k_previous"))
        .values({c.key: bindparam(f"v_{c.key}") for c in table.columns if c.key not in keys})
    )
    params = [
        {
            **{f"k_{key}": row[key] for key in keys},
            "k_previous": row["version"] - 1,
            **{f"v_{name}": value for name, value in row.items() if name not in keys},
        }
        for row in rows
    ]
    result = await connection.execute(statement, params)
    return int(result.rowcount)
