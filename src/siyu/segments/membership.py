"""Segment membership in the event store: who is in each saved segment, since when, and the history.

``segment_membership(segment_id, person_id, entered_at, exited_at)`` holds one row per stay in a
segment; the current members are the rows with ``exited_at IS NULL``. Every change is also an event
(``segment_entered`` / ``segment_exited``, ``message_type = 'change'`` so ``did any`` never counts
it) for automation to react to.

A refresh computes the new member set and writes the difference in one DuckDB transaction:

* **incremental** once the segment has been computed: only persons with new events, orders or
  changes since the segment's watermark — and, for definitions that read the time (``in last``,
  ``… ago``), persons with a timestamp in the span each such moment moved over since the last
  refresh (:func:`time_anchors`) — are re-evaluated, on small temporary copies of their rows;
* **full** for the first computation, when asked, or when the clock went backwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import ibis

from siyu.segments.compile import TABLE_NAMES, Context, compile_segment, shift
from siyu.segments.engine import logical_tables
from siyu.segments.nodes import Between, Compare, Did, InLast, InList, InSegment, Node, RelativeDate, Step
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


class Membership:
    """Reads and writes ``segment_membership`` on one event store (the single writer)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._batch: dict[str, Any] | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Refresh several segments in one go: one cursor, and the touched persons' rows copied once
        per watermark (segments refreshed together share it)."""
        with self.store.write_lock:
            self.store.settle()
            cur = self.store.cursor()
            self._batch = {"cur": cur, "touched": None, "high": None}
            try:
                yield
            finally:
                self._batch = None
                cur.close()

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
    def refresh(
        self,
        segment: dict[str, Any],
        tree: Node,
        ctx: Context,
        *,
        incremental: bool,
        static: bool = False,
        ranges: tuple[tuple[datetime, datetime], ...] = (),
        trait_ranges: bool = False,
    ) -> RefreshResult:
        """Recompute one segment's members at ``ctx.now`` and record who entered and who exited.

        ``segment`` has ``id`` and ``name``. ``incremental`` asks for the touched-persons path
        (only honoured when the segment has a watermark): persons with new rows since the watermark,
        plus persons with a timestamp in one of ``ranges`` (in ``trait_ranges`` too: datetime
        traits) — see :func:`time_anchors`. ``static`` freezes a segment that already has members.
        """
        touch = (tuple(ranges), trait_ranges)
        started = datetime.now(UTC)
        if self._batch is not None:
            cur = self._batch["cur"]
            return self._refresh(
                cur, segment, tree, ctx, incremental=incremental, static=static, started=started, touch=touch
            )
        with self.store.write_lock:
            self.store.settle()
            cur = self.store.cursor()
            try:
                return self._refresh(
                    cur, segment, tree, ctx, incremental=incremental, static=static, started=started, touch=touch
                )
            finally:
                cur.close()

    def _refresh(
        self,
        cur: duckdb.DuckDBPyConnection,
        segment: dict[str, Any],
        tree: Node,
        ctx: Context,
        *,
        incremental: bool,
        static: bool,
        started: datetime,
        touch: tuple[tuple[tuple[datetime, datetime], ...], bool],
    ) -> RefreshResult:
        sid = segment["id"]
        watermark = self.store.get_meta(_watermark_key(sid))
        has_members = watermark is not None
        if static and has_members:
            n = self.count(sid)
            return RefreshResult(sid, "static", n, 0, 0, 0, name=segment["name"])
        high_mark = self._batch["high"] if self._batch is not None else None
        if high_mark is None:
            high = cur.execute(f"SELECT max(received_at) FROM events WHERE {_NOT_SEGMENT_EVENT}").fetchall()[0][0]
            high_mark = high.isoformat() if high is not None else "1970-01-01T00:00:00+00:00"
            if self._batch is not None:
                self._batch["high"] = high_mark
        mode = "incremental" if incremental and has_members else "full"
        if mode == "incremental":
            key = (watermark, touch)
            if self._batch is not None and self._batch["touched"] is not None and self._batch["touched"][0] == key:
                evaluated = self._batch["touched"][1]
            else:
                evaluated = self._touched(cur, watermark or "", *touch)
                if self._batch is not None:
                    self._batch["touched"] = (key, evaluated)
            tables = logical_tables(self.store, TOUCHED_NAMES, {"events": TOUCHED_EVENT_COLUMNS})
        else:
            evaluated = _count(cur, "person_state")
            tables = logical_tables(self.store)
        sql = ibis.to_sql(compile_segment(tree, tables, ctx), dialect="duckdb", pretty=False)
        # Evaluated in the brand time zone (calendar months, date-times without an offset), as the
        # engine's counts are; everything written below carries explicit offsets.
        cur.execute(f"SET TimeZone = '{ctx.tz.key}'")
        try:
            cur.execute(f"CREATE OR REPLACE TEMP TABLE _seg_new AS {sql}")
        finally:
            cur.execute("SET TimeZone = 'UTC'")
        at = ctx.now.astimezone(UTC).isoformat()
        cur.execute("BEGIN TRANSACTION")
        try:
            scope = "person_id IN (SELECT person_id FROM _seg_touched)" if mode == "incremental" else "TRUE"
            cur.execute(
                f"""CREATE OR REPLACE TEMP TABLE _seg_exit AS
                    SELECT person_id FROM segment_membership
                    WHERE segment_id = $s AND exited_at IS NULL AND {scope}
                      AND person_id NOT IN (SELECT person_id FROM _seg_new)""",
                {"s": sid},
            )
            cur.execute(
                """CREATE OR REPLACE TEMP TABLE _seg_enter AS
                   SELECT person_id FROM _seg_new WHERE person_id NOT IN
                     (SELECT person_id FROM segment_membership WHERE segment_id = $s AND exited_at IS NULL)""",
                {"s": sid},
            )
            cur.execute(
                """UPDATE segment_membership SET exited_at = $at::TIMESTAMPTZ
                   WHERE segment_id = $s AND exited_at IS NULL AND person_id IN (SELECT person_id FROM _seg_exit)""",
                {"s": sid, "at": at},
            )
            cur.execute(
                "INSERT INTO segment_membership SELECT $s, person_id, $at::TIMESTAMPTZ, NULL FROM _seg_enter",
                {"s": sid, "at": at},
            )
            props = json.dumps({"segment": segment["name"], "segment_id": sid}, ensure_ascii=False)
            refresh_id = uuid.uuid4().hex
            for name, source in (("segment_entered", "_seg_enter"), ("segment_exited", "_seg_exit")):
                cur.execute(
                    f"""INSERT INTO events BY NAME
                        SELECT 'seg-' || md5($r || $n || person_id) AS event_id, person_id, 'change' AS message_type,
                               $n AS name, $at::TIMESTAMPTZ AS ts, $p AS properties, 'siyu' AS source,
                               $at::TIMESTAMPTZ AS received_at
                        FROM {source}""",
                    {"r": refresh_id, "n": name, "at": at, "p": props},
                )
            for meta_key, value in ((_watermark_key(sid), high_mark), (_now_key(sid), at)):
                cur.execute(
                    "INSERT INTO store_meta VALUES ($k, $v) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    {"k": meta_key, "v": value},
                )
            entered = _count(cur, "_seg_enter")
            exited = _count(cur, "_seg_exit")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self.store.forget_meta(_watermark_key(sid))
        self.store.forget_meta(_now_key(sid))
        members = self.count(sid)
        seconds = (datetime.now(UTC) - started).total_seconds()
        return RefreshResult(sid, mode, members, entered, exited, evaluated, seconds, name=segment["name"])

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
    ) -> int:
        """Temporary copies of every table, restricted to persons with anything new since ``watermark``
        or a timestamp inside one of ``ranges``."""
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
            columns = ", ".join(TOUCHED_EVENT_COLUMNS) if key == "events" else "*"
            cur.execute(
                f"""CREATE OR REPLACE TEMP TABLE {name} AS SELECT {columns} FROM {TABLE_NAMES[key]}
                    WHERE person_id IN (SELECT person_id FROM _seg_touched)"""
            )
        return _count(cur, "_seg_touched")


def _count(cur: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _now_key(segment_id: str) -> str:
    return f"segment_now:{segment_id}"


def _watermark_key(segment_id: str) -> str:
    return f"segment_watermark:{segment_id}"
