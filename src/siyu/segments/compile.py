"""One compiler from a segment tree to an Ibis expression: the set of persons it selects.

The expression reads one logical schema — ``events`` (resolved to surviving persons), ``orders``
(current versions), and the person-state tables of decision 009 — so the same tree runs on DuckDB
and on Spark. Every condition becomes a one-column table of ``person_id``; ``and`` becomes semi
joins (anti joins for its ``not`` items), ``or`` a distinct union, ``not`` an anti join against the
universe (every current person).
The meaning of each condition is the list in docs/segments.md ("Precise meaning"); values from the
tree only ever enter the query as literals.
"""

from __future__ import annotations

import calendar
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir

from siyu.segments.nodes import (
    AbsoluteDate,
    And,
    Between,
    Compare,
    DateRange,
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
    Step,
    Value,
)
from siyu.segments.validate import Catalogue, is_list

#: The ISO-8601 shape a ``datetime`` property or trait must have (as date literals do); no
#: backslashes, so the pattern reads the same in every engine's SQL string literals.
ISO_DATETIME = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)

#: The comparison operators, for columns and plain values alike.
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

#: Statuses of an order that was never paid (it does not count as a paid order).
UNPAID = ("created", "cancelled")


class SegmentCompileError(ValueError):
    """A tree the compiler cannot turn into a query (e.g. a cycle through saved segments)."""


@dataclass(frozen=True)
class Tables:
    """The logical schema a segment reads, as Ibis tables of one backend."""

    events: ir.Table  # event_id, person_id (resolved), message_type, name, ts, properties (JSON text)
    orders: ir.Table  # orders_current: order_id, person_id (resolved), status, paid_at, amounts, items, channel
    person_state: ir.Table  # person_id, first_seen, last_seen, owner
    trait_state: ir.Table  # person_id, key, value (JSON text), value_str, value_num
    tag_state: ir.Table  # person_id, tag, staff_userid
    group_state: ir.Table  # person_id, chat_id
    membership: ir.Table | None = None  # segment_membership: segment_id, person_id, entered_at, exited_at

    @classmethod
    def from_backend(cls, backend: Any, names: Mapping[str, str] | None = None) -> Tables:
        """The tables of ``backend`` (an Ibis connection), under their default or given names."""
        chosen = {**TABLE_NAMES, **(names or {})}
        return cls(**{key: backend.table(name) for key, name in chosen.items()})


#: Each logical table and the event store's relation it is read from.
TABLE_NAMES: dict[str, str] = {
    "events": "events_resolved",
    "orders": "orders_current",
    "person_state": "person_state",
    "trait_state": "trait_state",
    "tag_state": "tag_state",
    "group_state": "group_state",
    "membership": "segment_membership",
}


@dataclass(frozen=True)
class Context:
    """What a compilation needs besides the tree: the time, the zone, the types, the references.

    ``segment`` returns a saved segment's definition (``None`` if unknown); ``static_id`` returns
    the id of a *static* segment, whose stored members are used instead of its definition.
    ``groups`` maps a group name to its chat ids.
    """

    now: datetime
    catalogue: Catalogue
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    segment: Callable[[str], Node | None] = lambda _name: None
    static_id: Callable[[str], str | None] = lambda _name: None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# -- time -------------------------------------------------------------------------------------------
def add_months(moment: datetime, months: int, tz: ZoneInfo) -> datetime:
    """``moment`` plus ``months`` calendar months read in ``tz`` (the day clamped to the month's end)."""
    local = moment.astimezone(tz)
    index = local.year * 12 + local.month - 1 + months
    year, month = divmod(index, 12)
    day = min(local.day, calendar.monthrange(year, month + 1)[1])
    return local.replace(year=year, month=month + 1, day=day).astimezone(moment.tzinfo)


#: Hours in one unit of a duration (months are calendar months, handled apart).
HOURS = {"h": 1, "d": 24, "w": 24 * 7}


def shift(moment: datetime, amount: int, unit: str, tz: ZoneInfo) -> datetime:
    """``moment`` moved by ``amount`` units (``h d w m``; negative goes back)."""
    if unit == "m":
        return add_months(moment, amount, tz)
    return moment + timedelta(hours=HOURS[unit] * amount)


def _day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tz)


def _instant(value: AbsoluteDate | RelativeDate, ctx: Context) -> datetime:
    if isinstance(value, RelativeDate):
        return shift(ctx.now, -value.amount, value.unit, ctx.tz)
    parsed = value.value
    if isinstance(parsed, datetime):
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=ctx.tz)
    return _day_start(parsed, ctx.tz)


def _bounds(value: AbsoluteDate | RelativeDate, ctx: Context) -> tuple[datetime, datetime | None]:
    """``(start, next_day_start)`` for a date-only value; ``(instant, None)`` otherwise."""
    if isinstance(value, AbsoluteDate) and len(value.text) == 10:
        day = date.fromisoformat(value.text)
        return _day_start(day, ctx.tz), _day_start(day + timedelta(days=1), ctx.tz)
    return _instant(value, ctx), None


def window_start(window: Node, ctx: Context) -> datetime | None:
    """The earliest moment ``window`` (``Ever``, ``InLast``, ``DateRange``) admits; None for ever."""
    if isinstance(window, Ever):
        return None
    if isinstance(window, InLast):
        return shift(ctx.now, -window.duration.amount, window.duration.unit, ctx.tz)
    assert isinstance(window, DateRange)
    return _bounds(window.start, ctx)[0]


def _window(ts: ir.TimestampValue, window: Node, ctx: Context) -> ir.BooleanValue | None:
    low = window_start(window, ctx)
    if low is None:
        return None
    if isinstance(window, InLast):
        return (ts >= low) & (ts <= ctx.now)
    assert isinstance(window, DateRange)
    high, next_day = _bounds(window.end, ctx)
    return (ts >= low) & ((ts < next_day) if next_day is not None else (ts <= high))


# -- typed values ------------------------------------------------------------------------------------
def _json_key(name: str) -> str:
    if '"' in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise SegmentCompileError(f"field names with quotes or control characters cannot be read: {name!r}")
    return f'"{name}"'


def _typed(json: ir.JSONValue, kind: str) -> ir.Value:
    """The JSON value as ``kind`` (NULL when it holds another JSON type)."""
    if kind == "string":
        return json.str
    if kind in ("number", "integer"):
        return json.float
    if kind == "boolean":
        return json.bool
    if kind == "datetime":
        text = json.str
        # Only the ISO shape literals have (nodes.AbsoluteDate): engines' casts accept other shapes
        # differently (Spark reads "2026" and "2026-01", DuckDB "2026-1-1"), and the meaning is one.
        return ibis.ifelse(text.re_search(ISO_DATETIME), text, ibis.null("string")).try_cast("timestamp('UTC')")
    return json.array


def _literal(value: Value) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _list_contains(items: ir.ArrayValue, value: Value) -> ir.BooleanValue:
    if isinstance(value, bool):
        return items.map(lambda x: x.bool).contains(value)
    if isinstance(value, int | float):
        return items.map(lambda x: x.float).contains(float(value))
    text = value.text if isinstance(value, AbsoluteDate) else value
    return items.map(lambda x: x.str).contains(text)


def _compare(column: ir.Value, kind: str, cond: FieldCondition, ctx: Context) -> ir.BooleanValue:
    """``cond`` over an already typed ``column`` (NULL makes it false, as documented)."""
    if isinstance(cond, IsSet):
        raise AssertionError("is set is handled by the caller")
    if isinstance(cond, InList):
        values = [_value(v, kind, ctx) for v in cond.values]
        if kind == "datetime":
            raise SegmentCompileError("in does not apply to dates")
        test = column.isin(values)
        return column.notnull() & ~test if cond.negated else test
    if isinstance(cond, Between):
        if kind == "datetime":
            low, _ = _bounds(cond.low, ctx)  # type: ignore[arg-type]
            high, next_day = _bounds(cond.high, ctx)  # type: ignore[arg-type]
            return (column >= low) & ((column < next_day) if next_day is not None else (column <= high))
        return column.between(_literal(cond.low), _literal(cond.high))
    op, value = cond.op, cond.value
    if op in ("contains", "not contains"):
        if is_list(kind):
            test = _list_contains(column, value)
        else:
            text = value.text if isinstance(value, AbsoluteDate) else str(value)
            test = column.contains(text)
        return column.notnull() & ~test if op == "not contains" else test
    if kind == "datetime" and isinstance(value, AbsoluteDate | RelativeDate):
        start, next_day = _bounds(value, ctx)
        if next_day is not None:  # a whole day
            return {
                "=": (column >= start) & (column < next_day),
                "!=": (column < start) | (column >= next_day),
                "<": column < start,
                "<=": column < next_day,
                ">": column >= next_day,
                ">=": column >= start,
            }[op]
        value_ = start
    else:
        value_ = _value(value, kind, ctx)
    return OPERATORS[op](column, value_)


def _value(value: Value, kind: str, ctx: Context) -> Any:
    if isinstance(value, AbsoluteDate):
        return _instant(value, ctx) if kind == "datetime" else value.text
    if isinstance(value, RelativeDate):
        return _instant(value, ctx)
    return _literal(value) if kind in ("number", "integer") else value


# -- the compiler ------------------------------------------------------------------------------------
class _Compiler:
    def __init__(self, tables: Tables, ctx: Context) -> None:
        self.t = tables
        self.ctx = ctx
        self.universe = self.ids(tables.person_state)
        self._stack: list[str] = []
        self._orders_paid: ir.Table | None = None

    @staticmethod
    def ids(table: ir.Table) -> ir.Table:
        """``person_id`` (as nullable text: set operations need equal schemas). Not made distinct
        here: semi / anti joins do not need it, and the result is made distinct once at the end."""
        return table.select(person_id=table.person_id.cast("string"))

    # -- boolean structure
    def node(self, node: Node) -> ir.Table:
        if isinstance(node, And):
            positive = [self.node(i) for i in node.items if not isinstance(i, Not)]
            negative = [self.node(i.item) for i in node.items if isinstance(i, Not)]
            # Semi / anti joins rather than INTERSECT / EXCEPT: the engine may reorder joins and
            # build its hash tables on the smaller sides (several times faster at 1M persons).
            out = positive[0] if positive else self.universe
            for other in positive[1:]:
                out = out.semi_join(other, "person_id")
            for other in negative:
                out = out.anti_join(other, "person_id")
            return out
        if isinstance(node, Or):
            parts = [self.node(i) for i in node.items]
            out = parts[0]
            for other in parts[1:]:
                out = out.union(other, distinct=True)
            return out
        if isinstance(node, Not):
            return self.universe.anti_join(self.node(node.item), "person_id")
        if isinstance(node, Compare | InList | Between | IsSet):
            return self.field(node)
        if isinstance(node, HasTags):
            return self.tags(node)
        if isinstance(node, Did):
            return self.did(node)
        if isinstance(node, Sequence):
            return self.sequence(node)
        if isinstance(node, Orders):
            return self.orders(node)
        if isinstance(node, InSegment):
            return self.in_segment(node)
        if isinstance(node, InGroup):
            chats = (node.name, *self.ctx.groups.get(node.name, ()))
            g = self.t.group_state
            return self.ids(g.filter(g.chat_id.isin(list(dict.fromkeys(chats)))))
        raise SegmentCompileError(f"cannot compile {type(node).__name__}")

    # -- traits and person fields
    def field(self, cond: FieldCondition) -> ir.Table:
        ref = cond.field
        if ref.source == "person":
            return self.person_field(cond)
        kind = self.ctx.catalogue.traits.get(ref.name, "string")
        t = self.t.trait_state
        rows = t.filter(t.key == ref.name)
        if isinstance(cond, IsSet):
            present = self.ids(rows)
            return self.universe.anti_join(present, "person_id") if cond.negated else present
        if kind == "string":
            column: ir.Value = rows.value_str  # typed columns: no JSON parsing per row
        elif kind in ("number", "integer"):
            column = rows.value_num
        else:
            column = _typed(rows.value.cast("json"), kind)
        return self.ids(rows.filter(_compare(column, kind, cond, self.ctx)))

    def person_field(self, cond: FieldCondition) -> ir.Table:
        name = cond.field.name
        if name in ("order_count", "total_spend_fen"):
            paid = self.paid_orders()
            if name == "order_count":
                agg = paid.group_by("person_id").aggregate(v=paid.count().cast("float64"))
            else:
                agg = paid.group_by("person_id").aggregate(v=(paid.amount_fen - paid.refund_fen).sum().cast("float64"))
            joined = self.universe.left_join(agg, "person_id").select("person_id", v=ibis.coalesce(agg.v, 0.0))
            if isinstance(cond, IsSet):
                return self.universe.filter(ibis.literal(False)) if cond.negated else self.universe
            return self.ids(joined.filter(_compare(joined.v, "number", cond, self.ctx)))
        p = self.t.person_state
        column = p[name]
        kind = "datetime" if name in ("first_seen", "last_seen") else "string"
        if isinstance(cond, IsSet):
            return self.ids(p.filter(column.isnull() if cond.negated else column.notnull()))
        return self.ids(p.filter(_compare(column, kind, cond, self.ctx)))

    # -- tags
    def tags(self, node: HasTags) -> ir.Table:
        t = self.t.tag_state
        held = t.filter(t.tag.isin(list(node.names)))
        if node.mode == "all":
            per = held.group_by("person_id").aggregate(n=held.tag.nunique())
            return self.ids(per.filter(per.n == len(set(node.names))))
        some = self.ids(held)
        return self.universe.anti_join(some, "person_id") if node.mode == "none" else some

    # -- behaviour
    def events_named(self, event: str | None) -> ir.Table:
        e = self.t.events
        if event is None:
            return e.filter(e.message_type != "change")
        return e.filter(e.name == event)

    def property_types(self, event: str | None) -> Mapping[str, str]:
        events = self.ctx.catalogue.events
        if event is None:
            return {k: v for props in events.values() for k, v in props.items()}
        return events.get(event, {})

    def where(self, rows: ir.Table, conds: tuple[FieldCondition, ...], event: str | None) -> ir.Table:
        types = self.property_types(event)
        for cond in conds:
            kind = types.get(cond.field.name, "string")
            raw = rows.properties.cast("json")[_json_key(cond.field.name)]
            if isinstance(cond, IsSet):
                present = raw.notnull() & (raw.cast("string") != "null")
                rows = rows.filter(~present if cond.negated else present)
            else:
                rows = rows.filter(_compare(_typed(raw, kind), kind, cond, self.ctx))
        return rows

    def did(self, node: Did) -> ir.Table:
        rows = self.events_named(node.event)
        if node.mode == "first":
            first = rows.group_by("person_id").aggregate(first_ts=rows.ts.min())
            rows = rows.join(first, "person_id").filter(lambda r: r.ts == r.first_ts)
        rows = self.where(rows, node.where, node.event)
        window = _window(rows.ts, node.window, self.ctx)
        if window is not None:
            rows = rows.filter(window)
        if node.count is None:
            found = self.ids(rows)
        else:
            found = self.counted(rows.group_by("person_id").aggregate(v=rows.count()), node.count.op, node.count.value)
        return self.universe.anti_join(found, "person_id") if node.mode == "never" else found

    def counted(self, agg: ir.Table, op: str, value: float, zero_counts: bool = True) -> ir.Table:
        """Persons whose aggregate ``v`` satisfies ``op value``; with ``zero_counts``, persons
        absent from ``agg`` have 0 and belong when ``0 op value`` holds."""
        hit = self.ids(agg.filter(OPERATORS[op](agg.v, value)))
        if zero_counts and OPERATORS[op](0, value):
            return hit.union(self.universe.anti_join(agg, "person_id"), distinct=True)
        return hit

    def step_rows(self, step: Step, window: Node) -> ir.Table:
        rows = self.where(self.events_named(step.event), step.where, step.event)
        test = _window(rows.ts, window, self.ctx)
        if test is not None:
            rows = rows.filter(test)
        return rows.select("person_id", "ts")

    def sequence(self, node: Sequence) -> ir.Table:
        first = self.step_rows(node.steps[0], node.window)
        chain = first.select(
            "person_id", start_ts=first.ts, last_ts=first.ts, limit_ts=_plus(first.ts, node.within)
        ).distinct()
        for step in node.steps[1:]:
            nxt = self.step_rows(step, node.window).rename(next_person="person_id", next_ts="ts")
            joined = chain.join(
                nxt,
                [chain.person_id == nxt.next_person, nxt.next_ts > chain.last_ts, nxt.next_ts <= chain.limit_ts],
            )
            # The earliest possible next step for each start is the best one (greedy is exact here).
            chain = joined.group_by(["person_id", "start_ts", "limit_ts"]).aggregate(last_ts=joined.next_ts.min())
        return self.ids(chain)

    # -- orders
    def paid_orders(self) -> ir.Table:
        if self._orders_paid is None:
            o = self.t.orders
            self._orders_paid = o.filter(o.paid_at.notnull() & ~o.status.isin(list(UNPAID)))
        return self._orders_paid

    @staticmethod
    def order_column(rows: ir.Table, name: str) -> ir.Value:
        """An order field as a comparable column (money and counts as float64, like JSON numbers)."""
        if name == "item_count":
            return rows["items"].map(lambda item: item.quantity).sums().fill_null(0).cast("float64")
        column = rows[name]
        return column.cast("float64") if name.endswith("_fen") else column

    def order_test(self, rows: ir.Table, cond: FieldCondition) -> ir.BooleanValue:
        name = cond.field.name
        if name in ("category", "sku"):
            items = rows["items"]

            def one(c: FieldCondition) -> Callable[[Any], ir.BooleanValue]:
                return lambda item: _compare(item[name], "string", c, self.ctx).fill_null(False)

            if isinstance(cond, IsSet):
                has = items.filter(lambda item: item[name].notnull()).length() > 0
                return ~has if cond.negated else has
            negated = (isinstance(cond, Compare) and cond.op in ("!=", "not contains")) or (
                isinstance(cond, InList) and cond.negated
            )
            positive: FieldCondition = cond
            if isinstance(cond, Compare) and negated:
                positive = Compare(cond.field, "=" if cond.op == "!=" else "contains", cond.value)
            elif isinstance(cond, InList) and negated:
                positive = InList(cond.field, cond.values)
            count = items.filter(one(positive)).length().fill_null(0)
            return count == 0 if negated else count > 0
        column = self.order_column(rows, name)
        kind = self.ctx.catalogue.order_fields.get(name, "string")
        if isinstance(cond, IsSet):
            return column.isnull() if cond.negated else column.notnull()
        return _compare(column, "number" if kind in ("integer", "number") else kind, cond, self.ctx)

    def orders(self, node: Orders) -> ir.Table:
        rows = self.paid_orders()
        test = _window(rows.paid_at, node.window, self.ctx)
        if test is not None:
            rows = rows.filter(test)
        for cond in node.where:
            rows = rows.filter(self.order_test(rows, cond))
        measure = node.measure
        if measure == "count":
            agg = rows.group_by("person_id").aggregate(v=rows.count().cast("float64"))
        else:
            column = self.order_column(rows, node.field or "amount_fen").cast("float64")
            reduce = {"sum": column.sum(), "avg": column.mean(), "aov": column.mean()}
            reduce.update({"min": column.min(), "max": column.max()})
            agg = rows.group_by("person_id").aggregate(v=reduce[measure])
        return self.counted(agg, node.op, float(node.value), zero_counts=measure in ("count", "sum"))

    # -- segments
    def in_segment(self, node: InSegment) -> ir.Table:
        static = self.ctx.static_id(node.name)
        if static is not None:
            m = self.t.membership
            if m is None:
                raise SegmentCompileError(f'人群 "{node.name}" 的成员不可用 / no stored members for "{node.name}"')
            return self.ids(m.filter((m.segment_id == static) & m.exited_at.isnull()))
        if node.name in self._stack:
            chain = " → ".join([*self._stack, node.name])
            raise SegmentCompileError(f"人群循环引用 / segment refers to itself: {chain}")
        tree = self.ctx.segment(node.name)
        if tree is None:
            raise SegmentCompileError(f'未知的人群 "{node.name}" / unknown segment "{node.name}"')
        self._stack.append(node.name)
        try:
            return self.node(tree)
        finally:
            self._stack.pop()


def _plus(ts: ir.TimestampValue, within: Duration) -> ir.TimestampValue:
    """``ts + within``; months are calendar months in the session time zone (the brand's)."""
    if within.unit == "m":
        return ts + ibis.interval(months=within.amount)
    return ts + ibis.interval(hours=HOURS[within.unit] * within.amount)


def compile_segment(tree: Node, tables: Tables, ctx: Context) -> ir.Table:
    """The persons ``tree`` selects, as an Ibis table with one column ``person_id`` (distinct)."""
    # Every person in the event store's tables is a current person (merges resolve to survivors,
    # an erasure deletes all of a person's rows in one transaction), so no final filter is needed.
    return _Compiler(tables, ctx).node(tree).distinct()
