"""Dialect-aware ``INSERT … ON CONFLICT`` and bulk inserts for SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import json.encoder
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import JSON, Column, Connection, DateTime, Integer, MetaData, Table, func, literal, select
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


def _json_encoder() -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python): the same text, slower
        return json.dumps
    try:
        # json.dumps' own settings, without the per-call set-up and circular-reference check (the
        # values come from parsed JSON and cannot be circular).
        chunks = make(None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    except TypeError:  # another signature (another Python version)
        return json.dumps
    return lambda value: "".join(chunks(value, 0))


#: ``json.dumps(value)`` with the default settings — the text SQLAlchemy's JSON type stores — at
#: about 40 % of its cost for small dicts (an import writes a change payload per trait change).
json_text: Callable[[Any], str] = _json_encoder()


_ROUND_TRIP = Table(
    "_json_round_trip",
    MetaData(),
    Column("i", Integer, primary_key=True),
    Column("v", JSON),
    prefixes=["TEMPORARY"],
)


def stored_json_values(conn: Connection, values: Sequence[Any]) -> list[Any]:
    """``values`` as they read back from a JSON column of the ops store, through a temporary table.

    Not always the values written: SQLite gives a JSON column NUMERIC affinity, so ``0.0`` or
    ``-0.0`` is stored, and read back, as the integer ``0``. A writer that computes what the row
    path would have read from the store (rather than reading it) passes its values through here.
    """
    if not values:
        return []
    _ROUND_TRIP.create(conn)
    try:
        conn.execute(_ROUND_TRIP.insert(), [{"i": i, "v": v} for i, v in enumerate(values)])
        back = dict(conn.execute(select(_ROUND_TRIP.c.i, _ROUND_TRIP.c.v)).all())
    finally:
        _ROUND_TRIP.drop(conn)
    return [back[i] for i in range(len(values))]


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


#: tzinfo objects that are UTC (``zoneinfo`` caches its zones, so ``ZoneInfo("UTC")`` is one object).
_UTC_ZONES = frozenset({None, UTC, ZoneInfo("UTC")})


def remember_sqlite_texts(values: Iterable[Any], texts: dict[Any, Any]) -> None:
    """Add :func:`sqlite_value` of each distinct value not yet in the memo ``texts``.

    Datetimes are converted in one vectorised pass (pyarrow, ~0.5 µs each); ``isoformat`` costs
    1–2.5 µs a value (a ``zoneinfo`` UTC offset lookup each). Same text either way: UTC, naive
    values as they are, six fractional digits. Only naive and UTC datetimes are remembered: two
    aware values of one zone that differ only in ``fold`` compare equal but are different
    instants, so other zones' values are left to :func:`sqlite_text`.
    """
    missing = [v for v in dict.fromkeys(values) if v not in texts]
    stamps = [v for v in missing if isinstance(v, datetime) and v.tzinfo in _UTC_ZONES]
    if stamps:
        try:
            as_utc = pa.array(stamps, type=pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
            texts.update(zip(stamps, as_utc.cast(pa.string()).to_pylist(), strict=True))
        except (pa.ArrowException, OverflowError, TypeError, ValueError):  # e.g. nanosecond values
            texts.update((v, sqlite_value(v)) for v in stamps)
    texts.update((v, sqlite_value(v)) for v in missing if not isinstance(v, datetime))


def micros_texts(micros: np.ndarray, dialect: str) -> list[str]:
    """Timestamps given as µs since the epoch (UTC), as text a raw insert of ``dialect`` takes.

    SQLite: the text :func:`sqlite_value` makes of the UTC datetime (Arrow casts a naive
    ``timestamp[us]`` to the same ``YYYY-MM-DD HH:MM:SS.ffffff``); PostgreSQL: that text with
    ``+00`` (``COPY`` parses it as a ``timestamptz``).
    """
    text = pa.array(micros, pa.timestamp("us")).cast(pa.string())
    if dialect == "postgresql":
        text = pc.binary_join_element_wise(text, "+00", "")
    return text.to_pylist()


def sqlite_text(value: Any, texts: dict[Any, Any]) -> Any:
    """:func:`sqlite_value` of ``value``, from the memo ``texts`` when it is there."""
    text_ = texts.get(value)
    return sqlite_value(value) if text_ is None else text_


def sqlite_texts(values: Iterable[Any], texts: dict[Any, Any] | None = None) -> list[Any]:
    """:func:`sqlite_value` of each value, converting each distinct datetime once.

    Rows written together share timestamps (every identity of a message, ``created_at`` of a whole
    batch): the memo ``texts`` (which a caller preparing several tables' rows may share) holds
    each distinct value's text.
    """
    values = values if isinstance(values, list) else list(values)
    texts = {} if texts is None else texts
    remember_sqlite_texts(values, texts)
    get = texts.get
    return [sqlite_value(v) if (t := get(v)) is None else t for v in values]


def bulk_insert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    prepared: bool = False,
) -> None:
    """Insert many plain rows fast: ``COPY`` on PostgreSQL, a raw ``executemany`` on SQLite.

    Skips SQLAlchemy's per-row parameter processing, which dominates large imports. Values must
    be plain (str, int, datetime, None); a JSON column takes its value serialised (``json.dumps``
    text, as SQLAlchemy's JSON type stores it). ``prepared`` says
    the rows already hold what SQLite stores (datetimes as :func:`sqlite_value` text), so they
    go to the driver as they are.
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
    stamped = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, DateTime)]
    if stamped and not prepared:
        by_column: list[Sequence[Any]] = list(zip(*rows, strict=True))
        texts: dict[Any, Any] = {}
        for i in stamped:
            by_column[i] = sqlite_texts(by_column[i], texts)
        rows = list(zip(*by_column, strict=True))
    sqlite_insert_many(conn, f"INSERT INTO {table.name} ({cols}) VALUES ", f"({marks})", len(columns), rows)


#: Rows per statement of a multi-row ``INSERT … VALUES (…), (…)`` on SQLite, and statements per
#: ``executemany`` call (bounding the flattened parameter lists held at once).
_ROWS_PER_STATEMENT = 50
_STATEMENTS_PER_CALL = 1000


def sqlite_insert_many(
    conn: Connection, head: str, one: str, width: int, rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """``executemany`` of multi-row inserts on SQLite: ~30 % less CPU than one statement execution
    a row (measured: 1M identity rows, 1.44 s → 1.0 s), the per-execution overhead being shared by
    50 rows. Each statement is ``head``, ``one`` (the placeholders of a row, ``width`` of them)
    repeated, then ``tail`` (e.g. an ``ON CONFLICT`` clause)."""
    per = min(_ROWS_PER_STATEMENT, 32_000 // width)  # SQLite allows 32,766 parameters a statement
    full = len(rows) // per * per
    if full:
        sql = head + ", ".join([one] * per) + tail
        step = per * width
        block = per * _STATEMENTS_PER_CALL
        for start in range(0, full, block):
            flat = list(itertools.chain.from_iterable(rows[start : min(start + block, full)]))
            conn.exec_driver_sql(sql, [tuple(flat[i : i + step]) for i in range(0, len(flat), step)])
    if full < len(rows):
        conn.exec_driver_sql(head + one + tail, [tuple(r) for r in rows[full:]])


#: Below this many rows an insert never drops indexes (the rebuild's fixed costs would dominate).
BULK_LOAD_MIN_ROWS = 50_000


def dominates(conn: Connection, table: Table, n_rows: int) -> bool:
    """Whether inserting ``n_rows`` at least doubles ``table`` (counting at most ``n_rows`` rows).

    Then building its secondary indexes afterwards, in one sorted pass each, is cheaper than
    updating them row by row at random places.
    """
    if n_rows < BULK_LOAD_MIN_ROWS:
        return False
    bounded = select(func.count()).select_from(select(literal(1)).select_from(table).limit(n_rows).subquery())
    return int(conn.execute(bounded).scalar_one()) < n_rows


def bulk_load(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    prepared: bool = False,
) -> None:
    """:func:`bulk_insert`, dropping ``table``'s secondary indexes first when the rows dominate it.

    On SQLite only: the writer already holds the database's only write lock and readers keep their
    snapshot (with the indexes) until the commit, so nobody sees the table without them. On
    PostgreSQL ``DROP INDEX`` would lock the table against every reader until the commit.
    The indexes are rebuilt in the same transaction, so a rollback restores them too.
    """
    rebuild = conn.dialect.name == "sqlite" and bool(table.indexes) and dominates(conn, table, len(rows))
    if rebuild:
        for index in table.indexes:
            index.drop(conn)
    bulk_insert(conn, table, columns, rows, prepared=prepared)
    if rebuild:
        for index in table.indexes:
            index.create(conn)
