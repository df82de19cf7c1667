"""The JSON form and the canonical text: hypothesis-generated trees survive tree → text → tree and
tree → JSON → tree; malformed JSON trees are refused with the exact path of the problem."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siyu.segments import Limits, SegmentJsonError, SegmentLimitError, from_json, parse, to_json, to_text
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
    Did,
    Duration,
    Ever,
    FieldRef,
    HasTags,
    InGroup,
    InLast,
    InList,
    InSegment,
    IsSet,
    Not,
    Or,
    Orders,
    RelativeDate,
    Sequence,
    Step,
    as_date_literal,
)

# -- strategies ---------------------------------------------------------------------------------------
identifiers = st.from_regex(r"[A-Za-z_\u4e00-\u9fff][A-Za-z0-9_\u4e00-\u9fff]{0,12}", fullmatch=True)
any_names = st.text(min_size=1, max_size=12)
names = st.one_of(identifiers, any_names, st.sampled_from(["in", "first_seen", "tag", "count", "any", "$x", "a.b"]))
plain_strings = st.text(max_size=20).filter(lambda s: as_date_literal(s) is None)
dates = st.one_of(
    st.dates().map(lambda d: AbsoluteDate(d.isoformat())),
    st.datetimes().map(lambda d: AbsoluteDate(d.isoformat(sep=" ", timespec="minutes"))),
)
units = st.sampled_from(UNITS)
relative = units.flatmap(lambda u: st.integers(0, MAX_DURATION[u]).map(lambda n: RelativeDate(n, u)))
durations = units.flatmap(lambda u: st.integers(1, MAX_DURATION[u]).map(lambda n: Duration(n, u)))
numbers = st.one_of(st.integers(-MAX_INT, MAX_INT), st.floats(allow_nan=False, allow_infinity=False))
values = st.one_of(plain_strings, numbers, st.booleans(), dates, relative)
date_values = st.one_of(dates, relative)
windows = st.one_of(
    durations.map(InLast),
    st.builds(DateRange, date_values, date_values),
    st.just(Ever()),
)


def field_conditions(fields: st.SearchStrategy[FieldRef]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(Compare, fields, st.sampled_from(COMPARE_OPS), values),
        st.builds(InList, fields, st.lists(values, min_size=1, max_size=3).map(tuple), st.booleans()),
        st.builds(Between, fields, values, values),
        st.builds(IsSet, fields, st.booleans()),
    )


top_fields = st.one_of(
    names.map(lambda n: FieldRef(n, "trait")), st.sampled_from(list(PERSON_FIELDS)).map(lambda n: FieldRef(n, "person"))
)
where_props = st.lists(field_conditions(names.map(lambda n: FieldRef(n, "property"))), max_size=2).map(tuple)
where_orders = st.lists(field_conditions(names.map(lambda n: FieldRef(n, "order"))), max_size=2).map(tuple)
events = st.one_of(st.none(), names)


@st.composite
def dids(draw: st.DrawFn) -> Did:
    mode = draw(st.sampled_from(DID_MODES))
    count = None
    if mode == "did" and draw(st.booleans()):
        count = CountCondition(draw(st.sampled_from(COUNT_OPS)), draw(st.integers(0, MAX_INT)))
    return Did(draw(events), draw(windows), mode, count, draw(where_props))


@st.composite
def orders(draw: st.DrawFn) -> Orders:
    measure = draw(st.sampled_from(MEASURES))
    field = draw(names) if measure in FIELD_MEASURES else None
    return Orders(measure, draw(st.sampled_from(COUNT_OPS)), draw(numbers), field, draw(where_orders), draw(windows))


leaves = st.one_of(
    field_conditions(top_fields),
    st.builds(HasTags, st.lists(any_names, min_size=1, max_size=3).map(tuple), st.sampled_from(TAG_MODES)),
    dids(),
    st.builds(
        Sequence,
        st.lists(st.builds(Step, events, where_props), min_size=2, max_size=3).map(tuple),
        durations,
        windows,
    ),
    orders(),
    st.builds(InSegment, any_names),
    st.builds(InGroup, any_names),
)
trees: st.SearchStrategy[Condition] = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        children.map(Not),
    ),
    max_leaves=8,
)


# -- round trips --------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(trees)
def test_text_round_trip(tree: Condition) -> None:
    text = to_text(tree)
    assert parse(text) == tree, text
    assert to_text(parse(text)) == text


@settings(max_examples=400, deadline=None)
@given(trees)
def test_json_round_trip(tree: Condition) -> None:
    data = json.loads(json.dumps(to_json(tree), ensure_ascii=False))
    assert from_json(data) == tree
    assert to_json(from_json(data)) == data


def test_json_shape_of_an_issue_example() -> None:
    data = to_json(parse("did order_paid >= 2 in last 90d where amount_fen >= 10000"))
    assert data == {
        "type": "did",
        "mode": "did",
        "event": "order_paid",
        "count": {"op": ">=", "value": 2},
        "where": [{"type": "compare", "field": {"property": "amount_fen"}, "op": ">=", "value": 10000}],
        "window": {"type": "last", "amount": 90, "unit": "d"},
    }


def test_json_optional_keys_have_defaults() -> None:
    assert from_json({"type": "did", "event": None, "window": {"type": "ever"}}) == Did(None, Ever())
    assert from_json({"type": "has_tags", "names": ["A"]}) == HasTags(("A",))
    assert from_json({"type": "orders", "measure": "aov", "op": ">=", "value": 1}) == Orders("aov", ">=", 1)
    dated = from_json({"type": "compare", "field": {"person": "last_seen"}, "op": ">", "value": "2026-01-01"})
    assert dated == Compare(FieldRef("last_seen", "person"), ">", AbsoluteDate("2026-01-01"))
    ago = {"type": "compare", "field": {"trait": "d"}, "op": ">", "value": {"ago": {"amount": 3, "unit": "w"}}}
    assert from_json(ago) == Compare(FieldRef("d"), ">", RelativeDate(3, "w"))


# -- malformed JSON -----------------------------------------------------------------------------------
CITY = {"type": "compare", "field": {"trait": "city"}, "op": "=", "value": "北京"}


@pytest.mark.parametrize(
    ("data", "path", "en"),
    [
        ([], "$", "expected an object, found an array"),
        ({}, "$", 'missing "type"'),
        ({"type": "nand"}, "$.type", 'expected one of "and"'),
        ({"type": "and", "items": [CITY]}, "$.items", "needs at least two items"),
        ({"type": "and", "items": "x"}, "$.items", "expected an array, found a string"),
        ({"type": "and", "items": [CITY, {"type": "not"}]}, "$.items[1]", 'missing "item"'),
        ({"type": "and", "items": [CITY, {**CITY, "op": "=="}]}, "$.items[1].op", 'expected one of "="'),
        ({**CITY, "extra": 1}, "$.extra", "unknown key"),
        ({**CITY, "field": {"property": "x"}}, "$.field.property", "the field source here must be one of"),
        ({**CITY, "field": {"person": "age"}}, "$.field.person", "unknown person field"),
        ({**CITY, "field": {"trait": ""}}, "$.field.trait", "must not be empty"),
        ({**CITY, "field": "city"}, "$.field", 'expected {"trait": name}'),
        ({**CITY, "value": [1]}, "$.value", "expected a string, a number"),
        ({**CITY, "value": {"date": "2026-13-01"}}, "$.value.date", "expected a date"),
        ({**CITY, "value": float("nan")}, "$.value", "finite"),
        ({**CITY, "value": 2**70}, "$.value", "must be between"),
        ({"type": "in", "field": {"trait": "c"}, "values": []}, "$.values", "must not be empty"),
        ({"type": "is_set", "field": {"trait": "c"}, "negated": "yes"}, "$.negated", "expected a boolean"),
        ({"type": "has_tags", "names": ["A", 3]}, "$.names[1]", "expected a string, found an integer"),
        ({"type": "has_tags", "names": ["A"], "mode": "some"}, "$.mode", 'expected one of "any"'),
        ({"type": "did", "event": "x"}, "$", 'missing "window"'),
        (
            {"type": "did", "event": "x", "window": {"type": "last", "amount": 0, "unit": "d"}},
            "$.window.amount",
            "between 1",
        ),
        (
            {"type": "did", "event": "x", "window": {"type": "last", "amount": 1, "unit": "y"}},
            "$.window.unit",
            "one of",
        ),
        (
            {"type": "did", "event": "x", "window": {"type": "last", "amount": True, "unit": "d"}},
            "$.window.amount",
            "integer",
        ),
        (
            {
                "type": "did",
                "event": "x",
                "mode": "never",
                "count": {"op": ">", "value": 1},
                "window": {"type": "ever"},
            },
            "$.count",
            "takes no count",
        ),
        (
            {"type": "did", "event": "x", "window": {"type": "ever"}, "where": [{**CITY, "field": {"trait": "a"}}]},
            "$.where[0].field.trait",
            "the field source here must be one of",
        ),
        (
            {"type": "sequence", "steps": [{"event": "a"}], "within": {"amount": 1, "unit": "d"}},
            "$.steps",
            "at least two steps",
        ),
        (
            {"type": "sequence", "steps": [{"event": "a"}, {"evnt": "b"}], "within": {"amount": 1, "unit": "d"}},
            "$.steps[1]",
            'missing "event"',
        ),
        ({"type": "orders", "measure": "sum", "op": ">", "value": 1}, "$.field", "expected a string"),
        ({"type": "orders", "measure": "count", "field": "x", "op": ">", "value": 1}, "$.field", "takes no field"),
        ({"type": "orders", "measure": "count", "op": ">", "value": "1"}, "$.value", "expected an integer"),
        ({"type": "in_segment", "name": ""}, "$.name", "must not be empty"),
        ({"type": "in_group", "name": "\ud800"}, "$.name", "surrogate"),
        ({"type": "not", "item": {"type": "or", "items": [CITY, {"type": "x"}]}}, "$.item.items[1].type", "one of"),
    ],
)
def test_malformed_json_names_the_path(data: Any, path: str, en: str) -> None:
    with pytest.raises(SegmentJsonError) as info:
        from_json(data)
    assert info.value.path == path, str(info.value)
    assert en in info.value.message_en, info.value.message_en
    assert info.value.message_zh.startswith(f"{path}：")
    assert info.value.to_dict()["path"] == path


def test_json_limits() -> None:
    deep: dict[str, Any] = CITY
    for _ in range(40):
        deep = {"type": "not", "item": deep}
    with pytest.raises(SegmentLimitError) as info:
        from_json(deep)
    assert info.value.limit == "max_depth"
    very_deep: dict[str, Any] = CITY
    for _ in range(50_000):
        very_deep = {"type": "not", "item": very_deep}
    with pytest.raises(SegmentLimitError):
        from_json(very_deep)
    wide = {"type": "or", "items": [CITY] * 50}
    from_json(wide)
    with pytest.raises(SegmentLimitError) as info:
        from_json(wide, limits=Limits(max_nodes=40))
    assert info.value.limit == "max_nodes"
    with pytest.raises(SegmentLimitError):
        from_json({"type": "has_tags", "names": ["a"] * 1_001})


def test_json_depth_matches_what_the_text_parser_accepts() -> None:
    tree = parse("not " * 32 + "a = 1")
    assert from_json(to_json(tree)) == tree
    nested = parse("a = 1 and " * 1 + "(" * 31 + "b = 1 or c = 1" + ")" * 31)
    assert from_json(to_json(nested)) == nested
    with pytest.raises(SegmentLimitError):
        from_json({"type": "not", "item": to_json(tree)})
