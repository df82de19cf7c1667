"""The JSON form of a segment tree, for the API and the console.

Every condition is an object with a ``"type"``; see docs/segments.md for the full shape. ``to_json``
always writes every key; ``from_json`` accepts omitted optional keys, refuses unknown ones, and
names the exact place of any problem as a path such as ``$.items[1].where[0].op``.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from siyu.segments.errors import SegmentJsonError, SegmentLimitError
from siyu.segments.limits import DEFAULT_LIMITS, Limits
from siyu.segments.nodes import (
    COMPARE_OPS,
    COUNT_OPS,
    DID_MODES,
    FIELD_MEASURES,
    MAX_DURATION,
    MAX_INT,
    MEASURES,
    PERSON_FIELDS,
    TAG_MODES,
    UNITS,
    AbsoluteDate,
    And,
    Between,
    Compare,
    Condition,
    CountCondition,
    DateRange,
    DateValue,
    Did,
    Duration,
    Ever,
    FieldCondition,
    FieldRef,
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
    Window,
    as_date_literal,
)

Json = dict[str, Any]


# -- tree -> JSON ---------------------------------------------------------------------------------------
def _value(value: Value) -> Any:
    if isinstance(value, AbsoluteDate):
        return {"date": value.text}
    if isinstance(value, RelativeDate):
        return {"ago": {"amount": value.amount, "unit": value.unit}}
    return value


def _duration(duration: Duration) -> Json:
    return {"amount": duration.amount, "unit": duration.unit}


def _window(window: Window) -> Json:
    if isinstance(window, InLast):
        return {"type": "last", **_duration(window.duration)}
    if isinstance(window, DateRange):
        return {"type": "between", "start": _value(window.start), "end": _value(window.end)}
    return {"type": "ever"}


def _field(ref: FieldRef) -> Json:
    return {ref.source: ref.name}


def _field_condition(cond: FieldCondition) -> Json:
    if isinstance(cond, Compare):
        return {"type": "compare", "field": _field(cond.field), "op": cond.op, "value": _value(cond.value)}
    if isinstance(cond, InList):
        return {
            "type": "in",
            "field": _field(cond.field),
            "values": [_value(v) for v in cond.values],
            "negated": cond.negated,
        }
    if isinstance(cond, Between):
        return {"type": "between", "field": _field(cond.field), "low": _value(cond.low), "high": _value(cond.high)}
    return {"type": "is_set", "field": _field(cond.field), "negated": cond.negated}


def to_json(tree: Node) -> Json:
    """The JSON form of ``tree`` (plain dicts, lists, strings, numbers, booleans and None)."""
    if isinstance(tree, And | Or):
        return {"type": "and" if isinstance(tree, And) else "or", "items": [to_json(i) for i in tree.items]}
    if isinstance(tree, Not):
        return {"type": "not", "item": to_json(tree.item)}
    if isinstance(tree, Compare | InList | Between | IsSet):
        return _field_condition(tree)
    if isinstance(tree, HasTags):
        return {"type": "has_tags", "mode": tree.mode, "names": list(tree.names)}
    if isinstance(tree, Did):
        return {
            "type": "did",
            "mode": tree.mode,
            "event": tree.event,
            "count": {"op": tree.count.op, "value": tree.count.value} if tree.count else None,
            "where": [_field_condition(c) for c in tree.where],
            "window": _window(tree.window),
        }
    if isinstance(tree, Sequence):
        return {
            "type": "sequence",
            "steps": [{"event": s.event, "where": [_field_condition(c) for c in s.where]} for s in tree.steps],
            "within": _duration(tree.within),
            "window": _window(tree.window),
        }
    if isinstance(tree, Orders):
        return {
            "type": "orders",
            "measure": tree.measure,
            "field": tree.field,
            "where": [_field_condition(c) for c in tree.where],
            "op": tree.op,
            "value": tree.value,
            "window": _window(tree.window),
        }
    if isinstance(tree, InSegment | InGroup):
        return {"type": "in_segment" if isinstance(tree, InSegment) else "in_group", "name": tree.name}
    raise TypeError(f"not a segment condition: {type(tree).__name__}")


# -- JSON -> tree ---------------------------------------------------------------------------------------
def _type_zh(value: Any) -> str:
    return {dict: "对象", list: "数组", str: "字符串", bool: "布尔值", int: "整数", float: "数字"}.get(
        type(value), "null"
    )


def _type_en(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), "null")


def _parens(parent: str, child: Any) -> int:
    """1 if the canonical text puts ``child`` in parentheses under ``parent`` (see siyu.segments.text)."""
    kind = child.get("type") if isinstance(child, dict) else None
    if kind == "or" or (kind == "and" and parent in ("and", "not")):
        return 1
    return 0


class _Reader:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.nodes = 0

    def fail(self, path: str, zh: str, en: str) -> NoReturn:
        raise SegmentJsonError(path, zh, en)

    def count(self, path: str) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise SegmentLimitError("max_nodes", self.limits.max_nodes)

    def obj(self, data: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Json:
        if not isinstance(data, dict):
            self.fail(path, f"应为对象，却是{_type_zh(data)}", f"expected an object, found {_type_en(data)}")
        for key in required:
            if key not in data:
                self.fail(path, f'缺少 "{key}"', f'missing "{key}"')
        allowed = set(required) | set(optional)
        for key in data:
            if key not in allowed:
                expected = ", ".join(f'"{k}"' for k in (*required, *optional))
                self.fail(f"{path}.{key}", f"未知的键，可用的键：{expected}", f"unknown key; the keys are {expected}")
        return data

    def choice(self, data: Any, path: str, options: tuple[str, ...]) -> Any:
        if not isinstance(data, str) or data not in options:
            shown = ", ".join(f'"{o}"' for o in options)
            self.fail(path, f"应为 {shown} 之一", f"expected one of {shown}")
        return data

    def text(self, data: Any, path: str, *, allow_empty: bool = False) -> str:
        if not isinstance(data, str):
            self.fail(path, f"应为字符串，却是{_type_zh(data)}", f"expected a string, found {_type_en(data)}")
        if not data and not allow_empty:
            self.fail(path, "不能为空", "must not be empty")
        if len(data) > self.limits.max_length:
            raise SegmentLimitError("max_length", self.limits.max_length, len(data))
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in data):
            self.fail(path, "字符串含有无效的代理码点", "the string holds a surrogate code point")
        return data

    def integer(self, data: Any, path: str, low: int = -MAX_INT, high: int = MAX_INT) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail(path, f"应为整数，却是{_type_zh(data)}", f"expected an integer, found {_type_en(data)}")
        if not low <= data <= high:
            self.fail(path, f"应在 {low} 到 {high} 之间", f"must be between {low} and {high}")
        return data

    def number(self, data: Any, path: str) -> int | float:
        if isinstance(data, float):
            if not math.isfinite(data):
                self.fail(path, "数字必须是有限值", "the number must be finite")
            return data
        return self.integer(data, path)

    def items(self, data: Any, path: str, *, allow_empty: bool = False) -> list[Any]:
        if not isinstance(data, list):
            self.fail(path, f"应为数组，却是{_type_zh(data)}", f"expected an array, found {_type_en(data)}")
        if not data and not allow_empty:
            self.fail(path, "数组不能为空", "the array must not be empty")
        if len(data) > self.limits.max_list_items:
            raise SegmentLimitError("max_list_items", self.limits.max_list_items, len(data))
        return data

    # -- parts ----------------------------------------------------------------------------------------
    def duration(self, data: Any, path: str, *, lowest: int = 1) -> tuple[int, Any]:
        d = self.obj(data, path, ("amount", "unit"))
        unit = self.choice(d["unit"], f"{path}.unit", UNITS)
        return self.integer(d["amount"], f"{path}.amount", lowest, MAX_DURATION[unit]), unit

    def value(self, data: Any, path: str) -> Value:
        self.count(path)
        if isinstance(data, bool | int | float):
            return self.number(data, path) if not isinstance(data, bool) else data
        if isinstance(data, str):
            text = self.text(data, path, allow_empty=True)
            return as_date_literal(text) or text
        if isinstance(data, dict) and "date" in data:
            return self.date_value(data, path)
        if isinstance(data, dict) and "ago" in data:
            return self.date_value(data, path)
        self.fail(
            path,
            '应为字符串、数字、布尔值、{"date": …} 或 {"ago": …}',
            'expected a string, a number, a boolean, {"date": …} or {"ago": …}',
        )

    def date_value(self, data: Any, path: str) -> DateValue:
        if isinstance(data, dict) and "ago" in data:
            d = self.obj(data, path, ("ago",))
            amount, unit = self.duration(d["ago"], f"{path}.ago", lowest=0)
            return RelativeDate(amount, unit)
        if isinstance(data, dict):
            d = self.obj(data, path, ("date",))
            text, where = d["date"], f"{path}.date"
        else:
            text, where = data, path
        date = as_date_literal(self.text(text, where))
        if date is None:
            self.fail(where, '应为日期，如 "2026-01-01"', 'expected a date such as "2026-01-01"')
        return date

    def window(self, data: Any, path: str) -> Window:
        self.count(path)
        if not isinstance(data, dict) or "type" not in data:
            self.obj(data, path, ("type",))
        kind = self.choice(data.get("type"), f"{path}.type", ("last", "between", "ever"))
        if kind == "ever":
            self.obj(data, path, ("type",))
            return Ever()
        if kind == "between":
            d = self.obj(data, path, ("type", "start", "end"))
            return DateRange(self.date_value(d["start"], f"{path}.start"), self.date_value(d["end"], f"{path}.end"))
        d = self.obj(data, path, ("type", "amount", "unit"))
        amount, unit = self.duration({"amount": d["amount"], "unit": d["unit"]}, path)
        return InLast(Duration(amount, unit))

    def field_ref(self, data: Any, path: str, sources: tuple[str, ...]) -> FieldRef:
        if not isinstance(data, dict) or len(data) != 1:
            shown = " / ".join(f'{{"{s}": name}}' for s in sources)
            self.fail(path, f"应为 {shown}", f"expected {shown}")
        ((source, name),) = data.items()
        if source not in sources:
            shown = ", ".join(f'"{s}"' for s in sources)
            self.fail(
                f"{path}.{source}", f"这里的字段来源应为 {shown}", f"the field source here must be one of {shown}"
            )
        name = self.text(name, f"{path}.{source}")
        if source == "person" and name not in PERSON_FIELDS:
            shown = ", ".join(PERSON_FIELDS)
            self.fail(
                f"{path}.person", f"未知的客户字段，可用：{shown}", f"unknown person field; the fields are {shown}"
            )
        return FieldRef(name, source)

    def field_condition(self, data: Any, path: str, sources: tuple[str, ...]) -> FieldCondition:
        kind = data.get("type")
        field = lambda d: self.field_ref(d["field"], f"{path}.field", sources)  # noqa: E731
        if kind == "compare":
            d = self.obj(data, path, ("type", "field", "op", "value"))
            ref = field(d)
            return Compare(
                ref, self.choice(d["op"], f"{path}.op", COMPARE_OPS), self.value(d["value"], f"{path}.value")
            )
        if kind == "in":
            d = self.obj(data, path, ("type", "field", "values"), ("negated",))
            ref = field(d)
            values = tuple(
                self.value(v, f"{path}.values[{i}]") for i, v in enumerate(self.items(d["values"], f"{path}.values"))
            )
            return InList(ref, values, self.boolean(d.get("negated", False), f"{path}.negated"))
        if kind == "between":
            d = self.obj(data, path, ("type", "field", "low", "high"))
            ref = field(d)
            return Between(ref, self.value(d["low"], f"{path}.low"), self.value(d["high"], f"{path}.high"))
        d = self.obj(data, path, ("type", "field"), ("negated",))
        return IsSet(field(d), self.boolean(d.get("negated", False), f"{path}.negated"))

    def boolean(self, data: Any, path: str) -> bool:
        if not isinstance(data, bool):
            self.fail(path, f"应为布尔值，却是{_type_zh(data)}", f"expected a boolean, found {_type_en(data)}")
        return data

    def where(self, data: Any, path: str, source: str) -> tuple[FieldCondition, ...]:
        out = []
        for i, item in enumerate(self.items(data, path, allow_empty=True)):
            here = f"{path}[{i}]"
            self.count(here)
            self.obj(item, here, ("type",), ("field", "op", "value", "values", "negated", "low", "high"))
            self.choice(item["type"], f"{here}.type", ("compare", "in", "between", "is_set"))
            out.append(self.field_condition(item, here, (source,)))
        return tuple(out)

    def event(self, data: Any, path: str) -> str | None:
        return None if data is None else self.text(data, path)

    # -- conditions ---------------------------------------------------------------------------------
    def condition(self, data: Any, path: str, depth: int) -> Condition:
        self.count(path)
        # ``depth`` is the nesting the canonical text would have (each ``not`` and each pair of
        # parentheses), so a tree accepted here always re-parses under the same limits.
        if depth > self.limits.max_depth:
            raise SegmentLimitError("max_depth", self.limits.max_depth)
        if not isinstance(data, dict) or "type" not in data:
            self.obj(data, path, ("type",))
        kinds = ("and", "or", "not", "compare", "in", "between", "is_set", "has_tags", "did", "sequence", "orders")
        kind = self.choice(data.get("type"), f"{path}.type", (*kinds, "in_segment", "in_group"))
        if kind in ("and", "or"):
            d = self.obj(data, path, ("type", "items"))
            raw = self.items(d["items"], f"{path}.items")
            if len(raw) < 2:
                self.fail(f"{path}.items", "至少需要两项", "needs at least two items")
            items = tuple(
                self.condition(item, f"{path}.items[{i}]", depth + _parens(kind, item)) for i, item in enumerate(raw)
            )
            return And(items) if kind == "and" else Or(items)
        if kind == "not":
            d = self.obj(data, path, ("type", "item"))
            return Not(self.condition(d["item"], f"{path}.item", depth + 1 + _parens(kind, d["item"])))
        if kind in ("compare", "in", "between", "is_set"):
            return self.field_condition(data, path, ("trait", "person"))
        if kind == "has_tags":
            d = self.obj(data, path, ("type", "names"), ("mode",))
            names = tuple(
                self.text(n, f"{path}.names[{i}]") for i, n in enumerate(self.items(d["names"], f"{path}.names"))
            )
            return HasTags(names, self.choice(d.get("mode", "any"), f"{path}.mode", TAG_MODES))
        if kind == "did":
            return self.did(data, path)
        if kind == "sequence":
            return self.sequence(data, path)
        if kind == "orders":
            return self.orders(data, path)
        d = self.obj(data, path, ("type", "name"))
        name = self.text(d["name"], f"{path}.name")
        return InSegment(name) if kind == "in_segment" else InGroup(name)

    def did(self, data: Json, path: str) -> Did:
        d = self.obj(data, path, ("type", "event", "window"), ("mode", "count", "where"))
        mode = self.choice(d.get("mode", "did"), f"{path}.mode", DID_MODES)
        count = None
        if d.get("count") is not None:
            if mode != "did":
                self.fail(f"{path}.count", f'"{mode}" 不能带次数条件', f'mode "{mode}" takes no count')
            c = self.obj(d["count"], f"{path}.count", ("op", "value"))
            count = CountCondition(
                self.choice(c["op"], f"{path}.count.op", COUNT_OPS), self.integer(c["value"], f"{path}.count.value", 0)
            )
        return Did(
            self.event(d["event"], f"{path}.event"),
            self.window(d["window"], f"{path}.window"),
            mode,
            count,
            self.where(d.get("where", []), f"{path}.where", "property"),
        )

    def sequence(self, data: Json, path: str) -> Sequence:
        d = self.obj(data, path, ("type", "steps", "within"), ("window",))
        raw = self.items(d["steps"], f"{path}.steps")
        if len(raw) < 2:
            self.fail(f"{path}.steps", "序列至少需要两步", "a sequence needs at least two steps")
        steps = []
        for i, step in enumerate(raw):
            here = f"{path}.steps[{i}]"
            self.count(here)
            s = self.obj(step, here, ("event",), ("where",))
            steps.append(
                Step(
                    self.event(s["event"], f"{here}.event"), self.where(s.get("where", []), f"{here}.where", "property")
                )
            )
        amount, unit = self.duration(d["within"], f"{path}.within")
        window = self.window(d["window"], f"{path}.window") if "window" in d else Ever()
        return Sequence(tuple(steps), Duration(amount, unit), window)

    def orders(self, data: Json, path: str) -> Orders:
        d = self.obj(data, path, ("type", "measure", "op", "value"), ("field", "where", "window"))
        measure = self.choice(d["measure"], f"{path}.measure", MEASURES)
        field = d.get("field")
        if measure in FIELD_MEASURES:
            field = self.text(field, f"{path}.field")
        elif field is not None:
            self.fail(f"{path}.field", f'"{measure}" 不带字段', f'"{measure}" takes no field')
        return Orders(
            measure,
            self.choice(d["op"], f"{path}.op", COUNT_OPS),
            self.number(d["value"], f"{path}.value"),
            field,
            self.where(d.get("where", []), f"{path}.where", "order"),
            self.window(d["window"], f"{path}.window") if "window" in d else Ever(),
        )


def from_json(data: Any, *, limits: Limits = DEFAULT_LIMITS) -> Condition:
    """The tree of a JSON form (as made by :func:`to_json`, optional keys may be left out).

    Raises :class:`~siyu.segments.errors.SegmentJsonError` with the path of the first problem, or
    :class:`~siyu.segments.errors.SegmentLimitError`.
    """
    return _Reader(limits).condition(data, "$", 0)
