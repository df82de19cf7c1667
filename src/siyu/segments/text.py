"""Canonical text of a segment tree: ``parse(to_text(tree)) == tree`` for every valid tree.

Canonical means: one space between tokens, double quotes, ``where`` before the window, no ``times``,
``orders … ever`` written without ``ever``, parentheses only where precedence needs them (and
around an ``and`` inside an ``and`` / an ``or`` inside an ``or``, which keeps the tree's shape).
"""

from __future__ import annotations

import unicodedata

from siyu.segments.errors import SegmentSyntaxError
from siyu.segments.lexer import tokenize
from siyu.segments.nodes import (
    PERSON_FIELDS,
    AbsoluteDate,
    And,
    Between,
    Compare,
    DateRange,
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
    Sequence,
    Step,
    Value,
    Window,
)
from siyu.segments.parser import RESERVED

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(text: str) -> str:
    """``text`` as a double-quoted string literal."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cs"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def is_bare_name(name: str) -> bool:
    """Whether ``name`` can be written without quotes: one identifier token, not a reserved word."""
    if not name or name in RESERVED:
        return False
    try:
        tokens = tokenize(name)
    except SegmentSyntaxError:
        return False
    return len(tokens) == 2 and tokens[0].kind == "word" and tokens[0].value == name


def _name(name: str) -> str:
    return name if is_bare_name(name) else quote(name)


def _field(ref: FieldRef) -> str:
    if ref.source == "person":
        return ref.name
    if ref.source == "trait":
        return ref.name if is_bare_name(ref.name) and ref.name not in PERSON_FIELDS else f"trait {quote(ref.name)}"
    return _name(ref.name)


def _number(value: int | float) -> str:
    return repr(value)


def value_text(value: Value) -> str:
    """A value as written in the language."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, AbsoluteDate):
        return quote(value.text)
    return f"{value.amount}{value.unit} ago"


def _duration(duration: Duration) -> str:
    return f"{duration.amount}{duration.unit}"


def window_text(window: Window) -> str:
    """A window: ``in last 30d``, ``between "2026-01-01" and 7d ago``, ``ever``."""
    if isinstance(window, InLast):
        return f"in last {_duration(window.duration)}"
    if isinstance(window, DateRange):
        return f"between {value_text(window.start)} and {value_text(window.end)}"
    return "ever"


def _field_condition(cond: FieldCondition) -> str:
    field = _field(cond.field)
    if isinstance(cond, Compare):
        return f"{field} {cond.op} {value_text(cond.value)}"
    if isinstance(cond, InList):
        op = "not in" if cond.negated else "in"
        return f"{field} {op} ({', '.join(value_text(v) for v in cond.values)})"
    if isinstance(cond, Between):
        return f"{field} between {value_text(cond.low)} and {value_text(cond.high)}"
    return f"{field} is {'not ' if cond.negated else ''}set"


def _where(conds: tuple[FieldCondition, ...]) -> str:
    return f" where {' and '.join(_field_condition(c) for c in conds)}" if conds else ""


def _event(event: str | None) -> str:
    return "any" if event is None else _name(event)


def _step(step: Step) -> str:
    return _event(step.event) + _where(step.where)


def _atom(node: Node) -> str:
    if isinstance(node, Compare | InList | Between | IsSet):
        if isinstance(node, Compare) and node.field.source not in ("trait", "person"):
            raise ValueError(f"a {node.field.source} field outside where: {node.field.name!r}")
        return _field_condition(node)
    if isinstance(node, HasTags):
        if node.mode == "any" and len(node.names) == 1:
            return f"has tag {quote(node.names[0])}"
        words = {"any": "any tag", "all": "all tags", "none": "no tag"}[node.mode]
        return f"has {words} in ({', '.join(quote(n) for n in node.names)})"
    if isinstance(node, Did):
        prefix = {"did": "did", "never": "never did", "first": "first did"}[node.mode]
        count = f" {node.count.op} {node.count.value}" if node.count else ""
        return f"{prefix} {_event(node.event)}{count}{_where(node.where)} {window_text(node.window)}"
    if isinstance(node, Sequence):
        steps = " then ".join(_step(s) for s in node.steps)
        window = "" if isinstance(node.window, Ever) else f" {window_text(node.window)}"
        return f"did {steps} within {_duration(node.within)}{window}"
    if isinstance(node, Orders):
        field = f" {_name(node.field)}" if node.field is not None else ""
        window = "" if isinstance(node.window, Ever) else f" {window_text(node.window)}"
        return f"orders {node.measure}{field}{_where(node.where)} {node.op} {_number(node.value)}{window}"
    if isinstance(node, InSegment):
        return f"in segment {quote(node.name)}"
    if isinstance(node, InGroup):
        return f"in group {quote(node.name)}"
    raise TypeError(f"not a segment condition: {type(node).__name__}")


def to_text(tree: Node) -> str:
    """The canonical text of ``tree`` (a condition)."""
    if isinstance(tree, Or):
        return " or ".join(f"({to_text(i)})" if isinstance(i, Or) else to_text(i) for i in tree.items)
    if isinstance(tree, And):
        return " and ".join(f"({to_text(i)})" if isinstance(i, And | Or) else to_text(i) for i in tree.items)
    if isinstance(tree, Not):
        inner = to_text(tree.item)
        return f"not ({inner})" if isinstance(tree.item, And | Or) else f"not {inner}"
    return _atom(tree)
