"""PostgreSQL: rows of several tables inserted by one statement, and key lists as arrays.

``INSERT INTO t (...) SELECT ... FROM unnest($1::t[])`` inserts any number of rows in one
execution (an executemany runs the statement once per row): the rows are bound as one array
of the table's row type, each a dict by column name (asyncpg encodes it as the composite;
the server checks every value against its column, lengths included). Data-modifying CTEs put
several tables' rows in one statement, so one round trip; foreign keys are checked at the
end of the statement, so children may name parents inserted by an earlier CTE of it.

Values are bound as the columns' types bind them (``TypeDecorator.process_bind_param``;
JSON serialized as SQLAlchemy does, ``none_as_null`` honoured).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    String,
    Table,
    TextClause,
    any_,
    bindparam,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.types import TypeDecorator

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
Convert = Callable[[Any], Any]


def bind_converter(column_type: Any) -> Convert | None:
    """How a column's Python value becomes what its PostgreSQL row-type array binds; None:
    as it is. (Also ``desk.bulk``'s.)"""
    if isinstance(column_type, TypeDecorator):
        decorator = column_type
        return lambda value: decorator.process_bind_param(value, _DIALECT)
    if isinstance(column_type, JSON):
        none_as_null = column_type.none_as_null
        return lambda value: None if value is None and none_as_null else json.dumps(value)
    return None


@functools.cache
def _columns(table: Table) -> tuple[tuple[str, ...], tuple[tuple[str, Convert], ...]]:
    """The table's column names, and those whose values need converting before binding."""
    names = tuple(column.key for column in table.columns)
    converted = tuple(
        (column.key, convert)
        for column in table.columns
        if (convert := bind_converter(column.type)) is not None
    )
    return names, converted


@functools.cache
def _statement(
    tables: tuple[Table, ...], returning: str | None, conflict: tuple[str, ...]
) -> TextClause:
    parts = []
    for n, table in enumerate(tables):
        names = ", ".join(f'"{name}"' for name in _columns(table)[0])
        # names from the tables' metadata, values bound: nothing of a message is in the text
        insert = (
            f'INSERT INTO "{table.name}" ({names}) '  # noqa: S608
            f'SELECT {names} FROM unnest(CAST(:t{n} AS "{table.name}"[]))'
        )
        parts.append(insert)
    if returning is not None:  # the last table's insert is the statement, with its answer
        *ctes, last = parts
        target = ", ".join(f'"{name}"' for name in conflict)
        last += f' ON CONFLICT ({target}) DO NOTHING RETURNING "{returning}"'
    else:
        ctes, last = parts, "SELECT 1"
    if ctes:
        last = "WITH " + ", ".join(f"i{n} AS ({sql})" for n, sql in enumerate(ctes)) + " " + last
    return text(last)


def insert_all(
    tables: Sequence[tuple[Table, Sequence[dict[str, Any]]]],
    returning: str | None = None,
    conflict: Sequence[str] = (),
) -> tuple[TextClause, dict[str, Any]]:
    """One statement inserting each table's rows (dicts by column key), parents first.
    ``returning``: a column of the last table, answered for the rows it inserted; a row of
    it whose unique key (the ``conflict`` columns) is taken is skipped. Each table's rows are
    bound as one array of its row type (asyncpg encodes a dict as the composite, by name):
    binding a text array per column made the driver check every element for nesting."""
    params: dict[str, Any] = {}
    for n, (table, rows) in enumerate(tables):
        converted = _columns(table)[1]
        params[f"t{n}"] = [
            {**row, **{name: convert(row[name]) for name, convert in converted}} for row in rows
        ]
    statement = _statement(tuple(table for table, _ in tables), returning, tuple(conflict))
    return statement, params


def any_of(column: ColumnElement[Any] | QueryableAttribute[Any], name: str) -> ColumnElement[bool]:
    """``column = ANY(:name)``: one array parameter, so one statement whatever the number of
    values, and a plan that probes the column's index (an IN list of a dozen parameters is
    planned as a scan of the table while the table is small)."""
    return column == any_(bindparam(name, type_=ARRAY(String())))


def in_rows(
    columns: Sequence[ColumnElement[Any] | QueryableAttribute[Any]], names: Sequence[str]
) -> ColumnElement[bool]:
    """``(c1, c2, ...) IN (SELECT * FROM unnest(:n1, :n2, ...))``: the tuple form of
    ``any_of`` (one text array per column, the i-th elements making the i-th tuple)."""
    arrays = [bindparam(name, type_=ARRAY(String())) for name in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    return tuple_(*columns).in_(select(*(rows.c[name] for name in names)))
