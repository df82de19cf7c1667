"""Segment membership in the event store: who is in each saved segment, since when, and the history.

``segment_membership(segment_id, person_id, entered_at, exited_at)`` holds one row per stay in a
segment; the current members are the rows with ``exited_at IS NULL``. Every change is also an event
(``segment_entered`` / ``segment_exited``, ``message_type = 'change'`` so ``did any`` never counts
it) for automation to react to.

A refresh computes the new member sets and writes the differences in one DuckDB transaction (all
the segments refreshed together in the same one, decision 017):

* **incremental** once the segment has been computed: only persons with new events, orders or
  changes since the segment's watermark — and, for definitions that read the time (``in last``,
  ``… ago``), persons with a timestamp in the span each such moment moved over since the last
  refresh (:func:`time_anchors`) — are re-evaluated, on small temporary copies of their rows;
* **full** for the first computation, when asked, or when the clock went backwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import ibis
import pyarrow as pa

from siyu.segments.compile import TABLE_NAMES, Context, compile_segment, shift, window_start
from siyu.segments.engine import logical_tables
from siyu.segments.nodes import (
    Between,
    Compare,
    Did,
    InLast,
    InList,
    InSegment,
    Node,
    RelativeDate,
    Step,
)
from siyu.segments.nodes import Sequence as SequenceNode
from siyu.store.events import EventStore

#: Temporary copies of the touched persons' rows, per logical table (segment membership is read
#: where it is: static members are stored, not derived).
TOUCHED_NAMES = {key: f"_seg_t_{key}" for key in TABLE_NAMES if key != "membership"}
#: The event columns the compiler reads.
TOUCHED_EVENT_COLUMNS = ("person_id", "message_type", "name", "ts", "properties")

#: Events a refresh writes itself: they do not make a person "touched" for the next refresh.
SEGMENT_EVENTS = ("segment_entered", "segment_exited")
_NOT_SEGMENT_EVENT = "name NOT IN ('segment_entered', 'segment_exited')"


def _values(node: Node) -> Iterable[Any]:
    """Every value and window below ``node`` (fields of dataclasses, recursively)."""
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, tuple):
            stack.extend(current)
        elif isinstance(current, Node):
            stack.extend(getattr(current, f) for f in current.__dataclass_fields__ if f != "span")


#: A moment relative to the time of evaluation: ``now − amount·unit`` (``(0, "h")`` is now itself).
Anchor = tuple[int, str]


def _with_references(tree: Node, definition: Callable[[str], Node | None]) -> Iterator[Any]:
    """Every value below ``tree`` and below the definitions of the segments it refers to (each once)."""
    seen: set[str] = set()
    stack = [tree]
    while stack:
        for value in _values(stack.pop()):
            yield value
            if isinstance(value, InSegment) and value.name not in seen:
                seen.add(value.name)
                other = definition(value.name)
                if other is not None:
                    stack.append(other)


def _relative_compare(value: Any, source: str) -> bool:
    """Whether ``value`` is a field condition on a ``source`` field with a relative date in it."""
    if not isinstance(value, Compare | InList | Between) or value.field.source != source:
        return False
    if isinstance(value, Compare):
        parts: tuple[Any, ...] = (value.value,)
    elif isinstance(value, InList):
        parts = value.values
    else:
        parts = (value.low, value.high)
    return any(isinstance(v, RelativeDate) for v in parts)


def time_anchors(tree: Node, definition: Callable[[str], Node | None]) -> tuple[set[Anchor], bool]:
    """Every moment relative to ``now`` that ``tree`` (or a segment it refers to) reads, and whether
    a trait is compared with one of them.

    Between two evaluations at ``P`` and ``N`` the result can only change, without new data, for
    persons with a timestamp between ``anchor(P)`` and ``anchor(N)`` for some anchor: the incremental
    refresh re-evaluates exactly those persons too.
    """
    anchors: set[Anchor] = set()
    traits = False
    for value in _with_references(tree, definition):
        if isinstance(value, InLast):
            anchors.update({(value.duration.amount, value.duration.unit), (0, "h")})
        elif isinstance(value, RelativeDate):
            anchors.add((value.amount, value.unit))
        traits = traits or _relative_compare(value, "trait")
    return anchors, traits


def anchor_ranges(
    anchors: set[Anchor], previous: datetime, now: datetime, tz: ZoneInfo
) -> tuple[tuple[datetime, datetime], ...]:
    """For each anchor, the span it moved over between ``previous`` and ``now`` (both ends included)."""
    return tuple(sorted({(shift(previous, -a, u, tz), shift(now, -a, u, tz)) for a, u in anchors}))


def needs_full_refresh(tree: Node, definition: Callable[[str], Node | None]) -> bool:
    """Whether ``tree`` (or a segment it refers to) can only be refreshed in full:

    * it names ``segment_entered`` / ``segment_exited`` — refreshes write those events themselves
      and do not count them as news;
    * it compares an event property with a relative date (``where at >= 30d ago``) — property
      values are not scanned for the spans of :func:`time_anchors`.
    """
    return any(
        (isinstance(value, Did | Step) and value.event in SEGMENT_EVENTS) or _relative_compare(value, "property")
        for value in _with_references(tree, definition)
    )


def events_since(trees: Iterable[Node], ctx: Context) -> datetime | None:
    """The earliest event time that ``trees`` can read when evaluated at ``ctx.now``, or None when
    they may read events of any time.

    Only ``did`` conditions and sequences read events, each from its window's start on (``first
    did`` needs a person's first row of that event: any time). A segment that ``trees`` refer to is
    read from the stored membership, not evaluated again. When nothing reads events, ``ctx.now``.

    A bound on the time alone, not per event name: events are stored in arrival order, so a time
    range skips whole row groups, while a filter on names still reads every row (measured on the
    benchmark store: 4–10× faster for 30 days, slower by 15 % for names OR a time).
    """
    earliest = ctx.now
    for tree in trees:
        for value in _values(tree):
            if isinstance(value, Did):
                start = None if value.mode == "first" else window_start(value.window, ctx)
            elif isinstance(value, SequenceNode):
                start = window_start(value.window, ctx)
            else:
                continue
            if start is None:
                return None
            earliest = min(earliest, start)
    return earliest


def merge_spans(spans: Iterable[tuple[datetime, datetime]]) -> tuple[tuple[datetime, datetime], ...]:
    """Overlapping or touching spans joined, in order (segments refreshed together share anchors,
    from slightly different previous refreshes: one range scan each instead of dozens)."""
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return tuple(merged)


@dataclass
class RefreshResult:
    """What one refresh changed."""

    segment_id: str
    mode: str  # "full" | "incremental" | "static"
    members: int
    entered: int
    exited: int
    evaluated: int  # persons evaluated (all, or the touched ones)
    seconds: float = 0.0
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        """For JSON output (CLI and API)."""
        return {
            "segment": self.name,
            "segment_id": self.segment_id,
            "mode": self.mode,
            "members": self.members,
            "entered": self.entered,
            "exited": self.exited,
            "evaluated": self.evaluated,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class RefreshItem:
    """One segment to refresh: ``segment`` has ``id`` and ``name``; see :meth:`Membership.refresh_many`."""

    segment: dict[str, Any]
    tree: Node
    incremental: bool
    static: bool = False


_BATCH_SCHEMA = pa.schema(
    [
        ("segment_id", pa.string()),
        ("name", pa.string()),
        ("touched", pa.bool_()),  # evaluated for the touched persons only (incremental), else for everyone
        ("refresh_id", pa.string()),
        ("props", pa.string()),
    ]
)


class Membership:
    """Reads and writes ``segment_membership`` on one event store (the single writer)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def current(self, segment_id: str) -> set[str]:
        """The current members' ids."""
        rows = self.store.cursor().execute(
            "SELECT person_id FROM segment_membership WHERE segment_id = ? AND exited_at IS NULL", [segment_id]
        )
        return {r[0] for r in rows.fetchall()}

    def count(self, segment_id: str) -> int:
        """How many current members."""
        row = (
            self.store.cursor()
            .execute("SELECT count(*) FROM segment_membership WHERE segment_id = ? AND exited_at IS NULL", [segment_id])
            .fetchone()
        )
        return int(row[0]) if row else 0

    def history(self, segment_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The latest entries and exits, newest first."""
        rows = (
            self.store.cursor()
            .execute(
                """SELECT person_id, 'entered' AS change, entered_at AS changed_at
               FROM segment_membership WHERE segment_id = $s
               UNION ALL
               SELECT person_id, 'exited', exited_at
               FROM segment_membership WHERE segment_id = $s AND exited_at IS NOT NULL
               ORDER BY changed_at DESC, person_id LIMIT $n""",
                {"s": segment_id, "n": limit},
            )
            .fetchall()
        )
        return [{"person_id": p, "change": c, "at": a.isoformat()} for p, c, a in rows]

    def forget(self, segment_id: str) -> None:
        """Drop a deleted segment's membership (its events stay: they happened)."""
        keys = [_watermark_key(segment_id), _now_key(segment_id)]
        with self.store.transaction() as con:
            con.execute("DELETE FROM segment_membership WHERE segment_id = ?", [segment_id])
            con.execute("DELETE FROM store_meta WHERE key IN (SELECT unnest(?::VARCHAR[]))", [keys])
        for key in keys:
            self.store.forget_meta(key)

    # -- refresh -----------------------------------------------------------------------------------
    def refresh_many(
        self,
        items: Sequence[RefreshItem],
        ctx: Context,
        *,
        ranges: tuple[tuple[datetime, datetime], ...] = (),
        trait_ranges: bool = False,
    ) -> list[RefreshResult]:
        """Recompute several segments' members at ``ctx.now`` and record who entered and who exited.

        Each item's ``incremental`` asks for the touched-persons path (only honoured when the
        segment has a watermark): persons with new rows since the watermark, plus persons with a
        timestamp in one of ``ranges`` (in ``trait_ranges`` too: datetime traits) — see
        :func:`time_anchors`. ``static`` freezes a segment that already has members.

        Every segment is evaluated first (into temporary tables); then the differences of all of
        them are written in **one** DuckDB transaction, with one statement per step for all the
        segments together (decision 017). If an evaluation fails nothing is written. Results come
        in the order of ``items``; a result's ``seconds`` is its own evaluation plus an equal share
        of the write (and of the copy of the touched rows, among the incremental ones).
        """
        with self.store.write_lock:
            self.store.settle()
            cur = self.store.cursor()
            try:
                return self._refresh_many(cur, items, ctx, (tuple(ranges), trait_ranges))
            finally:
                cur.close()

    def _refresh_many(
        self,
        cur: duckdb.DuckDBPyConnection,
        items: Sequence[RefreshItem],
        ctx: Context,
        touch: tuple[tuple[tuple[datetime, datetime], ...], bool],
    ) -> list[RefreshResult]:
        results: dict[int, RefreshResult] = {}
        high = cur.execute(f"SELECT max(received_at) FROM events WHERE {_NOT_SEGMENT_EVENT}").fetchall()[0][0]
        high_mark = high.isoformat() if high is not None else "1970-01-01T00:00:00+00:00"
        plans: list[tuple[int, RefreshItem, str, str | None]] = []  # (position, item, mode, watermark)
        for pos, item in enumerate(items):
            watermark = self.store.get_meta(_watermark_key(item.segment["id"]))
            if item.static and watermark is not None:
                sid = item.segment["id"]
                results[pos] = RefreshResult(sid, "static", self.count(sid), 0, 0, 0, name=item.segment["name"])
                continue
            mode = "incremental" if item.incremental and watermark is not None else "full"
            plans.append((pos, item, mode, watermark))
        if not plans:
            return [results[pos] for pos in range(len(items))]
        cur.execute("CREATE OR REPLACE TEMP TABLE _seg_new (segment_id VARCHAR, person_id VARCHAR)")
        batch: dict[str, list[Any]] = {"segment_id": [], "name": [], "touched": [], "refresh_id": [], "props": []}
        evaluation: dict[int, tuple[str, int, float]] = {}  # position → (mode, evaluated, seconds)
        # One copy of the touched persons' rows serves every incremental segment: those touched
        # since the oldest watermark include those touched since any later one.
        marks = [watermark for _, _, mode, watermark in plans if mode == "incremental" and watermark is not None]
        touched, copy_seconds = 0, 0.0
        if marks:
            started = time.perf_counter()
            since = events_since([item.tree for _, item, mode, _ in plans if mode == "incremental"], ctx)
            touched = self._touched(cur, min(marks, key=datetime.fromisoformat), *touch, events_since=since)
            copy_seconds = (time.perf_counter() - started) / len(marks)
        else:
            cur.execute("CREATE OR REPLACE TEMP TABLE _seg_touched (person_id VARCHAR)")
        everyone: int | None = None
        # Evaluated in the brand time zone (calendar months, date-times without an offset), as the
        # engine's counts are; everything written below carries explicit offsets.
        cur.execute(f"SET TimeZone = '{ctx.tz.key}'")
        try:
            for pos, item, mode, _ in plans:
                started = time.perf_counter()
                if mode == "incremental":
                    evaluated = touched
                    tables = logical_tables(self.store, TOUCHED_NAMES, {"events": TOUCHED_EVENT_COLUMNS})
                else:
                    if everyone is None:
                        everyone = _count(cur, "person_state")
                    evaluated = everyone
                    tables = logical_tables(self.store)
                sql = ibis.to_sql(compile_segment(item.tree, tables, ctx), dialect="duckdb", pretty=False)
                sid = item.segment["id"]
                cur.execute(f"INSERT INTO _seg_new SELECT DISTINCT $1::VARCHAR, person_id FROM ({sql})", [sid])
                batch["segment_id"].append(sid)
                batch["name"].append(item.segment["name"])
                batch["touched"].append(mode == "incremental")
                batch["refresh_id"].append(uuid.uuid4().hex)
                props = {"segment": item.segment["name"], "segment_id": sid}
                batch["props"].append(json.dumps(props, ensure_ascii=False))
                seconds = time.perf_counter() - started + (copy_seconds if mode == "incremental" else 0.0)
                evaluation[pos] = (mode, evaluated, seconds)
        finally:
            cur.execute("SET TimeZone = 'UTC'")
        started = time.perf_counter()
        changes = self._write_differences(cur, pa.table(batch, schema=_BATCH_SCHEMA), ctx.now, high_mark)
        share = (time.perf_counter() - started) / len(plans)
        for pos, item, _, _ in plans:
            sid = item.segment["id"]
            mode, evaluated, seconds = evaluation[pos]
            members, entered, exited = changes.get(sid, (0, 0, 0))
            results[pos] = RefreshResult(
                sid, mode, members, entered, exited, evaluated, seconds + share, name=item.segment["name"]
            )
        return [results[pos] for pos in range(len(items))]

    def _write_differences(
        self, cur: duckdb.DuckDBPyConnection, batch: pa.Table, now: datetime, high_mark: str
    ) -> dict[str, tuple[int, int, int]]:
        """Write the evaluated segments' entries and exits, events and watermarks in one transaction;
        per segment (members, entered, exited)."""
        at = now.astimezone(UTC).isoformat()
        sids = batch.column("segment_id").to_pylist()
        keys = [key(sid) for sid in sids for key in (_watermark_key, _now_key)]
        values = [value for _ in sids for value in (high_mark, at)]
        cur.register("_seg_batch", batch)
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                # Exits: current members among those evaluated (everyone for a full evaluation, else
                # the touched persons) no longer selected. Entries: selected persons not current
                # members (wherever they are: a reference may select beyond the touched persons).
                cur.execute("""CREATE OR REPLACE TEMP TABLE _seg_exit AS
                    SELECT m.segment_id, m.person_id FROM segment_membership m
                    JOIN _seg_batch b ON b.segment_id = m.segment_id
                    WHERE m.exited_at IS NULL
                      AND (NOT b.touched OR m.person_id IN (SELECT person_id FROM _seg_touched))
                      AND NOT EXISTS (SELECT 1 FROM _seg_new n
                                      WHERE n.segment_id = m.segment_id AND n.person_id = m.person_id)""")
                cur.execute("""CREATE OR REPLACE TEMP TABLE _seg_enter AS
                    SELECT segment_id, person_id FROM _seg_new n WHERE NOT EXISTS (
                        SELECT 1 FROM segment_membership m WHERE m.segment_id = n.segment_id
                        AND m.person_id = n.person_id AND m.exited_at IS NULL)""")
                cur.execute(
                    """UPDATE segment_membership SET exited_at = $at::TIMESTAMPTZ FROM _seg_exit x
                       WHERE segment_membership.segment_id = x.segment_id
                         AND segment_membership.person_id = x.person_id AND segment_membership.exited_at IS NULL""",
                    {"at": at},
                )
                cur.execute(
                    "INSERT INTO segment_membership SELECT segment_id, person_id, $at::TIMESTAMPTZ, NULL "
                    "FROM _seg_enter",
                    {"at": at},
                )
                cur.execute(
                    """INSERT INTO events BY NAME
                       SELECT 'seg-' || md5(b.refresh_id || c.name || c.person_id) AS event_id, c.person_id,
                              'change' AS message_type, c.name, $at::TIMESTAMPTZ AS ts, b.props AS properties,
                              'siyu' AS source, $at::TIMESTAMPTZ AS received_at
                       FROM (SELECT 'segment_entered' AS name, * FROM _seg_enter
                             UNION ALL SELECT 'segment_exited', * FROM _seg_exit) c
                       JOIN _seg_batch b USING (segment_id)""",
                    {"at": at},
                )
                cur.execute(
                    """INSERT INTO store_meta SELECT unnest($k::VARCHAR[]), unnest($v::VARCHAR[])
                       ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                    {"k": keys, "v": values},
                )
                moved = cur.execute("""SELECT segment_id, sum(entered)::BIGINT, sum(exited)::BIGINT FROM (
                        SELECT segment_id, 1 AS entered, 0 AS exited FROM _seg_enter
                        UNION ALL SELECT segment_id, 0, 1 FROM _seg_exit) GROUP BY segment_id""").fetchall()
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            members = dict(
                cur.execute("""SELECT segment_id, count(*) FROM segment_membership
                    WHERE exited_at IS NULL AND segment_id IN (SELECT segment_id FROM _seg_batch)
                    GROUP BY segment_id""").fetchall()
            )
        finally:
            cur.unregister("_seg_batch")
            for key in keys:
                self.store.forget_meta(key)
        counts = {sid: (entered, exited) for sid, entered, exited in moved}
        return {sid: (int(members.get(sid, 0)), *counts.get(sid, (0, 0))) for sid in sids}

    def previous_now(self, segment_id: str) -> datetime | None:
        """The ``now`` of the segment's last refresh."""
        value = self.store.get_meta(_now_key(segment_id))
        return datetime.fromisoformat(value) if value else None

    def _touched(
        self,
        cur: duckdb.DuckDBPyConnection,
        watermark: str,
        ranges: tuple[tuple[datetime, datetime], ...] = (),
        trait_ranges: bool = False,
        *,
        events_since: datetime | None = None,
    ) -> int:
        """Temporary copies of every table, restricted to persons with anything new since ``watermark``
        or a timestamp inside one of ``ranges``; of their events, only rows from ``events_since``
        on (:func:`events_since`; None: all)."""
        params: dict[str, Any] = {"w": watermark}
        spans = []
        for i, (low, high) in enumerate(ranges):
            params[f"l{i}"], params[f"h{i}"] = low, high
            spans.append(f"BETWEEN $l{i} AND $h{i}")

        def within(column: str) -> str:
            return " OR ".join(f"{column} {span}" for span in spans)

        timed = ""
        if spans:
            timed = f"""
                   UNION ALL SELECT person_id FROM events
                   WHERE ({within("ts")}) AND {_NOT_SEGMENT_EVENT}
                   UNION ALL SELECT person_id FROM orders WHERE {within("paid_at")}
                   UNION ALL SELECT person_id FROM person_state WHERE {within("first_seen")} OR {within("last_seen")}"""
            if trait_ranges:
                timed += f"""
                   UNION ALL SELECT person_id FROM trait_state WHERE {within("TRY_CAST(value_str AS TIMESTAMPTZ)")}"""
        cur.execute(
            f"""CREATE OR REPLACE TEMP TABLE _seg_touched AS
               SELECT DISTINCT coalesce(a.person_id, x.person_id) AS person_id FROM (
                   SELECT person_id FROM events
                   WHERE received_at > $w::TIMESTAMPTZ AND {_NOT_SEGMENT_EVENT}
                   UNION ALL SELECT person_id FROM orders WHERE received_at > $w::TIMESTAMPTZ{timed}
               ) x LEFT JOIN person_aliases a ON a.alias_id = x.person_id""",
            params,
        )
        # Only the columns the compiler reads from events: copying whole rows doubled the cost.
        for key, name in TOUCHED_NAMES.items():
            columns, kept, values = "*", "", None
            if key == "events":
                columns = ", ".join(TOUCHED_EVENT_COLUMNS)
                if events_since is not None:
                    kept, values = " AND ts >= $since", {"since": events_since}
            cur.execute(
                f"""CREATE OR REPLACE TEMP TABLE {name} AS SELECT {columns} FROM {TABLE_NAMES[key]}
                    WHERE person_id IN (SELECT person_id FROM _seg_touched){kept}""",
                values,
            )
        return _count(cur, "_seg_touched")


def _count(cur: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _now_key(segment_id: str) -> str:
    return f"segment_now:{segment_id}"


def _watermark_key(segment_id: str) -> str:
    return f"segment_watermark:{segment_id}"
