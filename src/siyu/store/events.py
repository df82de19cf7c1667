"""The event store: an append-only DuckDB file of events and order versions.

Tables are laid out as plain columns (no DuckDB-only types besides JSON text and a list of
structs for order items) so that the same queries can later point at a Parquet lake read by Spark.

* ``events`` — one row per message or state change; ``person_id`` is the person at write time;
  ``identity_set`` names the identities the message came with (NULL for a state change).
* ``identity_sets`` — each distinct set of identities once: the original identity (the set's
  highest-priority one) and the whole set as JSON; ``events_with_identities`` joins them back.
* ``orders`` — one row per *version* of an order; ``orders_current`` shows the latest.
* ``person_aliases`` — persons merged into another (``alias_id`` → ``person_id``), kept flat.
* ``events_resolved`` — ``events`` with ``person_id`` mapped to the surviving person.
* ``store_meta`` — watermarks (e.g. the last ops-store change applied).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from siyu.store.state import (
    SETTLE_ROWS,
    STATE_DDL,
    drop_state,
    final_survivors,
    fold_event_table,
    has_pending_seen,
    rebuild_state,
    settle_seen,
)

#: 2: the identities of an event live in ``identity_sets`` (stores at 1 are migrated on open).
SCHEMA_VERSION = 2
#: Bumped when the person-state fold changes meaning: stores at another version are refolded on open.
STATE_VERSION = "2"
STATE_VERSION_KEY = "state_version"

#: The columns of the ``events`` table.
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "person_id",
    "identity_set",
    "message_type",
    "name",
    "ts",
    "properties",
    "source",
    "received_at",
)

ITEM_TYPE = pa.struct(
    [
        ("sku", pa.string()),
        ("category", pa.string()),
        ("quantity", pa.int32()),
        ("price_fen", pa.int64()),
    ]
)

#: What writers hand to :meth:`EventStore.append_events`: each event with its identities, which
#: the store keeps once per distinct set (``identity_sets``).
EVENTS_ARROW = pa.schema(
    [
        ("event_id", pa.string()),
        ("person_id", pa.string()),
        ("identity_type", pa.string()),
        ("identity_value", pa.string()),
        ("identities", pa.string()),
        ("message_type", pa.string()),
        ("name", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("properties", pa.string()),
        ("source", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)

ORDERS_ARROW = pa.schema(
    [
        ("order_id", pa.string()),
        ("version", pa.int32()),
        ("person_id", pa.string()),
        ("status", pa.string()),
        ("paid_at", pa.timestamp("us", tz="UTC")),
        ("amount_fen", pa.int64()),
        ("discount_fen", pa.int64()),
        ("refund_fen", pa.int64()),
        ("items", pa.list_(ITEM_TYPE)),
        ("channel", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("content_hash", pa.string()),
        ("source", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)

_DDL = """
-- Two columns with a value of their own in nearly every event (the message id, the properties)
-- are compressed with ZSTD: as small as DuckDB's default for them (DICT_FSST), as fast to read,
-- and half the CPU to write. Person ids keep the default, which compresses their runs better.
-- The identities an event came with are a 128-bit id (md5 of the set's JSON) into
-- identity_sets, which holds each distinct set once (decision 014).
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR USING COMPRESSION zstd NOT NULL,
    person_id VARCHAR NOT NULL,
    identity_set UHUGEINT,
    message_type VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    -- JSON text (plain VARCHAR: no re-validation on insert, portable to Parquet)
    properties VARCHAR USING COMPRESSION zstd,
    source VARCHAR,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS identity_sets (
    set_id UHUGEINT NOT NULL,  -- md5_number(identities)
    identity_type VARCHAR,  -- the original identity: the set's highest-priority one
    identity_value VARCHAR,
    identities VARCHAR NOT NULL  -- JSON text: [[type, value], …], in priority order
);
CREATE TABLE IF NOT EXISTS orders (
    order_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    person_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    paid_at TIMESTAMPTZ,
    amount_fen BIGINT NOT NULL,
    discount_fen BIGINT NOT NULL,
    refund_fen BIGINT NOT NULL,
    items STRUCT(sku VARCHAR, category VARCHAR, quantity INTEGER, price_fen BIGINT)[],
    channel VARCHAR,
    updated_at TIMESTAMPTZ NOT NULL,
    content_hash VARCHAR NOT NULL,
    source VARCHAR,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS person_aliases (
    alias_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
-- Who is in each saved segment: one row per stay (siyu.segments.membership).
CREATE TABLE IF NOT EXISTS segment_membership (
    segment_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    entered_at TIMESTAMPTZ NOT NULL,
    exited_at TIMESTAMPTZ
);
"""

#: Views, created after the tables are migrated (they name the current columns).
_VIEWS = """
CREATE OR REPLACE VIEW events_resolved AS
    SELECT e.* REPLACE (coalesce(a.person_id, e.person_id) AS person_id)
    FROM events e LEFT JOIN person_aliases a ON a.alias_id = e.person_id;
CREATE OR REPLACE VIEW orders_current AS
    SELECT o.* REPLACE (coalesce(a.person_id, o.person_id) AS person_id)
    FROM (SELECT * FROM orders QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY version DESC) = 1) o
    LEFT JOIN person_aliases a ON a.alias_id = o.person_id;
-- events_resolved with the identities each event came with (timelines, exports, fingerprints).
CREATE OR REPLACE VIEW events_with_identities AS
    SELECT e.* EXCLUDE (identity_set), s.identity_type, s.identity_value, s.identities
    FROM events_resolved e LEFT JOIN identity_sets s ON s.set_id = e.identity_set;
"""

_SET_ROW_COLUMNS = ("high", "low", "identity_type", "identity_value", "identities")

#: Events of an :data:`EVENTS_ARROW`-shaped relation into ``events``, naming their identity sets.
_INSERT_EVENTS = """INSERT INTO events BY NAME
    SELECT * EXCLUDE (identity_type, identity_value, identities), md5_number(identities) AS identity_set
    FROM {relation}"""

#: From this many rows on, :meth:`EventStore.append_events` finds the distinct identity sets in
#: DuckDB rather than in Python (374k import rows: 0.6 s in Python; an API batch: far below).
_SQL_SETS_ROWS = 20_000


def _distinct_sets(relation: str) -> str:
    """The distinct identity sets of ``relation`` (:data:`EVENTS_ARROW` identity columns), as
    :meth:`EventStore.add_identity_sets` takes them. A set's original identity is its first
    element, so any row's is the set's."""
    return f"""(SELECT md5_number(identities) AS set_id, any_value(identity_type) AS identity_type,
                      any_value(identity_value) AS identity_value, identities
               FROM {relation} WHERE identities IS NOT NULL GROUP BY identities)"""


#: The lower 64 bits of a 128-bit set id.
_LOW = "18446744073709551615"


def set_halves(set_id: str, high: str = "high", low: str = "low") -> str:
    """SQL for the UBIGINT halves of a UHUGEINT set id expression, as columns ``high`` and ``low``.

    Arrow has no 128-bit unsigned integer (DuckDB hands UHUGEINT over as a decimal of 38 digits,
    too few for it), so set ids cross into Python as two halves.
    """
    return f"({set_id} >> 64)::UBIGINT AS {high}, ({set_id} & {_LOW}::UHUGEINT)::UBIGINT AS {low}"


def set_from_halves(high: str, low: str) -> str:
    """SQL for the UHUGEINT set id made of two UBIGINT halves."""
    return f"(({high})::UHUGEINT << 64 | ({low})::UHUGEINT)"


class EventStoreLocked(RuntimeError):
    """Another process (usually ``siyu serve``) holds the event store."""


def hash_event_ids(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> np.ndarray:
    """DuckDB's ``hash()`` of each id, as :class:`SeenIndex` keys them (any connection, any process:
    the hash is a fixed function of the value, so a batch-check worker can compute it ahead)."""
    con.register("_hash_input", pa.table({"x": pa.array(list(ids), pa.string())}))
    try:
        out = con.execute("SELECT hash(x) AS h FROM _hash_input").fetchnumpy()["h"]
    finally:
        con.unregister("_hash_input")
    return np.asarray(out, dtype=np.uint64)


class SeenIndex:
    """Which event ids are stored: 64-bit hashes in a sorted array plus a set of recent ones.

    A miss is certain (the id is new). A hit may be a hash collision, so callers confirm hits
    against the table. Built lazily from the table, then kept current by the single writer.
    """

    def __init__(self, hashes: np.ndarray) -> None:
        self._sorted = np.sort(hashes.astype(np.uint64))
        self._recent: set[int] = set()

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean mask: which of ``hashes`` are (probably) stored."""
        hashes = hashes.astype(np.uint64)
        if len(self._sorted):
            pos = np.searchsorted(self._sorted, hashes)
            pos[pos >= len(self._sorted)] = len(self._sorted) - 1
            hit = self._sorted[pos] == hashes
        else:
            hit = np.zeros(len(hashes), dtype=bool)
        if self._recent:
            recent = self._recent
            hit |= np.fromiter((h in recent for h in hashes.tolist()), dtype=bool, count=len(hashes))
        return hit

    def add(self, hashes: np.ndarray) -> None:
        """Record newly stored ids."""
        self._recent.update(hashes.tolist())
        if len(self._recent) > 500_000:
            merged = np.concatenate([self._sorted, np.fromiter(self._recent, dtype=np.uint64)])
            self._sorted = np.sort(merged)
            self._recent.clear()


#: From this many ids on, :class:`SetIndex` works on its sorted arrays only.
_MANY = 10_000


class SetIndex:
    """Which identity sets are stored: their 128-bit ids as sorted (high, low) 64-bit halves,
    plus the ones added since (a set). Exact: a miss means the set is new."""

    def __init__(self, high: np.ndarray, low: np.ndarray) -> None:
        order = np.lexsort((low, high))
        self._high, self._low = high[order], low[order]
        self._recent: set[tuple[int, int]] = set()

    def missing(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """A boolean mask: which of the ids (given as halves) are not stored."""
        if self._recent and len(high) >= _MANY:
            self._compact()  # one sort, instead of a set lookup per id of a large query
        known = np.zeros(len(high), dtype=bool)
        n = len(self._high)
        if n:
            pos = np.searchsorted(self._high, high)
            inside = pos < n
            at = np.minimum(pos, n - 1)
            known = inside & (self._high[at] == high) & (self._low[at] == low)
            # Two stored ids sharing their high half (about never): look along the run.
            for i in np.flatnonzero(inside & (self._high[at] == high) & ~known).tolist():
                j = int(pos[i])
                while j < n and self._high[j] == high[i]:
                    if self._low[j] == low[i]:
                        known[i] = True
                        break
                    j += 1
        if self._recent:
            recent = self._recent
            known |= np.fromiter(
                (pair in recent for pair in zip(high.tolist(), low.tolist(), strict=True)), bool, len(high)
            )
        return ~known

    def add(self, high: np.ndarray, low: np.ndarray) -> None:
        """Record newly stored ids: a few into the recent set, many (or a full set) into the arrays."""
        if len(high) < _MANY:
            self._recent.update(zip(high.tolist(), low.tolist(), strict=True))
            if len(self._recent) >= 200_000:
                self._compact()
            return
        self._merge(high, low)

    def _compact(self) -> None:
        high, low = (np.fromiter(v, np.uint64) for v in zip(*self._recent, strict=True))
        self._recent.clear()
        self._merge(high, low)

    def _merge(self, high: np.ndarray, low: np.ndarray) -> None:
        high, low = np.concatenate([self._high, high]), np.concatenate([self._low, low])
        order = np.lexsort((low, high))
        self._high, self._low = high[order], low[order]


class EventStore:
    """The DuckDB event store. One writer per file; reads through per-thread cursors."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect(read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise EventStoreLocked(
                    f"the event store {path} is in use by another siyu process (is `siyu serve` running?); "
                    "stop it, or send the data through its HTTP API"
                ) from exc
            raise
        self.write_lock = threading.RLock()
        self._local = threading.local()
        self._seen: SeenIndex | None = None
        self._pending: list[str] = []
        self._pending_hashes: list[np.ndarray] = []
        self._on_commit: list[Callable[[], None]] = []  # run once the current transaction commits
        # store_meta as committed (read through, then kept by set_meta at commit): the change
        # feed reads its watermark on every ingest call, and a DuckDB point query costs ~0.5 ms.
        self._meta: dict[str, str | None] = {}
        self._meta_pending: dict[str, str] = {}
        self._sets: SetIndex | None = None
        self._unsettled = 0  # rows this process appended to seen_pending since it last settled
        self.settle_rows = SETTLE_ROWS  # … and settles once it reaches this many
        if not read_only:
            self.con.execute(_DDL)
            self._migrate_identity_sets()
            self.con.execute(_VIEWS)
            self.con.execute(
                "INSERT INTO store_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                [str(SCHEMA_VERSION)],
            )
            self._ensure_state()

    def _migrate_identity_sets(self) -> None:
        """Schema 1 → 2: move each event's identity columns into ``identity_sets`` (once, on open)."""
        old = self.con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = 'events' AND column_name = 'identities'"
        ).fetchall()[0][0]
        if not old:
            return
        with self.transaction() as con:
            con.execute("""INSERT INTO identity_sets
                SELECT md5_number(identities), any_value(identity_type), any_value(identity_value), identities
                FROM events WHERE identities IS NOT NULL GROUP BY identities""")
            con.execute("ALTER TABLE events ADD COLUMN identity_set UHUGEINT")
            con.execute("UPDATE events SET identity_set = md5_number(identities) WHERE identities IS NOT NULL")
            for column in ("identity_type", "identity_value", "identities"):
                con.execute(f"ALTER TABLE events DROP COLUMN {column}")
            self.set_meta(con, "schema_version", str(SCHEMA_VERSION))

    def _ensure_state(self) -> None:
        """Create the person-state tables; fold them from the history once for a store made before them."""
        if self.get_meta(STATE_VERSION_KEY) != STATE_VERSION:
            with self.transaction() as con:
                drop_state(con)
                con.execute(STATE_DDL)
                rebuild_state(con)
                self.set_meta(con, STATE_VERSION_KEY, STATE_VERSION)
        self.con.execute(STATE_DDL)

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def _connect(self, read_only: bool = False) -> None:
        self.con = duckdb.connect(str(self.path), read_only=read_only)
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")  # library code: no output on stderr

    def compact(self) -> None:
        """Rewrite the file so that deleted rows leave no bytes behind (used after an erasure).

        Copies the database into a new file and swaps it in; readers holding a cursor from
        before must take a new one.
        """
        if str(self.path) == ":memory:":
            return
        with self.write_lock:
            fresh = self.path.with_name(self.path.name + ".compact")
            fresh.unlink(missing_ok=True)
            name = self.con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            self.con.execute("CHECKPOINT")
            quoted = str(fresh).replace("'", "''")
            self.con.execute(f"ATTACH '{quoted}' AS siyu_compacted")
            try:
                self.con.execute(f'COPY FROM DATABASE "{name}" TO siyu_compacted')
            finally:
                self.con.execute("DETACH siyu_compacted")
            self.con.close()
            os.replace(fresh, self.path)
            Path(str(self.path) + ".wal").unlink(missing_ok=True)
            self._connect()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reading from another thread."""
        cur = self.con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute("SET enable_progress_bar = false")
        return cur

    # -- dedupe -------------------------------------------------------------------------------
    def _hashes(self, ids: Sequence[str]) -> np.ndarray:
        # One cursor per thread, kept: a new one costs two SET statements, more than the hashing.
        local = self._local
        if getattr(local, "con", None) is not self.con:  # first use in this thread, or reconnected
            local.cursor, local.con = self.con.cursor(), self.con
        return hash_event_ids(local.cursor, ids)

    def seen_index(self) -> SeenIndex:
        """The dedupe index (built on first use)."""
        if self._seen is None:
            hashes = self.con.execute("SELECT hash(event_id) AS h FROM events").fetchnumpy()["h"]
            self._seen = SeenIndex(np.asarray(hashes, dtype=np.uint64))
        return self._seen

    def event_id_hashes(self, ids: Sequence[str]) -> np.ndarray:
        """The dedupe index's hashes of ``ids`` (to pass to :meth:`existing_event_ids` and
        :meth:`append_events`, so that one batch is hashed once)."""
        return self._hashes(ids)

    def existing_event_ids(self, ids: Sequence[str], hashes: np.ndarray | None = None) -> set[str]:
        """Which of ``ids`` are already stored (``hashes``: their :meth:`event_id_hashes`, if known)."""
        if not ids:
            return set()
        if hashes is None:
            hashes = self._hashes(ids)
        hit = self.seen_index().contains(hashes)
        candidates = [i for i, h in zip(ids, hit, strict=True) if h]
        if not candidates:
            return set()
        cur = self.cursor()
        cur.register("_candidates", pa.table({"event_id": pa.array(candidates, pa.string())}))
        rows = cur.execute("SELECT DISTINCT event_id FROM events JOIN _candidates USING (event_id)").fetchall()
        return {r[0] for r in rows}

    def forget_seen_index(self) -> None:
        """Drop the dedupe index after a bulk write; it is rebuilt on next use."""
        self._seen = None

    def note_stored(self, ids: Sequence[str]) -> None:
        """Tell the dedupe index about ids written outside :meth:`append`."""
        if self._seen is not None and ids:
            self._seen.add(self._hashes(ids))

    # -- writes -------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction (serialised across threads)."""
        with self.write_lock:
            self._forget_pending()
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                self._forget_pending()
                self._sets = None  # it may list sets of this transaction: rebuilt on next use
                raise
            self.con.execute("COMMIT")
            self._meta.update(self._meta_pending)
            self.note_stored(self._pending)
            if self._seen is not None:
                for hashes in self._pending_hashes:
                    self._seen.add(hashes)
            after = self._on_commit
            self._forget_pending()
            for action in after:
                action()

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the current :meth:`transaction` commits (never if it rolls back)."""
        self._on_commit.append(action)

    def _forget_pending(self) -> None:
        self._pending, self._pending_hashes, self._meta_pending, self._on_commit = [], [], {}, []

    def settle(self) -> None:
        """Bring ``person_state`` up to date (:func:`~siyu.store.state.settle_seen`) before reading it.

        Every reader of ``person_state`` calls this first; it costs one small query when there is
        nothing to settle. Not inside a :meth:`transaction` of this thread (it opens its own).
        """
        if self.read_only:
            return
        with self.write_lock:
            if not has_pending_seen(self.con):
                return
            with self.transaction() as con:
                settle_seen(con)
            self._unsettled = 0

    # -- identity sets ------------------------------------------------------------------------
    def set_index(self) -> SetIndex:
        """Which identity sets are stored (built on first use, then kept current by the writer)."""
        if self._sets is None:
            got = self.con.execute(f"SELECT {set_halves('set_id')} FROM identity_sets").fetchnumpy()
            high, low = (np.asarray(v, dtype=np.uint64) for v in got.values())
            self._sets = SetIndex(high, low)
        return self._sets

    def add_identity_sets(self, con: duckdb.DuckDBPyConnection, relation: str) -> None:
        """Store the identity sets of ``relation`` not stored yet, inside a :meth:`transaction`.

        ``relation`` (SQL) has the columns ``set_id`` (``md5_number(identities)``),
        ``identity_type``, ``identity_value`` and ``identities``, one row per distinct set.
        """
        rows = con.sql(
            f"SELECT {set_halves('set_id')}, identity_type, identity_value, identities FROM {relation}"
        ).to_arrow_table()
        self.add_identity_set_rows(con, rows)

    def add_identity_set_rows(self, con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
        """:meth:`add_identity_sets` for Arrow rows: ``high``, ``low`` (the set id's halves, see
        :func:`set_halves`), ``identity_type``, ``identity_value``, ``identities``."""
        if not rows.num_rows:
            return
        rows = rows.select(list(_SET_ROW_COLUMNS))
        high = rows.column("high").to_numpy()
        low = rows.column("low").to_numpy()
        new = self.set_index().missing(high, low)
        if not new.any():
            return
        self._insert_sets(con, rows.filter(pa.array(new)))
        # Known at once, so a second call in this transaction sees them; a rollback drops the index.
        self.set_index().add(high[new], low[new])

    @staticmethod
    def _insert_sets(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
        con.register("_new_sets", rows)
        try:
            con.execute(f"""INSERT INTO identity_sets SELECT {set_from_halves("high", "low")}, identity_type,
                identity_value, identities FROM _new_sets""")
        finally:
            con.unregister("_new_sets")

    def forget_set_index(self) -> None:
        """Drop the identity-set index after sets were written or removed outside :meth:`add_identity_sets`."""
        self._sets = None

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, table_name: str, rows: pa.Table) -> None:
        view = f"_new_{table_name}"
        con.register(view, rows)
        try:
            con.execute(f"INSERT INTO {table_name} BY NAME SELECT * FROM {view}")
        finally:
            con.unregister(view)

    def append_events(self, con: duckdb.DuckDBPyConnection, table: pa.Table, hashes: np.ndarray | None = None) -> None:
        """Append events (an Arrow table in :data:`EVENTS_ARROW` shape) inside a transaction.

        ``hashes``: the :meth:`event_id_hashes` of the first rows (all of them, or a leading part),
        in row order, when the caller has them; the ids of the other rows are hashed at commit.
        """
        if table.num_rows:
            self._add_sets_of(con, table)
            con.register("_new_events", table)
            try:
                con.execute(_INSERT_EVENTS.format(relation="_new_events"))
            finally:
                con.unregister("_new_events")
            fold_event_table(con, table)
            self._unsettled += table.num_rows
            if self._unsettled >= self.settle_rows:
                settle_seen(con)
                self._unsettled = 0
            if self._seen is not None:
                known = 0
                if hashes is not None and len(hashes):
                    self._pending_hashes.append(hashes)
                    known = len(hashes)
                if known < table.num_rows:
                    self._pending.extend(table.column("event_id").slice(known).to_pylist())

    def append_event_relation(self, con: duckdb.DuckDBPyConnection, relation: str) -> None:
        """Append the events of ``relation`` (SQL naming :data:`EVENTS_ARROW` columns) inside a transaction.

        Their identity sets are stored first; the events keep only each set's id. Not recorded in
        the dedupe index (callers that use this directly call :meth:`forget_seen_index`).
        """
        self.add_identity_sets(con, _distinct_sets(relation))
        con.execute(_INSERT_EVENTS.format(relation=relation))

    def _add_sets_of(self, con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
        """Store the identity sets of an :data:`EVENTS_ARROW` table not stored yet.

        Small batches (the API's) spend less here than in three DuckDB statements: the distinct
        sets are found and hashed in Python (``md5_number`` is the digest read little-endian).
        Large ones (an import's) are grouped and hashed in DuckDB; a table with no sets at all
        (change events) costs nothing.
        """
        if table.column("identities").null_count == table.num_rows:
            return
        if table.num_rows >= _SQL_SETS_ROWS:
            con.register("_set_source", table.select(["identity_type", "identity_value", "identities"]))
            try:
                self.add_identity_sets(con, _distinct_sets("_set_source"))
            finally:
                con.unregister("_set_source")
            return
        first: dict[str, tuple[str | None, str | None]] = {}
        for text, id_type, id_value in zip(
            table.column("identities").to_pylist(),
            table.column("identity_type").to_pylist(),
            table.column("identity_value").to_pylist(),
            strict=True,
        ):
            if text is not None and text not in first:
                first[text] = (id_type, id_value)
        if not first:
            return
        digests = np.frombuffer(b"".join(hashlib.md5(t.encode()).digest() for t in first), dtype="<u8")
        rows = pa.table(
            {
                "high": pa.array(digests[1::2], pa.uint64()),
                "low": pa.array(digests[0::2], pa.uint64()),
                "identity_type": pa.array([v[0] for v in first.values()], pa.string()),
                "identity_value": pa.array([v[1] for v in first.values()], pa.string()),
                "identities": pa.array(list(first), pa.string()),
            }
        )
        self.add_identity_set_rows(con, rows)

    def append_orders(self, con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
        """Append order versions (an Arrow table in :data:`ORDERS_ARROW` shape)."""
        if table.num_rows:
            self._insert(con, "orders", table)

    def add_aliases(self, con: duckdb.DuckDBPyConnection, pairs: Sequence[tuple[str, str]]) -> None:
        """Record merges ``(alias_id → person_id)``, given in order, keeping the alias table flat.

        Chains within ``pairs`` (A→B, then B→C) are followed first, so every alias points at its
        final survivor; two set-based statements then update old aliases and add the new ones.
        """
        if not pairs:
            return
        survivors = final_survivors(pairs)
        flat = pa.table({"alias_id": list(survivors), "person_id": list(survivors.values())})
        con.register("_new_aliases", flat)
        try:
            con.execute(
                "UPDATE person_aliases SET person_id = n.person_id FROM _new_aliases n "
                "WHERE person_aliases.person_id = n.alias_id"
            )
            con.execute("INSERT INTO person_aliases SELECT alias_id, person_id FROM _new_aliases")
        finally:
            con.unregister("_new_aliases")

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A committed value from ``store_meta``."""
        if key not in self._meta:
            row = self.cursor().execute("SELECT value FROM store_meta WHERE key = ?", [key]).fetchone()
            self._meta[key] = row[0] if row else None
        value = self._meta[key]
        return default if value is None else value

    def forget_meta(self, key: str) -> None:
        """Drop the cached value of ``key`` (after it was written outside :meth:`set_meta`)."""
        self._meta.pop(key, None)

    def set_meta(self, con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
        """Set a ``store_meta`` value inside a :meth:`transaction` (seen by :meth:`get_meta` once committed)."""
        if self._meta.get(key) is not None or key in self._meta_pending:
            # The row exists (committed, or written earlier in this transaction): an UPDATE is
            # about half the cost of an upsert, and the change feed sets its watermark per batch.
            con.execute("UPDATE store_meta SET value = ? WHERE key = ?", [value, key])
        else:
            con.execute(
                "INSERT INTO store_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
        self._meta_pending[key] = value

    # -- reads --------------------------------------------------------------------------------
    def latest_orders(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The latest stored version of each of ``order_ids``."""
        if not order_ids:
            return {}
        cur = self.cursor()
        cur.register("_wanted", pa.table({"order_id": pa.array(list(order_ids), pa.string())}))
        rows = cur.execute(
            """SELECT o.order_id, o.version, o.status, o.updated_at, o.content_hash, o.person_id, o.refund_fen
               FROM orders o JOIN _wanted USING (order_id)
               QUALIFY row_number() OVER (PARTITION BY o.order_id ORDER BY o.version DESC) = 1"""
        ).fetchall()
        keys = ("order_id", "version", "status", "updated_at", "content_hash", "person_id", "refund_fen")
        return {r[0]: dict(zip(keys, r, strict=True)) for r in rows}

    def counts(self) -> dict[str, int]:
        """Row counts: events, distinct orders."""
        cur = self.cursor()
        events = cur.execute("SELECT count(*) FROM events").fetchone()
        orders = cur.execute("SELECT count(DISTINCT order_id) FROM orders").fetchone()
        return {"events": int(events[0]) if events else 0, "orders": int(orders[0]) if orders else 0}

    def aliases_of(self, person_id: str) -> list[str]:
        """``person_id`` and every person merged into it."""
        rows = self.cursor().execute("SELECT alias_id FROM person_aliases WHERE person_id = ?", [person_id]).fetchall()
        return [person_id, *(r[0] for r in rows)]
