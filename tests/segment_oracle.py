"""An independent plain-pandas evaluator of segment trees: the test oracle for the compiler.

It implements the section "Precise meaning（精确语义）" of docs/segments.md straight from the text,
over plain data frames, without DuckDB or Ibis and without reading the compiler. Correctness and
readability come first; conditions are vectorised where that is easy (windows, counts) and
otherwise evaluated row by row in Python.

Where the contract leaves room, the oracle takes the most literal reading:

- ``is set`` is "present and not JSON null", whatever the value's type (a trait ``age`` holding
  ``"abc"`` is set, but ``age = 3`` and ``age != 3`` are both false);
- ``integer`` and ``number`` accept any JSON number (``3.5`` stored for an ``integer`` property
  compares as ``3.5``); booleans are never numbers;
- a property name is one key of the ``properties`` object (``context.page`` is the key
  ``"context.page"``, not a path);
- for ``did any where p …`` the type of ``p`` is the one the catalogue gives for ``any`` (the
  union of every event's properties, as the validator reads it);
- ``within 6m`` adds calendar months to the first step's time read in the brand time zone (the
  day clamped), as ``6m ago`` subtracts them;
- ``category is set`` holds when at least one item has a non-null category (``is not set`` is
  its complement); ``category != "x"`` holds for an order without items;
- averages compare exactly (as fractions), never through a rounded float;
- ``in segment`` evaluates the named segment's definition at the same ``now`` (static segments
  are the caller's business: pass a tree that yields their stored members).
"""

from __future__ import annotations

import calendar
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from siyu.segments import Catalogue
from siyu.segments.nodes import (
    FIELD_MEASURES,
    PERSON_FIELDS,
    AbsoluteDate,
    And,
    Between,
    Compare,
    DateRange,
    DateValue,
    Did,
    Duration,
    Ever,
    FieldCondition,
    HasTags,
    InGroup,
    InLast,
    InList,
    InSegment,
    IsSet,
    Node,
    Not,
    Or,
    Orders,
    RelativeDate,
    Sequence,
    Value,
    Window,
)

#: Statuses of an order version that is not (or no longer) a paid order.
UNPAID_STATUSES = frozenset({"created", "cancelled"})

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Missing:
    """The marker of a value that is absent, JSON null, or of another type than the catalogue says."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass
class OracleData:
    """The raw data a segment is evaluated over (the shapes of the event store and the ops store).

    ``events``: ``event_id``, ``person_id`` (the person at write time), ``name``, ``ts`` (tz-aware
    UTC), ``properties`` (JSON text or None), ``message_type`` (``track``, ``identify``, ``alias``,
    ``order``, ``change``). ``aliases``: ``alias_id`` → ``person_id`` (flat). ``orders``: every
    version — ``order_id``, ``version``, ``person_id`` (write time), ``status``, ``paid_at``,
    ``amount_fen``, ``discount_fen``, ``refund_fen``, ``items`` (list of dicts ``sku``,
    ``category``, ``quantity``, ``price_fen``), ``channel``. ``persons``: ``person_id``, ``owner``.
    ``traits``: ``person_id``, ``key``, ``value`` (the Python value). ``tags``: ``person_id``,
    ``tag``, ``staff_userid`` (``''`` = on the person). ``groups``: ``person_id``, ``chat_id``,
    ``name``.
    """

    events: pd.DataFrame
    aliases: pd.DataFrame
    orders: pd.DataFrame
    persons: pd.DataFrame
    traits: pd.DataFrame
    tags: pd.DataFrame
    groups: pd.DataFrame


def empty_data() -> OracleData:
    """An :class:`OracleData` with every frame empty (with its columns), to fill in tests."""
    return OracleData(
        events=pd.DataFrame(
            {
                "event_id": pd.Series(dtype=object),
                "person_id": pd.Series(dtype=object),
                "name": pd.Series(dtype=object),
                "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                "properties": pd.Series(dtype=object),
                "message_type": pd.Series(dtype=object),
            }
        ),
        aliases=pd.DataFrame({"alias_id": pd.Series(dtype=object), "person_id": pd.Series(dtype=object)}),
        orders=pd.DataFrame(
            {
                "order_id": pd.Series(dtype=object),
                "version": pd.Series(dtype="int64"),
                "person_id": pd.Series(dtype=object),
                "status": pd.Series(dtype=object),
                "paid_at": pd.Series(dtype="datetime64[ns, UTC]"),
                "amount_fen": pd.Series(dtype="int64"),
                "discount_fen": pd.Series(dtype="int64"),
                "refund_fen": pd.Series(dtype="int64"),
                "items": pd.Series(dtype=object),
                "channel": pd.Series(dtype=object),
            }
        ),
        persons=pd.DataFrame({"person_id": pd.Series(dtype=object), "owner": pd.Series(dtype=object)}),
        traits=pd.DataFrame(
            {"person_id": pd.Series(dtype=object), "key": pd.Series(dtype=object), "value": pd.Series(dtype=object)}
        ),
        tags=pd.DataFrame(
            {
                "person_id": pd.Series(dtype=object),
                "tag": pd.Series(dtype=object),
                "staff_userid": pd.Series(dtype=object),
            }
        ),
        groups=pd.DataFrame(
            {"person_id": pd.Series(dtype=object), "chat_id": pd.Series(dtype=object), "name": pd.Series(dtype=object)}
        ),
    )


# -- plain values -------------------------------------------------------------------------------------
def _py(value: Any) -> Any:
    """A frame cell as a plain Python value: numpy scalars unwrapped, NaN / NaT / NA as None."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _utc(moment: datetime) -> pd.Timestamp:
    return pd.Timestamp(moment).tz_convert("UTC")


def _text(value: Value) -> Any:
    """A tree value as a plain comparable: the text of a date written where a string is meant."""
    return value.text if isinstance(value, AbsoluteDate) else value


def _json_equal(element: Any, value: Any) -> bool:
    """Whether a stored JSON value equals a tree value: same JSON type, numbers as numbers."""
    value = _text(value)
    if isinstance(value, bool) or isinstance(element, bool):
        return isinstance(value, bool) and isinstance(element, bool) and value == element
    if _is_number(value):
        return _is_number(element) and element == value
    return isinstance(element, str) and isinstance(value, str) and element == value


# -- time ---------------------------------------------------------------------------------------------
def add_months(moment: pd.Timestamp, months: int, tz: ZoneInfo) -> pd.Timestamp:
    """``moment`` read in ``tz`` plus ``months`` calendar months (negative: minus), the day clamped
    to the month's end, as a UTC instant."""
    local = moment.tz_convert(tz).to_pydatetime()
    index = local.year * 12 + (local.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    shifted = local.replace(tzinfo=None).replace(year=year, month=month, day=day)
    return _utc(shifted.replace(tzinfo=tz))


def shift(moment: pd.Timestamp, amount: int, unit: str, tz: ZoneInfo) -> pd.Timestamp:
    """``moment`` plus ``amount`` hours / days / weeks (exact lengths) or calendar months (``m``)."""
    if unit == "m":
        return add_months(moment, amount, tz)
    hours = {"h": 1, "d": 24, "w": 24 * 7}[unit]
    return moment + pd.Timedelta(hours=hours * amount)


def day_bounds(day: date, tz: ZoneInfo) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The start of ``day`` and of the next day in ``tz``, as UTC instants."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return _utc(start), _utc(end)


@dataclass(frozen=True)
class _Moment:
    """A resolved date value: an instant (``end`` None) or a whole day ``[start, end)``."""

    start: pd.Timestamp
    end: pd.Timestamp | None = None


_ISO_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?", re.ASCII)


def parse_instant(text: str, tz: ZoneInfo) -> pd.Timestamp | None:
    """An ISO-8601 string as a UTC instant (no offset: ``tz``); None if it is not one (of the
    documented shape: date, optional time to microseconds, optional ``Z`` or ``±hh:mm``)."""
    if not _ISO_SHAPE.fullmatch(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return _utc(parsed)


# -- the evaluator --------------------------------------------------------------------------------------
@dataclass
class _Context:
    data: OracleData
    catalogue: Catalogue
    now: pd.Timestamp
    tz: ZoneInfo
    segments: Mapping[str, Node]
    universe: frozenset[str] = frozenset()
    memo: dict[str, frozenset[str]] = field(default_factory=dict)
    evaluating: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        data = self.data
        self.alias = {str(a): str(p) for a, p in zip(data.aliases["alias_id"], data.aliases["person_id"], strict=True)}
        self.universe = frozenset(self.resolve(p) for p in data.persons["person_id"])
        self.owner: dict[str, Any] = {}
        for pid, owner in zip(data.persons["person_id"], data.persons["owner"], strict=True):
            if _py(owner) is not None:
                self.owner[self.resolve(pid)] = _py(owner)
        self._events()
        self._orders()
        self._traits()
        self.tags: dict[str, set[str]] = {}
        for pid, tag in zip(data.tags["person_id"], data.tags["tag"], strict=True):
            self.tags.setdefault(self.resolve(pid), set()).add(str(tag))
        self.groups: dict[str, set[str]] = {}
        memberships = zip(data.groups["person_id"], data.groups["chat_id"], data.groups["name"], strict=True)
        for pid, chat_id, name in memberships:
            keys = {str(k) for k in (_py(chat_id), _py(name)) if k is not None}
            self.groups.setdefault(self.resolve(pid), set()).update(keys)

    def resolve(self, person_id: Any) -> str:
        """The surviving person of ``person_id``."""
        pid = str(person_id)
        return self.alias.get(pid, pid)

    # -- preparation ---------------------------------------------------------------------------------
    def _events(self) -> None:
        events = self.data.events.reset_index(drop=True)
        frame = pd.DataFrame(
            {
                "person": pd.Series([self.resolve(p) for p in events["person_id"]], dtype=object),
                "name": events["name"].astype(object),
                "ts": pd.to_datetime(events["ts"], utc=True).dt.as_unit("ns"),
                "properties": events["properties"].astype(object),
                "change": events["message_type"].astype(object) == "change",
            }
        )
        frame = frame[frame["person"].isin(self.universe)].reset_index(drop=True)
        self.events = frame
        self._parsed: dict[int, Any] = {}
        # Sightings: every non-change event, plus the WeCom sightings (a contact added, a group joined).
        sightings = frame[~frame["change"] | frame["name"].isin(["$relation_added", "$group_joined"])]
        self.first_seen = sightings.groupby("person")["ts"].min().to_dict()
        self.last_seen = sightings.groupby("person")["ts"].max().to_dict()

    def _orders(self) -> None:
        orders = self.data.orders
        if len(orders):
            latest = orders.sort_values(["order_id", "version"]).groupby("order_id", sort=False).tail(1).copy()
        else:
            latest = orders.copy()
        latest["person"] = [self.resolve(p) for p in latest["person_id"]]
        latest["paid_at"] = pd.to_datetime(latest["paid_at"], utc=True).dt.as_unit("ns")
        paid = latest[latest["paid_at"].notna() & ~latest["status"].isin(UNPAID_STATUSES)]
        paid = paid[paid["person"].isin(self.universe)].copy()
        paid["item_count"] = [self._item_count(items) for items in paid["items"]]
        self.orders = paid.reset_index(drop=True)
        self.order_count: dict[str, int] = {}
        self.total_spend: dict[str, int] = {}
        for person, amount, refund in zip(paid["person"], paid["amount_fen"], paid["refund_fen"], strict=True):
            self.order_count[person] = self.order_count.get(person, 0) + 1
            spend = (_py(amount) or 0) - (_py(refund) or 0)
            self.total_spend[person] = self.total_spend.get(person, 0) + spend

    @staticmethod
    def _item_count(items: Any) -> int:
        if not isinstance(items, list | tuple | np.ndarray):
            return 0
        return sum(int(_py(i.get("quantity")) or 0) for i in items if isinstance(i, dict))

    def _traits(self) -> None:
        self.traits: dict[str, dict[str, Any]] = {}
        traits = self.data.traits
        # a survivor's own row wins over a row still filed under a merged id
        own_first = sorted(
            zip(traits["person_id"], traits["key"], traits["value"], strict=True),
            key=lambda row: str(row[0]) in self.alias,
        )
        for pid, key, value in own_first:
            self.traits.setdefault(str(key), {}).setdefault(self.resolve(pid), value)

    def properties(self, row: int) -> Any:
        """The parsed ``properties`` of event row ``row`` (None when absent or not JSON)."""
        if row not in self._parsed:
            raw = self.events.at[row, "properties"]
            parsed: Any = None
            if isinstance(raw, str):
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = None
            elif isinstance(raw, dict):
                parsed = raw
            self._parsed[row] = parsed
        return self._parsed[row]

    # -- dates and windows ---------------------------------------------------------------------------
    def moment(self, value: DateValue) -> _Moment:
        """A date value as an instant or a whole day."""
        if isinstance(value, RelativeDate):
            return _Moment(shift(self.now, -value.amount, value.unit, self.tz))
        parsed = value.value
        if isinstance(parsed, datetime):
            return _Moment(_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=self.tz)))
        start, end = day_bounds(parsed, self.tz)
        return _Moment(start, end)

    def window_mask(self, ts: pd.Series, window: Window) -> pd.Series:
        """Which of the instants ``ts`` lie in ``window``."""
        if isinstance(window, Ever):
            return pd.Series(True, index=ts.index)
        if isinstance(window, InLast):
            start = shift(self.now, -window.duration.amount, window.duration.unit, self.tz)
            return (ts >= start) & (ts <= self.now)
        assert isinstance(window, DateRange)
        low = self.moment(window.start)
        high = self.moment(window.end)
        upper = ts < high.end if high.end is not None else ts <= high.start
        return (ts >= low.start) & upper

    # -- typed values and field conditions -----------------------------------------------------------
    def typed(self, raw: Any, kind: str) -> Any:
        """``raw`` if it has the JSON type ``kind`` (datetime: parsed to an instant), else MISSING."""
        raw = _py(raw)
        if raw is None or raw is MISSING:
            return MISSING
        if kind == "string":
            return raw if isinstance(raw, str) else MISSING
        if kind in ("number", "integer"):
            return raw if _is_number(raw) else MISSING
        if kind == "boolean":
            return raw if isinstance(raw, bool) else MISSING
        if kind == "list":
            return list(raw) if isinstance(raw, list | tuple | np.ndarray) else MISSING
        if kind == "datetime":
            if isinstance(raw, datetime):
                return _utc(raw)
            if isinstance(raw, str):
                parsed = parse_instant(raw, self.tz)
                return MISSING if parsed is None else parsed
            return MISSING
        raise ValueError(f"unknown field type {kind!r}")

    def compare_datetime(self, value: pd.Timestamp, op: str, target: Value) -> bool:
        """``value op target`` for an instant, with a date-only target covering its whole day."""
        assert isinstance(target, AbsoluteDate | RelativeDate), target
        moment = self.moment(target)
        if moment.end is None:
            return _OPS[op](value, moment.start)
        inside = moment.start <= value < moment.end
        return {
            "=": inside,
            "!=": not inside,
            "<": value < moment.start,
            "<=": value < moment.end,
            ">": value >= moment.end,
            ">=": value >= moment.start,
        }[op]

    def equals(self, value: Any, kind: str, target: Value) -> bool:
        """``value = target`` for a typed value of ``kind``."""
        if kind == "datetime":
            return self.compare_datetime(value, "=", target)
        return _json_equal(value, target)

    def holds(self, cond: FieldCondition, raw: Any, kind: str) -> bool:
        """Whether the field condition holds for a stored value ``raw`` of a field of type ``kind``."""
        if isinstance(cond, IsSet):
            present = raw is not MISSING and _py(raw) is not None
            return present != cond.negated
        value = self.typed(raw, kind)
        if value is MISSING:
            return False
        if isinstance(cond, InList):
            found = any(self.equals(value, kind, v) for v in cond.values)
            return found != cond.negated
        if isinstance(cond, Between):
            if kind == "datetime":
                return self.compare_datetime(value, ">=", cond.low) and self.compare_datetime(value, "<=", cond.high)
            return bool(cond.low <= value <= cond.high)
        assert isinstance(cond, Compare)
        op = cond.op
        if op in ("contains", "not contains"):
            if kind == "list":
                found = any(_json_equal(element, cond.value) for element in value)
            else:
                found = str(_text(cond.value)) in value
            return found != (op == "not contains")
        if kind == "datetime":
            return self.compare_datetime(value, op, cond.value)
        if op in ("=", "!="):
            return _json_equal(value, cond.value) != (op == "!=")
        return bool(_OPS[op](value, cond.value))

    # -- person-level conditions -----------------------------------------------------------------------
    def person_value(self, name: str, person: str) -> Any:
        """A built-in person field of ``person`` (MISSING when not set)."""
        if name == "first_seen":
            return self.first_seen.get(person, MISSING)
        if name == "last_seen":
            return self.last_seen.get(person, MISSING)
        if name == "order_count":
            return self.order_count.get(person, 0)
        if name == "total_spend_fen":
            return self.total_spend.get(person, 0)
        if name == "owner":
            return self.owner.get(person, MISSING)
        raise ValueError(f"unknown person field {name!r}")

    def field_condition(self, cond: FieldCondition) -> set[str]:
        ref = cond.field
        if ref.source == "person":
            kind = PERSON_FIELDS[ref.name]
            return {p for p in self.universe if self.holds(cond, self.person_value(ref.name, p), kind)}
        if ref.source != "trait":
            raise ValueError(f"a {ref.source} field outside where: {ref.name!r}")
        kind = self.catalogue.traits[ref.name]
        values = self.traits.get(ref.name, {})
        return {p for p in self.universe if self.holds(cond, values.get(p, MISSING), kind)}

    def has_tags(self, node: HasTags) -> set[str]:
        wanted = set(node.names)
        if node.mode == "all":
            return {p for p in self.universe if wanted <= self.tags.get(p, set())}
        some = {p for p in self.universe if wanted & self.tags.get(p, set())}
        return some if node.mode == "any" else set(self.universe) - some

    # -- events ----------------------------------------------------------------------------------------
    def property_types(self, event: str | None) -> Mapping[str, str]:
        if event is None:
            return {k: v for props in self.catalogue.events.values() for k, v in props.items()}
        return self.catalogue.events[event]

    def named(self, event: str | None) -> pd.DataFrame:
        """The events called ``event``; for ``any``, every event except siyu's change events."""
        if event is None:
            return self.events[~self.events["change"]]
        return self.events[self.events["name"] == event]

    def where_mask(self, frame: pd.DataFrame, event: str | None, where: tuple[FieldCondition, ...]) -> pd.Series:
        """Which rows of ``frame`` (events) satisfy every ``where`` condition on their properties."""
        if not where:
            return pd.Series(True, index=frame.index)
        types = self.property_types(event)

        def ok(row: int) -> bool:
            props = self.properties(row)
            for cond in where:
                raw = props.get(cond.field.name, MISSING) if isinstance(props, dict) else MISSING
                if not self.holds(cond, raw, types[cond.field.name]):
                    return False
            return True

        return pd.Series([ok(int(i)) for i in frame.index], index=frame.index, dtype=bool)

    def matching(self, event: str | None, where: tuple[FieldCondition, ...], window: Window) -> pd.DataFrame:
        frame = self.named(event)
        frame = frame[self.window_mask(frame["ts"], window)]
        return frame[self.where_mask(frame, event, where)]

    def did(self, node: Did) -> set[str]:
        if node.count is not None and node.mode != "did":
            raise ValueError(f'"{node.mode} did" takes no count (the language cannot write it)')
        if node.mode == "first":
            return self.first_did(node)
        hits = self.matching(node.event, node.where, node.window)
        if node.count is None:
            found = set(hits["person"]) & self.universe
        else:
            counts = hits.groupby("person").size().to_dict()
            op, n = _OPS[node.count.op], node.count.value
            found = {p for p in self.universe if op(counts.get(p, 0), n)}
        return set(self.universe) - found if node.mode == "never" else found

    def first_did(self, node: Did) -> set[str]:
        frame = self.named(node.event)
        earliest = frame.groupby("person")["ts"].transform("min")
        firsts = frame[frame["ts"] == earliest]
        firsts = firsts[self.window_mask(firsts["ts"], node.window)]
        firsts = firsts[self.where_mask(firsts, node.event, node.where)]
        return set(firsts["person"])

    @staticmethod
    def times_by_person(hits: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each person's event times in ``hits``, sorted, as nanoseconds."""
        ordered = hits.sort_values(["person", "ts"])
        people = ordered["person"].to_numpy()
        times = ordered["ts"].dt.as_unit("ns").astype("int64").to_numpy()
        if not len(people):
            return {}
        starts = np.flatnonzero(np.r_[True, people[1:] != people[:-1]])
        ends = np.r_[starts[1:], len(people)]
        return {str(people[a]): times[a:b] for a, b in zip(starts, ends, strict=True)}

    def later_by(self, instants: np.ndarray, duration: Duration) -> np.ndarray:
        """Nanosecond instants plus ``duration`` (months: calendar months in the brand time zone)."""
        if duration.unit != "m":
            return instants + shift(pd.Timestamp(0, tz="UTC"), duration.amount, duration.unit, self.tz).value
        moved = [shift(pd.Timestamp(int(t), tz="UTC"), duration.amount, "m", self.tz).value for t in instants]
        return np.array(moved, dtype="int64")

    def sequence(self, node: Sequence) -> set[str]:
        steps: list[dict[str, np.ndarray]] = []
        for step in node.steps:
            hits = self.matching(step.event, step.where, node.window)
            steps.append(self.times_by_person(hits))
        found: set[str] = set()
        for person, firsts in steps[0].items():
            if not all(person in s for s in steps[1:]):
                continue
            bounds = self.later_by(firsts, node.within)
            current = firsts.copy()
            alive = np.ones(len(firsts), dtype=bool)
            for later in (s[person] for s in steps[1:]):
                # the earliest event strictly after the previous step leaves the most room for the rest
                index = np.searchsorted(later, current, side="right")
                alive &= index < len(later)
                current = later[np.minimum(index, len(later) - 1)]
                alive &= current <= bounds
            if alive.any():
                found.add(person)
        return found

    # -- orders ----------------------------------------------------------------------------------------
    def order_holds(self, cond: FieldCondition, row: Mapping[str, Any]) -> bool:
        name = cond.field.name
        if name in ("category", "sku"):
            items = row["items"] if isinstance(row["items"], list | tuple | np.ndarray) else []
            values = [_py(item.get(name)) for item in items if isinstance(item, dict)]
            if isinstance(cond, IsSet):
                return any(v is not None for v in values) != cond.negated
            positive: FieldCondition = cond
            negate = False
            if isinstance(cond, InList) and cond.negated:
                positive, negate = InList(cond.field, cond.values), True
            elif isinstance(cond, Compare) and cond.op in ("!=", "not contains"):
                positive, negate = Compare(cond.field, "=" if cond.op == "!=" else "contains", cond.value), True
            hit = any(self.holds(positive, v, "string") for v in values)
            return hit != negate
        return self.holds(cond, row[name], self.catalogue.order_fields[name])

    def orders_condition(self, node: Orders) -> set[str]:
        frame = self.orders[self.window_mask(self.orders["paid_at"], node.window)]
        if node.where:
            rows = frame.to_dict("records")
            mask = [all(self.order_holds(c, row) for c in node.where) for row in rows]
            frame = frame[pd.Series(mask, index=frame.index, dtype=bool)]
        if (node.field is None) == (node.measure in FIELD_MEASURES):
            raise ValueError(f"orders {node.measure} with field {node.field!r} (the language cannot write it)")
        column = "amount_fen" if node.measure == "aov" else node.field
        values: dict[str, list[Any]] = {}
        for row in frame.to_dict("records"):
            value = None if column is None else _py(row[column])
            if column is None or value is not None:
                values.setdefault(row["person"], []).append(value)
        op = _OPS[node.op]
        target = Fraction(node.value)
        found: set[str] = set()
        for person in self.universe:
            got = values.get(person, [])
            measure: Any
            if node.measure == "count":
                measure = len(got)
            elif node.measure == "sum":
                measure = sum(got)
            elif not got:
                continue  # avg / aov / min / max of no orders is unknown and never matches
            elif node.measure in ("avg", "aov"):
                measure = Fraction(sum(Fraction(v) for v in got), len(got))
            else:
                measure = min(got) if node.measure == "min" else max(got)
            if op(Fraction(measure), target):
                found.add(person)
        return found

    # -- the tree --------------------------------------------------------------------------------------
    def segment(self, name: str) -> frozenset[str]:
        if name in self.memo:
            return self.memo[name]
        if name in self.evaluating:
            raise ValueError(f"segment {name!r} refers to itself: {[*self.evaluating, name]}")
        if name not in self.segments:
            raise KeyError(f"unknown segment {name!r}")
        self.evaluating.append(name)
        try:
            result = frozenset(self.eval(self.segments[name]))
        finally:
            self.evaluating.pop()
        self.memo[name] = result
        return result

    def eval(self, node: Node) -> set[str]:
        if isinstance(node, And):
            result = set(self.universe)
            for item in node.items:
                result &= self.eval(item)
            return result
        if isinstance(node, Or):
            result = set()
            for item in node.items:
                result |= self.eval(item)
            return result
        if isinstance(node, Not):
            return set(self.universe) - self.eval(node.item)
        if isinstance(node, Compare | InList | Between | IsSet):
            return self.field_condition(node)
        if isinstance(node, HasTags):
            return self.has_tags(node)
        if isinstance(node, Did):
            return self.did(node)
        if isinstance(node, Sequence):
            return self.sequence(node)
        if isinstance(node, Orders):
            return self.orders_condition(node)
        if isinstance(node, InSegment):
            return set(self.segment(node.name))
        if isinstance(node, InGroup):
            return {p for p in self.universe if node.name in self.groups.get(p, set())}
        raise TypeError(f"not a segment condition: {type(node).__name__}")


def evaluate(
    tree: Node,
    data: OracleData,
    *,
    catalogue: Catalogue,
    now: datetime,
    tz: str = "Asia/Shanghai",
    segments: Mapping[str, Node] | None = None,
) -> set[str]:
    """The persons (ids from ``data.persons``) in the segment ``tree`` at ``now`` (tz-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be time-zone aware")
    context = _Context(data, catalogue, _utc(now), ZoneInfo(tz), segments or {})
    return context.eval(tree)


__all__ = ["MISSING", "OracleData", "add_months", "day_bounds", "empty_data", "evaluate", "shift"]
