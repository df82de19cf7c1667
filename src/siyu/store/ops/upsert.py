"""Dialect-aware ``INSERT … ON CONFLICT`` for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str], update: Sequence[str]
) -> None:
    """Insert ``rows``, or update the ``update`` columns of rows whose ``keys`` exist."""
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: getattr(stmt.excluded, c) for c in update})
    conn.execute(stmt, list(rows))


def sqlite_value(value: Any) -> Any:
    """A value as SQLAlchemy's SQLite types store it (datetimes as UTC text), for raw statements."""
    if isinstance(value, datetime):
        tz = value.tzinfo
        if tz is not None and not tz.utcoffset(value):  # UTC (any tzinfo object): drop the "+00:00"
            return value.isoformat(" ", "microseconds")[:26]
        if tz is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")  # same text as strftime("%Y-%m-%d %H:%M:%S.%f"), faster
    return value


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert many plain rows fast: ``COPY`` on PostgreSQL, a raw ``executemany`` on SQLite.

    Skips SQLAlchemy's per-row parameter processing, which dominates large imports. Values must
    be plain (str, int, datetime, None); JSON columns are not supported here.
    """
    if not rows:
        return
    cols = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    by_column = list(zip(*rows, strict=True))
    for i, name in enumerate(columns):
        if isinstance(table.c[name].type, DateTime):
            by_column[i] = tuple(map(sqlite_value, by_column[i]))
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", list(zip(*by_column, strict=True)))
