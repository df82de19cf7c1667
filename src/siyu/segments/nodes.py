"""The segment tree: small, frozen, declarative node classes.

A parsed segment expression is a tree of these nodes. They hold *what the operator wrote*, already
disambiguated (which name is a trait, which a person field, which an event property), and nothing
else: no SQL, no engine types. The query compiler walks the tree; the JSON form
(:mod:`siyu.segments.jsonform`) and the canonical text (:mod:`siyu.segments.text`) are two other
spellings of the same tree.

Every node may carry the :class:`Span` of the text it came from. Spans are excluded from equality,
so ``parse(to_text(tree)) == tree`` holds although the positions differ.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, TypeAlias

Unit = Literal["h", "d", "w", "m"]
#: Duration units: hours, days, weeks, calendar months (``m`` is months, never minutes).
UNITS: tuple[Unit, ...] = ("h", "d", "w", "m")
#: The largest amount per unit (about 100 years), so date arithmetic can never overflow.
MAX_DURATION: dict[str, int] = {"h": 876_000, "d": 36_600, "w": 5_220, "m": 1_200}

CompareOp = Literal["=", "!=", "<", "<=", ">", ">=", "contains", "not contains"]
COMPARE_OPS: tuple[CompareOp, ...] = ("=", "!=", "<", "<=", ">", ">=", "contains", "not contains")
CountOp = Literal["=", "!=", "<", "<=", ">", ">="]
COUNT_OPS: tuple[CountOp, ...] = ("=", "!=", "<", "<=", ">", ">=")
FieldSource = Literal["trait", "person", "property", "order"]
FIELD_SOURCES: tuple[FieldSource, ...] = ("trait", "person", "property", "order")
TagMode = Literal["any", "all", "none"]
TAG_MODES: tuple[TagMode, ...] = ("any", "all", "none")
DidMode = Literal["did", "never", "first"]
DID_MODES: tuple[DidMode, ...] = ("did", "never", "first")
Measure = Literal["count", "sum", "avg", "min", "max", "aov"]
MEASURES: tuple[Measure, ...] = ("count", "sum", "avg", "min", "max", "aov")
#: Measures that aggregate a named order field (``count`` and ``aov`` take none).
FIELD_MEASURES: frozenset[str] = frozenset({"sum", "avg", "min", "max"})

#: Person fields every segment can use, and their types (see docs/concepts/data-model.md).
PERSON_FIELDS: dict[str, str] = {
    "first_seen": "datetime",
    "last_seen": "datetime",
    "total_spend_fen": "integer",
    "order_count": "integer",
    "owner": "string",
}

#: Integers in the tree fit a signed 64-bit column.
MAX_INT = 2**63 - 1

_DATE_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")


@dataclass(frozen=True)
class Span:
    """Where a node came from in the source text: 0-based character ``offset`` and ``end``,
    1-based ``line`` and ``column`` (in characters, so 北 is one column)."""

    offset: int
    end: int
    line: int
    column: int


@dataclass(frozen=True, kw_only=True)
class Node:
    """Base of every tree node; ``span`` is where it was written (``None`` for built trees)."""

    span: Span | None = dataclasses.field(default=None, compare=False, repr=False)


# -- values ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Duration(Node):
    """A length of time: ``30d``, ``12h``, ``2w``, ``6m`` (months)."""

    amount: int
    unit: Unit


@dataclass(frozen=True)
class RelativeDate(Node):
    """A moment relative to now: ``365d ago`` (evaluated in the brand time zone)."""

    amount: int
    unit: Unit


@dataclass(frozen=True)
class AbsoluteDate(Node):
    """A date or date-time written as a string, ``"2026-01-01"`` or ``"2026-01-01 08:00"``.

    The text is kept as written; a string-typed field compares against the text itself.
    """

    text: str

    @property
    def value(self) -> date | datetime:
        """The parsed date (``YYYY-MM-DD``) or datetime (naive = brand time zone)."""
        if len(self.text) == 10:
            return date.fromisoformat(self.text)
        return datetime.fromisoformat(self.text.replace("Z", "+00:00"))


def as_date_literal(text: str) -> AbsoluteDate | None:
    """``text`` as an :class:`AbsoluteDate` if it is shaped like one and is a real date, else None."""
    if not _DATE_SHAPE.fullmatch(text):
        return None
    candidate = AbsoluteDate(text)
    try:
        candidate.value  # noqa: B018 - validates the calendar date
    except ValueError:
        return None
    return candidate


Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = str | int | float | bool | AbsoluteDate | RelativeDate
DateValue: TypeAlias = AbsoluteDate | RelativeDate


# -- windows ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InLast(Node):
    """``in last 30d``: from now minus the duration until now."""

    duration: Duration


@dataclass(frozen=True)
class DateRange(Node):
    """``between D1 and D2``: both ends included; an absolute date as ``end`` covers that whole day."""

    start: DateValue
    end: DateValue


@dataclass(frozen=True)
class Ever(Node):
    """``ever``: no time limit."""


Window: TypeAlias = InLast | DateRange | Ever


# -- field conditions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldRef(Node):
    """A named value: a customer ``trait``, a built-in ``person`` field, an event ``property``
    (inside ``where``) or an ``order`` field (inside ``orders … where``)."""

    name: str
    source: FieldSource = "trait"


@dataclass(frozen=True)
class Compare(Node):
    """``field op value`` with op one of ``= != < <= > >= contains``, ``not contains``."""

    field: FieldRef
    op: CompareOp
    value: Value


@dataclass(frozen=True)
class InList(Node):
    """``field in (v1, v2, …)``, or ``not in`` when ``negated``."""

    field: FieldRef
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between(Node):
    """``field between low and high``, both ends included."""

    field: FieldRef
    low: Value
    high: Value


@dataclass(frozen=True)
class IsSet(Node):
    """``field is set`` / ``field is not set`` (when ``negated``)."""

    field: FieldRef
    negated: bool = False


FieldCondition: TypeAlias = Compare | InList | Between | IsSet


# -- person-level conditions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HasTags(Node):
    """``has tag "X"`` (any of one), ``has any|all|no tag in ("A", "B")``."""

    names: tuple[str, ...]
    mode: TagMode = "any"


@dataclass(frozen=True)
class CountCondition(Node):
    """How many matching events: ``>= 2`` in ``did order_paid >= 2 …`` (zero included for ``<``)."""

    op: CountOp
    value: int


@dataclass(frozen=True)
class Did(Node):
    """``did|never did|first did EVENT [op N] [where …] WINDOW``; ``event`` None means any event."""

    event: str | None
    window: Window
    mode: DidMode = "did"
    count: CountCondition | None = None
    where: tuple[FieldCondition, ...] = ()


@dataclass(frozen=True)
class Step(Node):
    """One step of a sequence: an event (None = any) and its property conditions."""

    event: str | None
    where: tuple[FieldCondition, ...] = ()


@dataclass(frozen=True)
class Sequence(Node):
    """``did A then B [then C …] within W [WINDOW]``: each step follows the previous one, all
    steps within ``within`` of the first, and the whole sequence inside ``window``."""

    steps: tuple[Step, ...]
    within: Duration
    window: Window = dataclasses.field(default_factory=Ever)


@dataclass(frozen=True)
class Orders(Node):
    """``orders MEASURE [FIELD] [where …] op N [WINDOW]``: an aggregate over the person's paid orders."""

    measure: Measure
    op: CountOp
    value: int | float
    field: str | None = None
    where: tuple[FieldCondition, ...] = ()
    window: Window = dataclasses.field(default_factory=Ever)


@dataclass(frozen=True)
class InSegment(Node):
    """``in segment "超级用户"``: a member of another saved segment."""

    name: str


@dataclass(frozen=True)
class InGroup(Node):
    """``in group "…"``: a current member of a customer group (客户群)."""

    name: str


# -- boolean structure ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class And(Node):
    """All of ``items`` (two or more)."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Or(Node):
    """Any of ``items`` (two or more)."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not(Node):
    """Every person for whom ``item`` does not hold (the complement, persons without the trait included)."""

    item: Condition


Condition: TypeAlias = (
    And | Or | Not | Compare | InList | Between | IsSet | HasTags | Did | Sequence | Orders | InSegment | InGroup
)


def children(node: Node) -> tuple[Node, ...]:
    """The direct child nodes of ``node`` that are conditions (for walks over the boolean tree)."""
    if isinstance(node, And | Or):
        return node.items
    if isinstance(node, Not):
        return (node.item,)
    return ()


def walk(node: Node) -> list[Node]:
    """``node`` and every condition below it, depth first (iterative, so deep trees are safe)."""
    out: list[Node] = []
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(children(current)))
    return out
