"""Checking a segment tree against a catalogue of what exists: names and types.

The catalogue is a plain object handed in by the caller (built from the tracking plan, the trait
registry, tags and saved segments); nothing here reads a store. Unknown names come back with "did
you mean …" suggestions; a value of the wrong type is an error, never a silently empty segment.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from siyu.segments.errors import Problem, SegmentValidationError
from siyu.segments.nodes import (
    FIELD_MEASURES,
    PERSON_FIELDS,
    AbsoluteDate,
    And,
    Between,
    Compare,
    Did,
    FieldCondition,
    FieldRef,
    HasTags,
    InGroup,
    InList,
    InSegment,
    IsSet,
    Node,
    Not,
    Or,
    Orders,
    RelativeDate,
    Sequence,
    Span,
    Value,
)

FieldType = Literal[
    "string",
    "number",
    "integer",
    "boolean",
    "datetime",
    "list",
    "list<string>",
    "list<number>",
    "list<integer>",
    "list<boolean>",
]
#: Every field type, in the order above: ``list<string>`` is a list of strings; a plain ``list``
#: says nothing about its elements, so ``contains`` takes any value there.
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
#: Types a list's elements can have.
LIST_ELEMENT_TYPES: tuple[str, ...] = tuple(t[5:-1] for t in FIELD_TYPES if t.startswith("list<"))


def is_list(kind: str) -> bool:
    """Whether a field of type ``kind`` holds a list (``list`` or ``list<…>``)."""
    return kind == "list" or kind.startswith("list<")


def element_type(kind: str) -> str | None:
    """The element type of ``list<…>`` (``list<string>`` → ``string``); None for any other type."""
    return kind[5:-1] if kind.startswith("list<") and kind.endswith(">") else None


#: Order fields usable in ``orders … where`` and as the field of ``sum`` / ``avg`` / ``min`` / ``max``.
#: ``category`` and ``sku`` match an order with at least one such item.
ORDER_FIELDS: dict[str, str] = {
    "amount_fen": "integer",
    "discount_fen": "integer",
    "refund_fen": "integer",
    "item_count": "integer",
    "channel": "string",
    "status": "string",
    "category": "string",
    "sku": "string",
}

#: Events siyu itself writes, with their property types (docs/concepts/data-model.md).
BUILTIN_EVENTS: dict[str, dict[str, str]] = {
    "order_paid": {
        "order_id": "string",
        "channel": "string",
        "amount_fen": "integer",
        "discount_fen": "integer",
        "item_count": "integer",
        "skus": "list<string>",
        "categories": "list<string>",
    },
    "order_refunded": {
        "order_id": "string",
        "channel": "string",
        "refund_fen": "integer",
        "total_refund_fen": "integer",
    },
    "order_cancelled": {"order_id": "string", "channel": "string"},
    "$identify": {},
    "$alias": {},
    "$trait_changed": {"key": "string", "old": "string", "new": "string", "message_id": "string"},
    "$identities_merged": {"from_person_id": "string", "into_person_id": "string", "reason": "string"},
    "$relation_added": {"staff_userid": "string", "external_userid": "string", "state": "string"},
    "$relation_deleted": {"staff_userid": "string", "external_userid": "string", "by": "string"},
    "$owner_changed": {"old": "string", "new": "string", "reason": "string"},
    "$group_joined": {"chat_id": "string"},
    "$group_left": {"chat_id": "string"},
    **{
        name: {
            "tag": "string",
            "tag_id": "string",
            "group": "string",
            "staff_userid": "string",
            "by": "string",
            "reason": "string",
            "source": "string",
        }
        for name in ("$tag_added", "$tag_removed")
    },
}

_TYPE_NAMES = {
    "string": ("文本", "text"),
    "number": ("数字", "a number"),
    "integer": ("整数", "an integer"),
    "boolean": ("布尔值", "a boolean"),
    "datetime": ("日期时间", "a date/time"),
    "list": ("列表", "a list"),
    "list<string>": ("文本列表", "a list of text"),
    "list<number>": ("数字列表", "a list of numbers"),
    "list<integer>": ("整数列表", "a list of integers"),
    "list<boolean>": ("布尔值列表", "a list of booleans"),
}
_SOURCE_NAMES = {
    "trait": ("客户属性", "trait"),
    "person": ("客户字段", "person field"),
    "property": ("事件属性", "event property"),
    "order": ("订单字段", "order field"),
}


@dataclass(frozen=True)
class Catalogue:
    """What a segment may refer to.

    ``traits`` and each event's properties map a name to a type (``string``, ``number``,
    ``integer``, ``boolean``, ``datetime``, ``list``, or a list whose elements have one type:
    ``list<string>``, ``list<number>``, ``list<integer>``, ``list<boolean>``). ``groups`` and
    ``staff`` are checked only when given. Person fields (``first_seen`` …) and ``order_fields`` are built in.
    """

    traits: Mapping[str, str] = field(default_factory=dict)
    events: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    tags: Collection[str] = ()
    segments: Collection[str] = ()
    groups: Collection[str] | None = None
    staff: Collection[str] | None = None
    order_fields: Mapping[str, str] = field(default_factory=lambda: dict(ORDER_FIELDS))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, builtin_events: bool = True) -> Catalogue:
        """A catalogue from plain JSON-like data with the same keys; adds :data:`BUILTIN_EVENTS`
        unless ``builtin_events`` is false. Raises ``ValueError`` on an unknown key or type."""
        unknown = set(data) - {"traits", "events", "tags", "segments", "groups", "staff", "order_fields"}
        if unknown:
            raise ValueError(f"unknown catalogue keys: {sorted(unknown)}")
        events = {**(BUILTIN_EVENTS if builtin_events else {}), **dict(data.get("events", {}))}
        catalogue = cls(
            traits=dict(data.get("traits", {})),
            events={k: dict(v) for k, v in events.items()},
            tags=frozenset(data.get("tags", ())),
            segments=frozenset(data.get("segments", ())),
            groups=frozenset(data["groups"]) if data.get("groups") is not None else None,
            staff=frozenset(data["staff"]) if data.get("staff") is not None else None,
            order_fields=dict(data.get("order_fields", ORDER_FIELDS)),
        )
        types = [*catalogue.traits.values(), *catalogue.order_fields.values()]
        types += [t for props in catalogue.events.values() for t in props.values()]
        bad = sorted({t for t in types if t not in FIELD_TYPES})
        if bad:
            raise ValueError(f"unknown field types {bad}; the types are {list(FIELD_TYPES)}")
        return catalogue


def suggest(name: str, candidates: Collection[str]) -> tuple[str, ...]:
    """Up to three known names close to ``name`` (case-insensitive first, then by similarity)."""
    folded = [c for c in candidates if c.casefold() == name.casefold() and c != name]
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return tuple(dict.fromkeys([*folded, *close]))[:3]


def _mean(suggestions: tuple[str, ...]) -> tuple[str, str]:
    if not suggestions:
        return "", ""
    shown = "、".join(f'"{s}"' for s in suggestions)
    return (
        f"，是不是 {shown}？",
        f"; did you mean {' or '.join(repr(s).replace(chr(39), chr(34)) for s in suggestions)}?",
    )


def _show(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, AbsoluteDate):
        return f'"{value.text}"'
    if isinstance(value, RelativeDate):
        return f"{value.amount}{value.unit} ago"
    return repr(value)


def _fits(value: Value, kind: str) -> bool:
    """Whether ``value`` can be compared with a field of type ``kind``."""
    if kind == "string":
        return isinstance(value, str | AbsoluteDate)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "datetime":
        return isinstance(value, AbsoluteDate | RelativeDate)
    return isinstance(value, str | int | float | bool | AbsoluteDate) and not isinstance(value, RelativeDate)


class _Checker:
    def __init__(self, catalogue: Catalogue) -> None:
        self.cat = catalogue
        self.problems: list[Problem] = []

    def add(
        self,
        code: str,
        path: str,
        zh: str,
        en: str,
        span: Span | None,
        name: str | None = None,
        sugg: tuple[str, ...] = (),
    ) -> None:
        self.problems.append(Problem(code, path, zh, en, name, sugg, span))

    def unknown(
        self, code: str, what: tuple[str, str], name: str, known: Collection[str], path: str, span: Span | None
    ) -> None:
        sugg = suggest(name, known)
        mzh, men = _mean(sugg)
        self.add(code, path, f'未知的{what[0]} "{name}"{mzh}', f'unknown {what[1]} "{name}"{men}', span, name, sugg)

    # -- fields ---------------------------------------------------------------------------------------
    def field_type(self, ref: FieldRef, path: str, props: Mapping[str, str] | None) -> str | None:
        if ref.source == "person":
            return PERSON_FIELDS.get(ref.name)
        tables: dict[str, Mapping[str, str]] = {"trait": self.cat.traits, "order": self.cat.order_fields}
        known = tables.get(ref.source, props or {})
        if ref.source == "property" and props is None:
            return None  # an unknown event was reported already; its properties cannot be checked
        if ref.name not in known:
            self.unknown(f"unknown_{ref.source}", _SOURCE_NAMES[ref.source], ref.name, known, f"{path}.field", ref.span)
            return None
        return known[ref.name]

    def mismatch(self, ref: FieldRef, kind: str, value: Value, path: str, span: Span | None) -> None:
        src_zh, src_en = _SOURCE_NAMES[ref.source]
        type_zh, type_en = _TYPE_NAMES[kind]
        hint_zh = hint_en = ""
        if kind == "datetime" and isinstance(value, str):
            hint_zh, hint_en = '（日期写作 "2026-01-01" 或 30d ago）', ' (write a date as "2026-01-01" or 30d ago)'
        elif kind in ("integer", "list<integer>") and ref.name.endswith("_fen"):
            hint_zh, hint_en = "（金额以整数分计）", " (money is whole fen)"
        if is_list(kind):
            what_zh, what_en = f"不能包含 {_show(value)}", f"cannot contain {_show(value)}"
        else:
            what_zh, what_en = f"不能与 {_show(value)} 比较", f"cannot be compared with {_show(value)}"
        self.add(
            "type_mismatch",
            path,
            f"{src_zh} {ref.name} 是{type_zh}，{what_zh}{hint_zh}",
            f"{src_en} {ref.name} is {type_en} and {what_en}{hint_en}",
            span,
            ref.name,
        )

    def bad_op(self, ref: FieldRef, kind: str, op: str, path: str, span: Span | None) -> None:
        type_zh, type_en = _TYPE_NAMES[kind]
        self.add(
            "bad_operator",
            path,
            f"{ref.name} 是{type_zh}，不能使用 {op}",
            f"{ref.name} is {type_en}; {op} does not apply",
            span,
            ref.name,
        )

    def field_condition(self, cond: FieldCondition, path: str, props: Mapping[str, str] | None = None) -> None:
        kind = self.field_type(cond.field, path, props)
        if kind is None:
            return
        span, ref = cond.span, cond.field
        if isinstance(cond, IsSet):
            return
        if isinstance(cond, Compare):
            if cond.op in ("contains", "not contains"):
                if kind != "string" and not is_list(kind):
                    return self.bad_op(ref, kind, cond.op, f"{path}.op", span)
                # A string holds text; a list holds elements of its element type (any, untyped).
                wanted = "string" if kind == "string" else (element_type(kind) or "list")
                if not _fits(cond.value, wanted):
                    return self.mismatch(ref, kind, cond.value, f"{path}.value", span)
                return None
            if cond.op in ("<", "<=", ">", ">=") and kind not in ("number", "integer", "datetime"):
                return self.bad_op(ref, kind, cond.op, f"{path}.op", span)
            if is_list(kind):
                return self.bad_op(ref, kind, cond.op, f"{path}.op", span)
            if not _fits(cond.value, kind):
                return self.mismatch(ref, kind, cond.value, f"{path}.value", span)
            return None
        if isinstance(cond, InList):
            if is_list(kind) or kind == "datetime":
                return self.bad_op(ref, kind, "not in" if cond.negated else "in", f"{path}.op", span)
            for i, value in enumerate(cond.values):
                if not _fits(value, kind):
                    return self.mismatch(ref, kind, value, f"{path}.values[{i}]", span)
            return None
        if kind not in ("number", "integer", "datetime"):
            return self.bad_op(ref, kind, "between", f"{path}.op", span)
        for key, value in (("low", cond.low), ("high", cond.high)):
            if not _fits(value, kind):
                return self.mismatch(ref, kind, value, f"{path}.{key}", span)
        low, high = cond.low, cond.high
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            self.add(
                "empty_range",
                path,
                f"{ref.name} between {_show(low)} and {_show(high)} 不可能成立（下限大于上限）",
                f"{ref.name} between {_show(low)} and {_show(high)} can never hold (low is above high)",
                span,
                ref.name,
            )
        return None

    # -- conditions ----------------------------------------------------------------------------------
    def event(self, event: str | None, path: str, span: Span | None) -> Mapping[str, str] | None:
        """The property types of ``event`` (for ``any``: every event's, merged), or None if unknown."""
        if event is None:
            return {k: v for props in self.cat.events.values() for k, v in props.items()}
        if event not in self.cat.events:
            self.unknown("unknown_event", ("事件", "event"), event, self.cat.events, path, span)
            return None
        return self.cat.events[event]

    def names(
        self,
        code: str,
        what: tuple[str, str],
        names: tuple[str, ...],
        known: Collection[str],
        path: str,
        span: Span | None,
    ) -> None:
        for i, name in enumerate(names):
            if name not in known:
                self.unknown(code, what, name, known, f"{path}[{i}]" if len(names) > 1 else path, span)

    def node(self, node: Node, path: str) -> None:
        if isinstance(node, And | Or):
            for i, item in enumerate(node.items):
                self.node(item, f"{path}.items[{i}]")
        elif isinstance(node, Not):
            self.node(node.item, f"{path}.item")
        elif isinstance(node, Compare | InList | Between | IsSet):
            if isinstance(node, Compare) and node.field == FieldRef("owner", "person"):
                self.owner(node, path)
            self.field_condition(node, path)
        elif isinstance(node, HasTags):
            self.names("unknown_tag", ("标签", "tag"), node.names, self.cat.tags, f"{path}.names", node.span)
        elif isinstance(node, Did):
            props = self.event(node.event, f"{path}.event", node.span)
            for i, cond in enumerate(node.where):
                self.field_condition(cond, f"{path}.where[{i}]", props)
        elif isinstance(node, Sequence):
            for s, step in enumerate(node.steps):
                props = self.event(step.event, f"{path}.steps[{s}].event", step.span or node.span)
                for i, cond in enumerate(step.where):
                    self.field_condition(cond, f"{path}.steps[{s}].where[{i}]", props)
        elif isinstance(node, Orders):
            self.orders(node, path)
        elif isinstance(node, InSegment):
            self.names(
                "unknown_segment", ("人群", "segment"), (node.name,), self.cat.segments, f"{path}.name", node.span
            )
        elif isinstance(node, InGroup) and self.cat.groups is not None:
            self.names("unknown_group", ("客户群", "group"), (node.name,), self.cat.groups, f"{path}.name", node.span)

    def owner(self, node: Compare, path: str) -> None:
        if self.cat.staff is not None and isinstance(node.value, str) and node.value not in self.cat.staff:
            self.unknown(
                "unknown_staff", ("员工", "staff member"), node.value, self.cat.staff, f"{path}.value", node.span
            )

    def orders(self, node: Orders, path: str) -> None:
        for i, cond in enumerate(node.where):
            self.field_condition(cond, f"{path}.where[{i}]")
        if node.measure in FIELD_MEASURES and node.field is not None:
            kind = self.cat.order_fields.get(node.field)
            if kind is None:
                self.unknown(
                    "unknown_order",
                    _SOURCE_NAMES["order"],
                    node.field,
                    self.cat.order_fields,
                    f"{path}.field",
                    node.span,
                )
            elif kind not in ("number", "integer"):
                self.bad_op(FieldRef(node.field, "order"), kind, node.measure, f"{path}.measure", node.span)
        needs_int = node.measure == "count" or ((node.field or "amount_fen").endswith("_fen") and node.measure != "avg")
        if needs_int and not isinstance(node.value, int):
            what = ("订单数", "an order count") if node.measure == "count" else ("金额（分）", "an amount in fen")
            self.add(
                "type_mismatch",
                f"{path}.value",
                f"orders {node.measure} 是{what[0]}，应为整数，却是 {_show(node.value)}",
                f"orders {node.measure} is {what[1]} and needs a whole number, not {_show(node.value)}",
                node.span,
            )


def check(tree: Node, catalogue: Catalogue | Mapping[str, Any]) -> list[Problem]:
    """Every problem of ``tree`` against ``catalogue`` (a :class:`Catalogue` or its plain-dict form)."""
    cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue.from_dict(catalogue)
    checker = _Checker(cat)
    checker.node(tree, "$")
    return checker.problems


def validate(tree: Node, catalogue: Catalogue | Mapping[str, Any]) -> None:
    """Raise :class:`~siyu.segments.errors.SegmentValidationError` if :func:`check` finds anything."""
    problems = check(tree, catalogue)
    if problems:
        raise SegmentValidationError(problems)


def _conditions(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, And | Or):
            stack.extend(current.items)
        elif isinstance(current, Not):
            stack.append(current.item)


def referenced_segments(tree: Node) -> set[str]:
    """Names of the segments ``tree`` refers to with ``in segment``."""
    return {n.name for n in _conditions(tree) if isinstance(n, InSegment)}
