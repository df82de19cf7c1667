"""Columnar import paths for flat Parquet *customer* (identify) and *order* files (decision 011).

The same contract as :mod:`siyu.ingest.bulk` for events: the store after a columnar import is the
store the row path (:func:`siyu.ingest.files.import_file` with ``vectorised=False``) leaves for
the same file, down to :func:`siyu.store.fingerprint.store_fingerprint`.

How exactness is kept without a second copy of every Pydantic rule:

* **Checks.** DuckDB evaluates, column-wise, a *suspect* flag per row that is true whenever the
  row path could reject the row (a missing or over-long field, an out-of-range number, a bad
  identity, a timestamp out of range, …). Only suspect rows go through the row path's own
  :class:`~siyu.ingest.validate.Validator`, which gives the rejects their exact fields and reasons.
  A suspect row that the validator accepts means the flags were too wide for this file: the
  whole file then takes the row path (never seen on real files, but always correct).
* **Chunks.** The row path stores a file in chunks of ``chunk_rows`` rows, each its own batch, and
  some outcomes depend on that: a trait changed in two chunks writes two ``trait_changed``
  changes; orders are sorted by ``updated_at`` within a chunk. These paths reproduce the chunks:
  identify rows are resolved and their traits applied chunk by chunk (the identity graph once per
  distinct identity combination of a chunk), orders are taken in (chunk, updated_at, row) order.
* **Where the chunks cannot matter, the whole file at once** (decision 019): identify rows of
  *simple* components (new persons no other row touches) are resolved in one call and their
  traits computed in SQL with the chunks' outcome; an orders file whose combinations are all
  simple or known (stored customers) is resolved in one call.
* **The rest is set-based**: dedupe, order versions (a Python pass only over orders that occur
  more than once in the file), content hashes, the order events and their ids, and inserts, all
  in DuckDB; persons and identities through :func:`~siyu.identity.vectorised.resolve_columns`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection

from siyu.identity.normalize import IdentityValueError
from siyu.identity.traits import TraitUpdate, apply_trait_updates, write_trait_rows
from siyu.identity.vectorised import SightingColumns, partition_sightings, resolve_columns
from siyu.ingest.bulk import _lit, _q, _scalar
from siyu.ingest.files import IDENTITY_COLUMNS, Kind, to_message
from siyu.ingest.pipeline import PAID_STATUSES, Ingestor, IngestResult
from siyu.ingest.validate import EARLIEST, Checked
from siyu.perf import StageTimer, alongside, gc_paused
from siyu.store.events import EVENTS_ARROW
from siyu.store.feed import Change, apply_changes, insert_changes
from siyu.store.ops.upsert import json_text, micros_texts, stored_json_values
from siyu.store.state import fold_seen
from siyu.timeutil import column_micros, micros_datetimes

log = logging.getLogger(__name__)

_ALIASES = {"messageId": "message_id", "userId": "user_id", "anonymousId": "anonymous_id"}
_ID_ROLES = (*IDENTITY_COLUMNS, "user_id", "anonymous_id")
# Python's str.strip() removes these besides the space DuckDB's trim() removes.
_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_CONTROL = r"[\x00-\x1f\x7f]"
_EMAIL_RE = r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$"
_STATUSES = ("created", "paid", "shipped", "completed", "refunded", "partially_refunded", "cancelled")
_ITEM_FIELDS = {"sku", "category", "quantity", "price_fen"}
_NOT_TRAITS = {
    "type", "event", "event_name", "previousId", "previous_id", "properties", "traits",
    "identities", "context", "integrations", "sentAt", "originalTimestamp", "channel",
}  # fmt: skip
_UUID_NS = "5b3f1c2e8a4d4c1e9b7a2f6d0e9c8a11"  # siyu.ids._NAMESPACE

Outcome = tuple[IngestResult, int, list[bytes]]


def _uuid5(parts: str) -> str:
    """``siyu.ids.derived_id`` in SQL: a UUIDv5 of ``parts`` (the parts joined by U+001F, as SQL)."""
    h = f"sha1(unhex('{_UUID_NS}') || encode({parts}))"
    return (
        f"(substr({h}, 1, 12) || '5' || substr({h}, 14, 3) || "
        f"lower(printf('%x', (('0x' || substr({h}, 17, 1))::INTEGER & 3) | 8)) || substr({h}, 18, 15))"
    )


def _by_chunk(rows: list[int], chunk_of: list[int]) -> Iterator[list[int]]:
    """``rows`` (row positions, in order) grouped by their chunk."""
    for _, group in itertools.groupby(rows, key=chunk_of.__getitem__):
        yield list(group)


def _trait_updates(
    members: list[int],
    columns: list[tuple[str, list[Any]]],
    people: list[str],
    stamps: list[datetime],
    mids: list[str],
) -> list[TraitUpdate]:
    """The trait values (``columns``: key and value per row) that the rows ``members`` set."""
    return [
        (people[i], key, values[i], stamps[i], mids[i])
        for i in members
        for key, values in columns
        if values[i] is not None
    ]


class _Fallback(Exception):
    """The file needs the row path after all (raised before anything is written)."""


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_utc(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) and t.tz in ("UTC", "utc", "Etc/UTC", "+00:00", "Z"))


def _plan(kind: Kind, schema: pa.Schema) -> dict[str, str] | None:
    """Column → role for a file this path can take, else None."""
    roles: dict[str, str] = {}
    for f in schema:
        name = _ALIASES.get(f.name, f.name)
        if name in roles.values():
            return None
        t = f.type
        if name in _ID_ROLES:
            if not (_is_text(t) or (pa.types.is_integer(t) and name not in ("user_id", "anonymous_id"))):
                return None
        elif kind == "customers":
            if name == "message_id":
                if not _is_text(t):
                    return None
            elif name == "timestamp":
                if not _is_utc(t):
                    return None
            elif (
                name in _NOT_TRAITS
                or not (1 <= len(name) <= 128 and "\x00" not in name)
                or name.startswith("_")
                or not (_is_text(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))
            ):
                return None  # a message field, a key the row path rejects, or a nested value
        else:  # orders
            if name in ("order_id", "status", "channel"):
                if not _is_text(t):
                    return None
            elif name in ("paid_at", "updated_at"):
                if not _is_utc(t):
                    return None
            elif name in ("amount_fen", "discount_fen", "refund_fen"):
                if not pa.types.is_integer(t):
                    return None
            elif name == "items":
                if not _items_type(t):
                    return None
            else:
                return None  # the row path rejects an unknown column by its name
        roles[f.name] = name
    needed = ("message_id",) if kind == "customers" else ("order_id", "status", "amount_fen")
    if any(n not in roles.values() for n in needed):
        return None
    return roles


def _items_type(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type):
        return False
    fields = {f.name: f.type for f in t.value_type}
    if not set(fields) <= _ITEM_FIELDS or not {"sku", "quantity", "price_fen"} <= set(fields):
        return False
    return all(_is_text(fields[n]) if n in ("sku", "category") else pa.types.is_integer(fields[n]) for n in fields)


def import_parquet_columnar(
    ingestor: Ingestor,
    path: Path,
    kind: Kind,
    *,
    source: str,
    chunk_rows: int,
    progress: Callable[[int], None] | None = None,
) -> Outcome | None:
    """Import a flat Parquet customers or orders file; (result, rejected, reject lines), or None
    when the file needs the row path."""
    if kind not in ("customers", "orders") or ingestor.settings.tracking_plan_mode == "strict":
        return None
    schema = pq.read_schema(path)
    roles = _plan(kind, schema)
    if roles is None:
        return None
    with ingestor.events.write_lock, gc_paused():
        con = ingestor.events.con
        try:
            job = _Job(ingestor, path, roles, source, chunk_rows)
            if kind == "customers":
                return job.customers(progress)
            return job.orders(progress)
        except _Fallback as exc:
            log.info("columnar import of %s falls back to the row path: %s", path.name, exc)
            return None
        finally:
            for view in ("_src", "_phones", "_people", "_decided", "_orows"):
                con.unregister(view)
            for table in ("_chk", "_fresh", "_latest", "_orows", "_orows2", "_oev"):
                con.execute(f"DROP TABLE IF EXISTS {table}")


class _Job:
    def __init__(self, ingestor: Ingestor, path: Path, roles: dict[str, str], source: str, chunk_rows: int) -> None:
        self.ingestor = ingestor
        self.settings = ingestor.settings
        self.store = ingestor.events
        self.con = ingestor.events.con
        self.path = path
        self.table = pq.read_table(path)
        self.by_role = {role: col for col, role in roles.items()}
        self.roles = roles
        self.source = source
        self.chunk_rows = max(1, chunk_rows)
        self.now = ingestor.now()
        self.timer = StageTimer(log, "bulk import")
        self.present = [r for r in self.settings.identity_priority if r in self.by_role]
        # Each row's number (from 1) as a column (no column the path takes starts with "_"):
        # DuckDB computes row_number() OVER () on one thread.
        rows = pa.array(np.arange(1, self.table.num_rows + 1, dtype=np.int64))
        self.con.register("_src", self.table.append_column("_row", rows))

    # -- shared pieces -------------------------------------------------------------------------
    def _col(self, role: str) -> str:
        return _q(self.by_role[role])

    def _identities(self) -> tuple[str, str, list[str]]:
        """(select list of cleaned ``_<role>`` columns, join of the phone table, suspect checks)."""
        screen = self.ingestor.validator.screen
        blocked = ", ".join(_lit(v) for v in sorted(screen.blocked)) or "NULL"
        longest = max((len(v) for v in screen.blocked), default=0)

        def raw(role: str) -> str:
            text = f"trim(CAST({self._col(role)} AS VARCHAR))"
            return (
                f"(CASE WHEN {text} = '' OR (length({text}) <= {longest} AND lower({text}) IN ({blocked})) "
                f"THEN NULL ELSE {text} END)"
            )

        phones: dict[str, list[Any]] = {"raw": [], "norm": [], "bad": []}
        if "phone" in self.by_role:
            rows = self.con.execute(f"SELECT DISTINCT {raw('phone')} AS p FROM _src WHERE p IS NOT NULL").fetchall()
            for (value,) in rows:
                try:
                    norm, bad = screen.clean("phone", value), False
                except IdentityValueError:
                    norm, bad = None, True
                phones["raw"].append(value)
                phones["norm"].append(norm)
                phones["bad"].append(bad)
        self.con.register(
            "_phones",
            pa.table(phones, schema=pa.schema([("raw", pa.string()), ("norm", pa.string()), ("bad", pa.bool_())])),
        )
        cols: list[str] = []
        checks: list[str] = []
        for role in self.present:
            r = raw(role)
            if role == "phone":
                cols.append(f"(SELECT p.norm FROM _phones p WHERE p.raw = {r}) AS _phone")
                checks.append(f"coalesce((SELECT p.bad FROM _phones p WHERE p.raw = {r}), false)")
            elif role == "email":
                cols.append(f"lower({r}) AS _email")
                checks.append(f"NOT regexp_full_match(lower({r}), {_lit(_EMAIL_RE)})")
            else:
                cols.append(f"{r} AS _{role}")
            # over-long or control characters; edges Python's strip() would also remove
            checks.append(f"length({r}) > 128")
            checks.append(f"regexp_matches({r}, {_lit(_CONTROL)})")
            checks.append(f"regexp_matches(CAST({self._col(role)} AS VARCHAR), {_lit('^' + _WS + '|' + _WS + '$')})")
        return ", ".join(cols), "", checks

    def _no_identity(self) -> str:
        if not self.present:
            return "true"
        return "coalesce(" + ", ".join(f"_{r}" for r in self.present) + ") IS NULL"

    def _ts_checks(self, expr: str) -> list[str]:
        latest = self.now + timedelta(seconds=self.settings.max_future_seconds)
        return [f"{expr} < TIMESTAMPTZ '{EARLIEST.isoformat()}'", f"{expr} > TIMESTAMPTZ '{latest.isoformat()}'"]

    def _size_check(self) -> str:
        """Rows that might exceed ``max_message_bytes`` (a generous over-estimate of their JSON)."""
        parts = []
        for col, role in self.roles.items():
            t = self.table.schema.field(col).type
            if _is_text(t):
                parts.append(f"coalesce({_json_bytes(_q(col))}, 0)")
            elif role == "items":
                category = f" + coalesce({_json_bytes('x.category')}, 0)" if "category" in t.value_type.names else ""
                item = f"{_json_bytes('x.sku')}{category} + 120"
                parts.append(f"coalesce(list_sum(list_transform({_q(col)}, lambda x: {item})), 0)")
            parts.append(str(len(col) + 40))
        return f"({' + '.join(parts) or '0'}) > {self.settings.max_message_bytes}"

    def _reject_suspects(self, kind: Kind) -> tuple[list[bytes], int]:
        """Check the suspect rows with the row path's validator; their reject lines."""
        rows = [r[0] for r in self.con.execute("SELECT _row FROM _chk WHERE _suspect ORDER BY _row").fetchall()]
        if not rows:
            return [], 0
        records = self.table.take(pa.array([r - 1 for r in rows], pa.int64())).to_pylist()
        raws = [to_message(kind, {k: v for k, v in rec.items() if v is not None}, flat=True) for rec in records]
        checked: Checked = (
            self.ingestor.validator.orders(raws) if kind == "orders" else self.ingestor.validator.messages(raws)
        )
        bad: dict[int, list[Any]] = {}
        for err in checked.errors:
            bad.setdefault(err.index, []).append(err)
        if len(bad) < len(rows):
            raise _Fallback(f"{len(rows) - len(bad)} suspect rows are valid")
        rejects = [
            orjson.dumps(
                {
                    "line": rows[i],
                    "errors": [{"field": e.field, "reason": e.reason} for e in errors],
                    "record": raws[i],
                },
                default=str,
            )
            for i, errors in sorted(bad.items())
        ]
        return rejects, len(rows)

    def _keys(self, values: Sequence[str | None]) -> list[tuple[str, str]]:
        """The identities of one row's ``values`` (in :attr:`present` order), as
        ``IdentityRules.sort`` would give them: ``present`` holds distinct types in priority order."""
        return [(r, v) for r, v in zip(self.present, values, strict=True) if v is not None]

    # -- customers -----------------------------------------------------------------------------
    def _resolve_rows(
        self,
        conn: Connection,
        members: list[int],
        idvals: list[tuple[Any, ...]],
        stamps: list[datetime],
        mids: list[str],
        people: list[str],
        result: IngestResult,
    ) -> None:
        """Resolve the rows ``members`` as one batch, as the row path does: one sighting per distinct
        identity combination, in order of first appearance, at that first row's time; a second one
        widens the span to the earliest row. Fills ``people``."""
        combos: dict[tuple[Any, ...], list[Any]] = {}
        for i in members:
            combo = combos.get(idvals[i])
            if combo is None:
                combos[idvals[i]] = [stamps[i], stamps[i], stamps[i], mids[i], [i]]
            else:
                combo[1] = min(combo[1], stamps[i])
                combo[2] = max(combo[2], stamps[i])
                combo[4].append(i)
        values: list[tuple[Any, ...]] = []
        first: list[datetime] = []
        last: list[datetime] = []
        first_mids: list[str] = []
        owners: list[list[int]] = []
        for key, (at, lo, hi, first_mid, rows) in combos.items():
            values.append(key)
            first.append(at)
            last.append(hi)
            first_mids.append(first_mid)
            owners.append(rows)
            if lo < at:
                values.append(key)
                first.append(lo)
                last.append(lo)
                first_mids.append(first_mid)
                owners.append([])
        stamp = pa.timestamp("us", tz="UTC")
        columns = list(zip(*values, strict=True)) if values else [() for _ in self.present]
        resolution = resolve_columns(
            conn,
            self.ingestor.rules,
            SightingColumns(
                identities={r: pa.array(col, pa.string()) for r, col in zip(self.present, columns, strict=True)},
                first=pa.array(first, stamp),
                last=pa.array(last, stamp),
                message_id=pa.array(first_mids, pa.string()),
            ),
            trait_strategies=self.settings.trait_strategies,
            now=self.now,
            make_id=self.ingestor.make_id,
        )
        for person, rows in zip(resolution.people, owners, strict=True):
            for i in rows:
                people[i] = person
        result.count(resolution)

    def _simple_traits(
        self,
        conn: Connection,
        data: pa.Table,
        easy: list[int],
        chunk_of: list[int],
        people: list[str],
        traits: list[str],
        tvals: list[list[Any]],
        stamps: list[datetime],
        mids: list[str],
    ) -> int:
        """Apply the traits of the rows ``easy`` (new persons, none merged), with the outcome of
        :func:`apply_trait_updates` chunk by chunk; returns the number of changes written.

        Under ``latest`` a row wins when its time is at least every earlier row's of the person
        and trait (the current value's time is their maximum). After a chunk the current value is
        that of its last winning row; a change is written per chunk with a winner whose value
        differs from the one before the chunk (values compared as typed columns, which is how the
        Python values compare). Traits under other strategies are applied chunk by chunk as before.
        """
        strategies = self.settings.trait_strategies
        latest = [c for c in traits if strategies.get(c, "latest") == "latest"]
        others = [c for c in traits if c not in latest]
        changed = 0
        if others:
            columns = [(c, tvals[traits.index(c)]) for c in others]
            for members in _by_chunk(easy, chunk_of):
                updates = _trait_updates(members, columns, people, stamps, mids)
                changed += apply_trait_updates(conn, updates, strategies)
        if not latest:
            return changed
        index = pa.array(easy, pa.int64())
        codes: dict[str, int] = {}
        person_code = [codes.setdefault(people[i], len(codes)) for i in easy]
        con = self.con
        con.register(
            "_st",
            pa.table(
                {
                    "_i": index,
                    "_chunk": pa.array([chunk_of[i] for i in easy], pa.int64()),
                    "_p": pa.array(person_code, pa.int64()),
                    "_ts": data.column("_ts").take(index),
                    "_mid": data.column("_mid").take(index),
                    "_person": pa.array([people[i] for i in easy], pa.string()),
                    **{f"_v{k}": data.column(c).take(index) for k, c in enumerate(latest)},
                }
            ),
        )
        upserts: list[tuple[str, str, Any, datetime | str]] = []
        feed: list[Change] = []
        # On SQLite the trait rows take their times as its text, all converted at once here.
        as_text = conn.dialect.name == "sqlite"
        updated: Sequence[datetime | str] = (
            micros_texts(column_micros(data.column("_ts")), "sqlite") if as_text else stamps
        )
        try:
            for k, c in enumerate(latest):
                col = tvals[traits.index(c)]
                event_id = _uuid5(f"'trait' || chr(31) || a._mid || chr(31) || a._person || chr(31) || {_lit(c)}")
                outcome = con.execute(f"""
                    WITH u AS (SELECT _i, _chunk, _p, _ts, _mid, _person, _v{k} AS v FROM _st
                               WHERE _v{k} IS NOT NULL),
                    w AS (SELECT *, max(_ts) OVER (PARTITION BY _p ORDER BY _i
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _prev
                          FROM u),
                    won AS (SELECT _p, _chunk, max(_i) AS _last FROM w
                            WHERE _prev IS NULL OR _ts >= _prev GROUP BY ALL),
                    s AS (SELECT *, lag(_last) OVER (PARTITION BY _p ORDER BY _chunk) AS _before,
                                 lead(_chunk) OVER (PARTITION BY _p ORDER BY _chunk) IS NULL AS _final
                          FROM won)
                    SELECT s._last, s._before, s._final, s._before IS NULL OR a.v IS DISTINCT FROM b.v,
                           {event_id}
                    FROM s JOIN u a ON a._i = s._last LEFT JOIN u b ON b._i = s._before
                    ORDER BY s._last""").fetchall()
                # The row path reads the value before a chunk from the store: in its stored form.
                olds: dict[tuple[type, str], Any] = {}  # each distinct old value once
                old_key: dict[int, tuple[type, str]] = {}  # row → its value's key
                for _, before, _, differs, _ in outcome:
                    if differs and before is not None and before not in old_key:
                        key = old_key[before] = (type(col[before]), json_text(col[before]))
                        olds.setdefault(key, col[before])
                stored = dict(zip(olds, stored_json_values(conn, list(olds.values())), strict=True))
                for i, before, final, differs, event_id in outcome:
                    person = people[i]
                    if final:
                        upserts.append((person, c, col[i], updated[i]))
                    if differs:
                        old = None if before is None else stored[old_key[before]]
                        payload = {"key": c, "old": old, "new": col[i], "message_id": mids[i]}
                        feed.append(("trait_changed", person, event_id, stamps[i], payload))
        finally:
            con.unregister("_st")
        upserts.sort()  # primary-key order; (person, key) pairs are distinct, so values are never compared
        write_trait_rows(conn, upserts, stamps_as_text=as_text)
        insert_changes(conn, feed)
        return changed + len(feed)

    def customers(self, progress: Callable[[int], None] | None) -> Outcome:
        settings, con = self.settings, self.con
        traits = [col for col, role in self.roles.items() if role not in ("message_id", "timestamp", *_ID_ROLES)]
        types = {f.name: f.type for f in self.table.schema}
        id_cols, _, checks = self._identities()
        ts = (
            f"coalesce({self._col('timestamp')}, TIMESTAMPTZ '{self.now.isoformat()}')"
            if "timestamp" in self.by_role
            else f"TIMESTAMPTZ '{self.now.isoformat()}'"
        )
        mid = self._col("message_id")
        if _scalar(con, f"SELECT count(*) FROM _src WHERE {mid} IS NULL"):
            raise _Fallback("rows without a messageId get a content id")
        checks += [f"{mid} = ''", f"length({mid}) > 128", f"regexp_matches({mid}, {_lit(_CONTROL)})"]
        checks += self._ts_checks(ts)
        max_chars = settings.max_string_chars
        digits: list[str] = []
        for c in traits:
            t = types[c]
            if pa.types.is_floating(t):
                checks.append(f"NOT isfinite({_q(c)})")
            elif pa.types.is_uint64(t):
                checks.append(f"{_q(c)} >= 9223372036854775808")
            elif _is_text(t):
                checks.append(f"length({_q(c)}) > {max_chars}")
                checks.append(f"contains({_q(c)}, chr(0))")
                # str.isdigit() accepts digits beyond ASCII; those (and int()'s view of them) stay with the row path
                digits.append(
                    f"(regexp_full_match({_q(c)}, '\\pN{{1,15}}') AND NOT regexp_full_match({_q(c)}, '[0-9]+'))"
                )
        if digits and _scalar(con, f"SELECT count(*) FROM _src WHERE {' OR '.join(digits)}"):
            raise _Fallback("digits other than 0-9 in a text trait")
        checks.append(self._size_check())
        suspect = " OR ".join(f"coalesce({c}, false)" for c in checks) or "false"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _chk AS
            SELECT * EXCLUDE (_s0), _s0 OR {self._no_identity()} AS _suspect FROM (
                SELECT _row, {mid} AS _mid, {ts} AS _ts, ({suspect}) AS _s0{", " + id_cols if id_cols else ""}
                       {"".join(", " + _q(c) for c in traits)}
                FROM _src)""")
        self.timer.lap("read+check")
        rejects, rejected = self._reject_suspects("customers")
        self.timer.lap("suspects")

        # Dedupe: the first row of each messageId, none already stored.
        con.execute("""CREATE OR REPLACE TEMP TABLE _fresh AS
            SELECT * FROM _chk WHERE NOT _suspect
            QUALIFY row_number() OVER (PARTITION BY _mid ORDER BY _row) = 1""")
        valid = _scalar(con, "SELECT count(*) FROM _chk WHERE NOT _suspect")
        if _scalar(con, "SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)"):
            con.execute("DELETE FROM _fresh WHERE _mid IN (SELECT event_id FROM events)")
        fresh = _scalar(con, "SELECT count(*) FROM _fresh")
        result = IngestResult(duplicates=valid - fresh)
        self.timer.lap("dedupe")
        if progress:
            progress(rejected + result.duplicates)
        if not fresh:
            return result, rejected, rejects

        cols = ["_row", "_mid", "_ts", *(f"_{r}" for r in self.present), *traits]
        data = con.sql(f"SELECT {', '.join(_q(c) for c in cols)} FROM _fresh ORDER BY _row").to_arrow_table()
        rows = data.column("_row").to_pylist()
        mids = data.column("_mid").to_pylist()
        stamps = micros_datetimes(column_micros(data.column("_ts")))
        idvals = list(zip(*(data.column(f"_{r}").to_pylist() for r in self.present), strict=True))
        tvals = [
            [_scalar_value(v) for v in data.column(c).to_pylist()] if _is_text(types[c]) else data.column(c).to_pylist()
            for c in traits
        ]
        self.timer.lap("fetch")
        people: list[str] = [""] * len(rows)
        strategies = settings.trait_strategies
        rules = self.ingestor.rules
        chunk_of = [(r - 1) // self.chunk_rows for r in rows]
        with self.ingestor.engine.connect() as conn:  # closing it rolls back a transaction left open
            ops = conn.begin()
            # Rows whose component (over the whole file) is a simple new one: the graph would create
            # one person and attach everything to it whatever the chunks, so they are resolved in
            # one go; their traits are computed set-based, chunk semantics kept (_simple_traits).
            simple, _ = partition_sightings(
                conn,
                rules,
                SightingColumns(
                    identities={r: data.column(f"_{r}") for r in self.present},
                    first=data.column("_ts"),
                    last=data.column("_ts"),
                    message_id=data.column("_mid"),
                ),
            ).shortcuts()
            easy = np.flatnonzero(simple).tolist()
            if easy:
                self._resolve_rows(conn, easy, idvals, stamps, mids, people, result)
                result.traits_changed += self._simple_traits(
                    conn, data, easy, chunk_of, people, traits, tvals, stamps, mids
                )
            self.timer.lap(f"simple components ({len(easy)} of {len(rows)} rows)")
            columns = list(zip(traits, tvals, strict=True))
            for members in _by_chunk(np.flatnonzero(~simple).tolist(), chunk_of):
                self._resolve_rows(conn, members, idvals, stamps, mids, people, result)
                updates = _trait_updates(members, columns, people, stamps, mids)
                result.traits_changed += apply_trait_updates(conn, updates, strategies)
            self.timer.lap("identity graph + traits (ops)")

            # SQLite commits (and copies its write-ahead log back) while Python builds the identify
            # events, which need only each row's person.
            with alongside(ops.commit):
                table = self._identify_events(data, people, idvals, traits, tvals)
        self.timer.lap("event table (ops commit alongside)")
        with self.store.transaction() as tx:
            self.store.append_events(tx, table)
            apply_changes(self.ingestor.engine, self.store, tx)
        self.timer.lap("events insert + change feed")
        self.ingestor.after_commit(table)
        result.accepted = table.num_rows
        if progress:
            progress(table.num_rows)
        return result, rejected, rejects

    def _identify_events(
        self,
        data: pa.Table,
        people: list[str],
        idvals: list[tuple[Any, ...]],
        traits: list[str],
        tvals: list[list[Any]],
    ) -> pa.Table:
        """The identify events of the rows of ``data`` (one each, as the row path stores them)."""
        keys_json: dict[tuple[Any, ...], tuple[str, str, str]] = {}
        id_type, id_value, identities, props = [], [], [], []
        for i, combination in enumerate(idvals):
            k = keys_json.get(combination)
            if k is None:
                keys = self._keys(combination)  # in priority order, as the graph was given them
                k = keys_json[combination] = (keys[0][0], keys[0][1], orjson.dumps(keys).decode())
            id_type.append(k[0])
            id_value.append(k[1])
            identities.append(k[2])
            props.append(
                orjson.dumps(
                    {"traits": {key: col[i] for key, col in zip(traits, tvals, strict=True) if col[i] is not None}}
                ).decode()
            )
        n = len(idvals)
        return pa.table(
            {
                "event_id": data.column("_mid"),
                "person_id": pa.array(people, pa.string()),
                "identity_type": pa.array(id_type, pa.string()),
                "identity_value": pa.array(id_value, pa.string()),
                "identities": pa.array(identities, pa.string()),
                "message_type": pa.array(["identify"] * n, pa.string()),
                "name": pa.array(["$identify"] * n, pa.string()),
                "ts": data.column("_ts").cast(pa.timestamp("us", tz="UTC")),
                "properties": pa.array(props, pa.string()),
                "source": pa.array([self.source] * n, pa.string()),
                "received_at": pa.array([self.now] * n, pa.timestamp("us", tz="UTC")),
            },
            schema=EVENTS_ARROW,
        )

    # -- orders --------------------------------------------------------------------------------
    def orders(self, progress: Callable[[int], None] | None) -> Outcome:
        con = self.con
        has = self.by_role.__contains__
        id_cols, _, checks = self._identities()
        oid, status, amount = self._col("order_id"), self._col("status"), self._col("amount_fen")
        discount = self._col("discount_fen") if has("discount_fen") else "NULL::BIGINT"
        refund = self._col("refund_fen") if has("refund_fen") else "NULL::BIGINT"
        paid_at = self._col("paid_at") if has("paid_at") else "NULL::TIMESTAMPTZ"
        upd = self._col("updated_at") if has("updated_at") else "NULL::TIMESTAMPTZ"
        channel = self._col("channel") if has("channel") else "NULL::VARCHAR"
        items = self._col("items") if has("items") else "NULL"
        item_type = self.table.schema.field(self.by_role["items"]).type.value_type if has("items") else None
        category = "x.category" if item_type is not None and "category" in item_type.names else "NULL::VARCHAR"
        paid_set = ", ".join(_lit(s) for s in sorted(PAID_STATUSES))
        big = 10**12
        checks += [
            f"{oid} IS NULL OR {oid} = '' OR length({oid}) > 64 OR regexp_matches({oid}, {_lit(_CONTROL)})",
            f"{status} IS NULL OR {status} NOT IN ({', '.join(_lit(s) for s in _STATUSES)})",
            f"{amount} IS NULL OR {amount} < 0 OR {amount} > {big}",
            f"{discount} < 0 OR {discount} > {big} OR {refund} < 0 OR {refund} > {big}",
            f"coalesce({refund}, 0) > {amount}",
            f"{status} IN ({paid_set}) AND {paid_at} IS NULL",
            f"{status} = 'refunded' AND coalesce({refund}, 0) = 0",
            f"length({channel}) > 64 OR regexp_matches({channel}, {_lit(_CONTROL)})",
            *self._ts_checks(paid_at),
            *self._ts_checks(upd),
            self._size_check(),
        ]
        if item_type is not None:
            checks.append(f"len({items}) > 500")
            checks.append(
                f"list_bool_or(list_transform({items}, lambda x: x IS NULL OR x.sku IS NULL OR x.sku = '' "
                f"OR length(x.sku) > 64 OR regexp_matches(x.sku, {_lit(_CONTROL)}) "
                f"OR length({category}) > 64 OR regexp_matches({category}, {_lit(_CONTROL)}) "
                "OR x.quantity IS NULL OR x.quantity < 1 OR x.quantity > 100000 "
                f"OR x.price_fen IS NULL OR x.price_fen < 0 OR x.price_fen > {10**10}))"
            )
        suspect = " OR ".join(f"coalesce({c}, false)" for c in checks)
        now = f"TIMESTAMPTZ '{self.now.isoformat()}'"
        items_norm = (
            f"coalesce(list_transform({items}, lambda x: {{'sku': x.sku, 'category': {category}, "
            "'quantity': x.quantity::INTEGER, 'price_fen': x.price_fen::BIGINT}), [])"
            if item_type is not None
            else "[]::STRUCT(sku VARCHAR, category VARCHAR, quantity INTEGER, price_fen BIGINT)[]"
        )
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _chk AS
            SELECT * EXCLUDE (_s0), _s0 OR {self._no_identity()} AS _suspect,
                   coalesce(_upd_raw, _paid, {now}) AS _upd
            FROM (SELECT _row, (_row - 1) // {self.chunk_rows} AS _chunk, {oid} AS _oid, {status} AS _status,
                         {paid_at}::TIMESTAMPTZ AS _paid, {upd}::TIMESTAMPTZ AS _upd_raw,
                         {amount}::BIGINT AS _amount, coalesce({discount}, 0)::BIGINT AS _discount,
                         coalesce({refund}, 0)::BIGINT AS _refund, {channel} AS _channel,
                         {items_norm} AS _items, ({suspect}) AS _s0{", " + id_cols if id_cols else ""}
                  FROM _src)""")
        self.timer.lap("read+check")
        rejects, rejected = self._reject_suspects("orders")
        self.timer.lap("suspects")

        # The row path's content hash: sha256 of the order's JSON (keys sorted), its first 32 hex digits.
        def iso(col: str) -> str:
            return (
                f"CASE WHEN {col} IS NULL THEN 'null' ELSE '\"' || strftime({col}, '%Y-%m-%dT%H:%M:%S') || "
                f"CASE WHEN epoch_us({col}) % 1000000 = 0 THEN '' "
                f"ELSE '.' || lpad((epoch_us({col}) % 1000000)::VARCHAR, 6, '0') END || '+00:00\"' END"
            )

        def text(col: str) -> str:
            return f"coalesce('\"' || replace(replace({col}, '\\', '\\\\'), '\"', '\\\"') || '\"', 'null')"

        item_json = (
            "'{\"category\":' || " + text("x.category") + " || ',\"price_fen\":' || x.price_fen || "
            "',\"quantity\":' || x.quantity || ',\"sku\":' || " + text("x.sku") + " || '}'"
        )
        body = (
            "'{\"amount_fen\":' || _amount || ',\"channel\":' || " + text("_channel") + " || "
            "',\"discount_fen\":' || _discount || ',\"items\":[' || "
            f"array_to_string(list_transform(_items, lambda x: {item_json}), ',') || "
            "'],\"order_id\":' || " + text("_oid") + " || ',\"paid_at\":' || " + iso("_paid") + " || "
            "',\"refund_fen\":' || _refund || ',\"status\":' || " + text("_status") + " || "
            "',\"updated_at\":' || " + iso("_upd_raw") + " || '}'"
        )
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _fresh AS
            SELECT *, left(sha256({body}), 32) AS _hash,
                   row_number() OVER (ORDER BY _chunk, _upd, _row) AS _seq,
                   count(*) OVER (PARTITION BY _oid) AS _copies
            FROM _chk WHERE NOT _suspect""")
        self.timer.lap("content hash")
        valid = _scalar(con, "SELECT count(*) FROM _fresh")
        # Versions: each row against the order's latest state, stored or earlier in the file.
        con.execute("""CREATE OR REPLACE TEMP TABLE _latest AS
            SELECT o.order_id, o.version, o.status, o.updated_at, o.content_hash, o.refund_fen
            FROM orders o WHERE o.order_id IN (SELECT _oid FROM _fresh)
            QUALIFY row_number() OVER (PARTITION BY o.order_id ORDER BY o.version DESC) = 1""")
        single = con.sql(f"""SELECT f._seq,
                CASE WHEN l.order_id IS NULL THEN 'new' WHEN l.content_hash = f._hash THEN 'duplicate'
                     WHEN l.updated_at > f._upd THEN 'stale' ELSE 'new' END AS fate,
                coalesce(l.version, 0) + 1 AS version, l.status AS prev_status,
                coalesce(l.status IN ({paid_set}), false) AS was_paid, coalesce(l.refund_fen, 0) AS old_refund
            FROM _fresh f LEFT JOIN _latest l ON l.order_id = f._oid WHERE f._copies = 1""").to_arrow_table()
        decided: dict[str, list[Any]] = {
            "_seq": single.column("_seq").to_pylist(),
            "fate": single.column("fate").to_pylist(),
            "version": single.column("version").to_pylist(),
            "prev_status": single.column("prev_status").to_pylist(),
            "was_paid": single.column("was_paid").to_pylist(),
            "old_refund": single.column("old_refund").to_pylist(),
        }
        many = con.execute("""SELECT f._seq, f._oid, f._hash, f._upd, f._status, f._refund,
                l.version, l.status, l.updated_at, l.content_hash, l.refund_fen
            FROM _fresh f LEFT JOIN _latest l ON l.order_id = f._oid WHERE f._copies > 1 ORDER BY f._seq""").fetchall()
        state: dict[str, tuple[int, str | None, datetime, str, int, bool]] = {}
        for seq, order_id, content, updated, st, ref, l_ver, l_st, l_upd, l_hash, l_ref in many:
            prev = state.get(order_id)
            if prev is None and l_ver is not None:
                prev = (l_ver, l_st, l_upd, l_hash, l_ref, l_st in PAID_STATUSES)
            if prev is not None and prev[3] == content:
                fate = "duplicate"
            elif prev is not None and prev[2] > updated:
                fate = "stale"
            else:
                fate = "new"
                state[order_id] = (
                    (prev[0] if prev else 0) + 1,
                    st,
                    updated,
                    content,
                    max(prev[4] if prev else 0, ref),
                    (prev[5] if prev else False) or st in PAID_STATUSES,
                )
            decided["_seq"].append(seq)
            decided["fate"].append(fate)
            decided["version"].append((prev[0] if prev else 0) + 1)
            decided["prev_status"].append(prev[1] if prev else None)
            decided["was_paid"].append(prev[5] if prev else False)
            decided["old_refund"].append(prev[4] if prev else 0)
        con.register(
            "_decided",
            pa.table(
                decided,
                schema=pa.schema(
                    [
                        ("_seq", pa.int64()),
                        ("fate", pa.string()),
                        ("version", pa.int64()),
                        ("prev_status", pa.string()),
                        ("was_paid", pa.bool_()),
                        ("old_refund", pa.int64()),
                    ]
                ),
            ),
        )
        counts = dict(con.execute("SELECT fate, count(*) FROM _decided GROUP BY fate").fetchall())
        result = IngestResult(duplicates=int(counts.get("duplicate", 0)), stale=int(counts.get("stale", 0)))
        fresh = valid - result.duplicates - result.stale
        self.timer.lap("versions")
        if progress:
            progress(rejected + result.duplicates + result.stale)
        if not fresh:
            return result, rejected, rejects

        # Identity graph: once per distinct combination, in (chunk, updated_at, row) order.
        ids = ", ".join(f"f._{r}" for r in self.present)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _orows AS
            SELECT f.*, d.version, d.prev_status, d.was_paid, d.old_refund, coalesce(f._paid, f._upd) AS _seen,
                   dense_rank() OVER (ORDER BY f._chunk, {ids}) AS _combo,
                   dense_rank() OVER (ORDER BY {ids}) AS _file_combo
            FROM _fresh f JOIN _decided d USING (_seq) WHERE d.fate = 'new'""")
        # As the row path: each chunk its own resolution, in (updated_at, row) order within it; a
        # combination's sighting at its first row's time, a second one only to widen the span to
        # an earlier row.
        id_list = ", ".join(f"_{r}" for r in self.present)

        def combo_sightings(combo: str) -> pa.Table:
            """One sighting per ``combo`` (``_combo``: per chunk; ``_file_combo``: the whole file as chunk 0)."""
            per_chunk = combo == "_combo"  # a combination's chunk and identities depend on it alone
            chunk, group = ("_chunk", f"_combo, _chunk, {id_list}") if per_chunk else ("0", f"{combo}, {id_list}")
            return con.sql(f"""WITH c AS (
                    SELECT {combo} AS _combo, {chunk} AS _chunk, {id_list}, arg_min(_seen, _seq) AS _at,
                           min(_seen) AS _lo, max(_seen) AS _hi, 'order:' || arg_min(_oid, _seq) AS mid,
                           min(_seq) AS k
                    FROM _orows GROUP BY {group})
                SELECT * FROM (
                    SELECT _combo, _chunk, {id_list}, _at AS _first, _hi AS _last, mid, k, 0 AS _extra FROM c
                    UNION ALL
                    SELECT NULL, _chunk, {id_list}, _lo, _lo, mid, k, 1 FROM c WHERE _lo < _at)
                ORDER BY k, _extra""").to_arrow_table()

        stamp = pa.timestamp("us", tz="UTC")

        def columns(part: pa.Table) -> SightingColumns:
            return SightingColumns(
                identities={r: part.column(f"_{r}") for r in self.present},
                first=part.column("_first").cast(stamp),
                last=part.column("_last").cast(stamp),
                message_id=part.column("mid"),
            )

        rules = self.ingestor.rules
        with self.ingestor.engine.connect() as conn:  # closing it rolls back a transaction left open
            ops = conn.begin()
            # When no combination of the whole file needs the graph (new persons made of new
            # identities only, or stored persons no other combination touches: the orders of known
            # customers), the chunks cannot change the outcome (first / last seen are a minimum and
            # a maximum) and the file is resolved at once; otherwise chunk by chunk, as the row path.
            sightings = combo_sightings("_file_combo")
            partition = partition_sightings(conn, rules, columns(sightings))
            simple, known = partition.shortcuts()
            at_once = bool((simple | known).all())
            combo_key = "_file_combo" if at_once else "_combo"  # how each order row finds its person
            if not at_once:
                sightings = combo_sightings("_combo")
            self.timer.lap("combos (resolved " + ("at once)" if at_once else "chunk by chunk)"))
            chunks = sightings.column("_chunk").to_numpy()
            bounds = [0, *(np.flatnonzero(chunks[1:] != chunks[:-1]) + 1).tolist(), len(chunks)]
            resolved: list[str] = []
            for lo, hi in itertools.pairwise(bounds):
                part = sightings.slice(lo, hi - lo)
                resolution = resolve_columns(
                    conn,
                    rules,
                    columns(part),
                    trait_strategies=self.settings.trait_strategies,
                    now=self.now,
                    make_id=self.ingestor.make_id,
                    partition=partition if at_once else None,  # at once: the same sightings
                )
                result.count(resolution)
                resolved += resolution.people

            main = pc.equal(sightings.column("_extra"), 0)
            combos = sightings.filter(main)
            keyed = [
                self._keys(values)
                for values in zip(*(combos.column(f"_{r}").to_pylist() for r in self.present), strict=True)
            ]
            con.register(
                "_people",
                pa.table(
                    {
                        "_combo": combos.column("_combo").cast(pa.int64()),
                        "_person": pa.array(resolved, pa.string()).filter(main),
                        "_id_type": pa.array([k[0][0] for k in keyed], pa.string()),
                        "_id_value": pa.array([k[0][1] for k in keyed], pa.string()),
                        "_ids": pa.array([orjson.dumps(k).decode() for k in keyed], pa.string()),
                    }
                ),
            )
            self.timer.lap("identity graph")

            # SQLite commits (and copies its write-ahead log back) while DuckDB stores the orders
            # and their events, which need only each row's person. The ops transaction commits
            # before the DuckDB one, which applies the change feed.
            with self.store.transaction() as tx:
                with alongside(ops.commit):
                    self._insert_orders(tx, combo_key, paid_set)
                self.timer.lap("orders + events insert (ops commit alongside)")
                conn.close()  # back to the pool, its page cache warm, before the change feed takes one
                apply_changes(self.ingestor.engine, self.store, tx)
        self.timer.lap("change feed")
        self.ingestor.after_commit(lambda names: _order_events(con, self.now, self.source, names))
        self.store.forget_seen_index()
        result.accepted = fresh
        if progress:
            progress(fresh)
        return result, rejected, rejects

    def _insert_orders(self, tx: Any, combo_key: str, paid_set: str) -> None:
        """Store the new order rows (``_orows``, each finding its person in ``_people`` by
        ``combo_key``) and their events in ``tx``; fold the events' times into first / last seen."""
        received = f"TIMESTAMPTZ '{self.now.isoformat()}'"
        src = _lit(self.source)
        common = "'order_id', o._oid, 'channel', o._channel"
        head = "o._person, o._id_type, o._id_value, o._ids, 'order'"
        tx.execute(f"""CREATE OR REPLACE TEMP TABLE _orows2 AS
            SELECT r.*, p._person, p._id_type, p._id_value, p._ids
            FROM _orows r JOIN _people p ON p._combo = r.{combo_key}""")
        tx.execute(f"""INSERT INTO orders BY NAME SELECT _oid AS order_id, version, _person AS person_id,
                _status AS status, _paid AS paid_at, _amount AS amount_fen, _discount AS discount_fen,
                _refund AS refund_fen, _items AS items, _channel AS channel, _upd AS updated_at,
                _hash AS content_hash, {src} AS source, {received} AS received_at
            FROM _orows2 ORDER BY _seq""")
        tx.execute(f"""CREATE OR REPLACE TEMP TABLE _oev AS
            SELECT u.*, {src} AS source, {received} AS received_at FROM (
            SELECT {_uuid5("'order_paid' || chr(31) || o._oid")} AS event_id, {head} AS message_type,
                'order_paid' AS name, o._paid AS ts,
                json_object({common}, 'amount_fen', o._amount, 'discount_fen', o._discount,
                    'item_count', coalesce(list_sum(list_transform(o._items, lambda x: x.quantity)), 0),
                    'skus', list_sort(list_distinct(list_transform(o._items, lambda x: x.sku))),
                    'categories', list_sort(list_distinct(list_filter(
                        list_transform(o._items, lambda x: x.category), lambda c: c IS NOT NULL AND c <> '')))
                )::VARCHAR
                    AS properties
            FROM _orows2 o WHERE o._status IN ({paid_set}) AND NOT o.was_paid AND o._paid IS NOT NULL
            UNION ALL
            SELECT {_uuid5("'order_refunded' || chr(31) || o._oid || chr(31) || o._refund::VARCHAR")},
                {head}, 'order_refunded', o._upd,
                json_object({common}, 'refund_fen', o._refund - o.old_refund,
                    'total_refund_fen', o._refund)::VARCHAR
            FROM _orows2 o WHERE o._refund > o.old_refund
            UNION ALL
            SELECT {_uuid5("'order_cancelled' || chr(31) || o._oid")}, {head}, 'order_cancelled', o._upd,
                json_object({common})::VARCHAR
            FROM _orows2 o WHERE o._status = 'cancelled' AND o.version > 1 AND o.prev_status <> 'cancelled'
            ) u(event_id, person_id, identity_type, identity_value, identities, message_type, name, ts,
                properties)""")
        self.store.append_event_relation(tx, "_oev")
        fold_seen(
            tx,
            "(SELECT person_id, min(ts) AS first, max(ts) AS last FROM _oev GROUP BY person_id)",
        )


def _order_events(con: Any, received_at: datetime, source: str, names: frozenset[str]) -> pa.Table:
    from siyu.ingest.bulk import _stored_events

    return _stored_events(con, received_at, source, names)


def _json_bytes(col: str) -> str:
    """At least the bytes of a string's JSON (\\u escapes at most 6 bytes a character)."""
    return f"(strlen({col}) * CASE WHEN regexp_matches({col}, '[\\x00-\\x1f\"\\\\]') THEN 6 ELSE 1 END + 2)"


def _scalar_value(value: Any) -> Any:
    """The row path's reading of a CSV/Parquet text cell (:func:`siyu.ingest.files._scalar`)."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 15 and (value == "0" or value[0] != "0"):
        return int(value)
    return value
