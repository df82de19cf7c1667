"""Validation against a catalogue: unknown names are errors with suggestions, type mismatches are
errors (never an empty segment), and a segment may not refer to itself."""

from __future__ import annotations

from typing import Any

import pytest

from siyu.segments import (
    BUILTIN_EVENTS,
    Catalogue,
    SegmentValidationError,
    check,
    parse,
    referenced_segments,
    suggest,
    validate,
)

CATALOGUE: dict[str, Any] = {
    "traits": {
        "city": "string",
        "gender": "string",
        "age": "number",
        "level": "integer",
        "vip": "boolean",
        "birthday": "datetime",
        "interests": "list",
        "balance_fen": "integer",
    },
    "events": {
        "favorite": {"sku": "string"},
        "add_contact": {"state": "string"},
        "view_product": {"sku": "string", "price_fen": "integer"},
    },
    "tags": ["高意向", "已流失", "奶粉用户"],
    "segments": ["超级用户", "新客"],
}


def problems(text: str, catalogue: dict[str, Any] | Catalogue = CATALOGUE) -> list[Any]:
    return check(parse(text), catalogue)


@pytest.mark.parametrize(
    "text",
    [
        'city = "北京" and gender = "女"',
        'did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女" '
        "and first_seen <= 365d ago",
        "did order_paid >= 2 in last 90d where amount_fen >= 10000",
        'has tag "高意向" and not has tag "已流失"',
        "not did any in last 30d and did order_paid ever",
        "did add_contact then order_paid within 7d in last 60d",
        'in segment "超级用户" or total_spend_fen >= 500000',
        'age >= 18.5 and level in (1, 2) and vip = true and birthday < "2000-01-01" and birthday > 30d ago',
        'interests contains "烘焙" and city contains "京" and city not in ("北京")',
        'did order_paid where categories contains "奶粉" ever and orders count where category = "奶粉" >= 1',
        "orders sum amount_fen >= 50000 and orders aov >= 20000 and orders avg amount_fen > 1.5",
        "last_seen between 60d ago and 7d ago and owner is set and balance_fen between -100 and 100",
        'did any where sku = "A1" in last 7d',
        'owner = "anyone"',
        'in group "anything"',
    ],
)
def test_valid_expressions_have_no_problems(text: str) -> None:
    assert problems(text) == []
    validate(parse(text), CATALOGUE)


@pytest.mark.parametrize(
    ("text", "code", "name", "suggestions", "zh", "en"),
    [
        (
            'citi = "北京"',
            "unknown_trait",
            "citi",
            ("city",),
            '未知的客户属性 "citi"，是不是 "city"？',
            'unknown trait "citi"; did you mean "city"?',
        ),
        ('City = "北京"', "unknown_trait", "City", ("city",), "是不是", "did you mean"),
        (
            "did order_payd ever",
            "unknown_event",
            "order_payd",
            ("order_paid",),
            '未知的事件 "order_payd"',
            "unknown event",
        ),
        ("did favourite in last 7d", "unknown_event", "favourite", ("favorite",), "是不是", "did you mean"),
        (
            'has tag "高意向客户"',
            "unknown_tag",
            "高意向客户",
            ("高意向",),
            '未知的标签 "高意向客户"',
            'unknown tag "高意向客户"',
        ),
        ('in segment "超级"', "unknown_segment", "超级", ("超级用户",), '未知的人群 "超级"', 'unknown segment "超级"'),
        (
            "did favorite where skuu = 1 ever",
            "unknown_property",
            "skuu",
            ("sku",),
            "未知的事件属性",
            "unknown event property",
        ),
        (
            'orders count where categry = "奶粉" >= 1',
            "unknown_order",
            "categry",
            ("category",),
            "未知的订单字段",
            "unknown order field",
        ),
        ("orders sum amount >= 1", "unknown_order", "amount", ("amount_fen",), "未知的订单字段", "unknown order field"),
        (
            'did any where sku2 = "A" ever',
            "unknown_property",
            "sku2",
            ("sku",),
            "未知的事件属性",
            "unknown event property",
        ),
        ("zzz = 1", "unknown_trait", "zzz", (), '未知的客户属性 "zzz"', 'unknown trait "zzz"'),
    ],
)
def test_unknown_names_with_suggestions(
    text: str, code: str, name: str, suggestions: tuple[str, ...], zh: str, en: str
) -> None:
    (problem,) = problems(text)
    assert (problem.code, problem.name) == (code, name)
    assert problem.suggestions[: len(suggestions)] == suggestions
    assert zh in problem.message_zh and en in problem.message_en
    if not suggestions:
        assert "是不是" not in problem.message_zh and "did you mean" not in problem.message_en


@pytest.mark.parametrize(
    ("text", "code", "path", "en"),
    [
        ('age = "abc"', "type_mismatch", "$.value", 'trait age is a number and cannot be compared with "abc"'),
        (
            "first_seen = 5",
            "type_mismatch",
            "$.value",
            "person field first_seen is a date/time and cannot be compared with 5",
        ),
        ('first_seen > "yesterday"', "type_mismatch", "$.value", 'write a date as "2026-01-01"'),
        ('birthday > "2026-02-30"', "type_mismatch", "$.value", "cannot be compared"),
        ("level = 1.5", "type_mismatch", "$.value", "level is an integer"),
        ("vip = 1", "type_mismatch", "$.value", "vip is a boolean"),
        ("city = 3", "type_mismatch", "$.value", "city is text"),
        ('city > "a"', "bad_operator", "$.op", "city is text; > does not apply"),
        ("age contains 1", "bad_operator", "$.op", "contains does not apply"),
        ('city between "a" and "b"', "bad_operator", "$.op", "between does not apply"),
        ('interests = "a"', "bad_operator", "$.op", "= does not apply"),
        ('birthday in ("2000-01-01")', "bad_operator", "$.op", "in does not apply"),
        ('age in (1, "2")', "type_mismatch", "$.values[1]", "cannot be compared"),
        ("age between 30 and 18", "empty_range", "$", "can never hold"),
        ("total_spend_fen >= 100.5", "type_mismatch", "$.value", "money is whole fen"),
        ('order_count >= "2"', "type_mismatch", "$.value", "order_count is an integer"),
        ("owner = 1", "type_mismatch", "$.value", "owner is text"),
        ("did view_product where price_fen > 9.9 ever", "type_mismatch", "$.where[0].value", "money is whole fen"),
        ('did order_paid where amount_fen = "1" ever', "type_mismatch", "$.where[0].value", "amount_fen is an integer"),
        ('orders count where item_count = "x" >= 1', "type_mismatch", "$.where[0].value", "item_count"),
        ("orders count >= 1.5", "type_mismatch", "$.value", "needs a whole number"),
        ("orders sum amount_fen >= 1.5", "type_mismatch", "$.value", "amount in fen"),
        ("orders sum channel >= 1", "bad_operator", "$.measure", "channel is text; sum does not apply"),
    ],
)
def test_type_mismatches_are_errors(text: str, code: str, path: str, en: str) -> None:
    (problem,) = problems(text)
    assert problem.code == code
    assert problem.path == path
    assert en in problem.message_en, problem.message_en
    assert problem.message_zh


def test_problem_positions_and_paths_inside_a_larger_tree() -> None:
    found = problems('city = "北京" and (\n  did favorite where sku = 1 in last 7d or 年龄 > 3)')
    assert [(p.code, p.path) for p in found] == [
        ("type_mismatch", "$.items[1].items[0].where[0].value"),
        ("unknown_trait", "$.items[1].items[1].field"),
    ]
    assert (found[0].span.line, found[0].span.column) == (2, 22)  # type: ignore[union-attr]
    assert (found[1].span.line, found[1].span.column) == (2, 44)  # type: ignore[union-attr]
    assert str(found[1]).startswith("第 2 行第 44 列：")


def test_validate_raises_with_every_problem() -> None:
    with pytest.raises(SegmentValidationError) as info:
        validate(parse('citi = "北京" and has tag "x" and age = "a"'), CATALOGUE)
    error = info.value
    assert [p.code for p in error.problems] == ["unknown_trait", "unknown_tag", "type_mismatch"]
    assert "另有 2 个问题" in error.message_zh and "and 2 more" in error.message_en
    data = error.to_dict()
    assert data["kind"] == "SegmentValidationError"
    assert [p["code"] for p in data["problems"]] == ["unknown_trait", "unknown_tag", "type_mismatch"]
    assert data["problems"][0]["suggestions"] == ["city"]
    assert data["problems"][0]["line"] == 1


def test_groups_and_staff_are_checked_when_given() -> None:
    catalogue = {**CATALOGUE, "groups": ["宝妈交流群"], "staff": ["zhangsan"]}
    assert [p.code for p in problems('in group "宝妈交流"', catalogue)] == ["unknown_group"]
    assert [p.suggestions for p in problems('owned by "zhangsna"', catalogue)] == [("zhangsan",)]
    assert problems('in group "宝妈交流群" and owner = "zhangsan"', catalogue) == []


def test_catalogue_from_dict() -> None:
    cat = Catalogue.from_dict(CATALOGUE)
    assert "order_paid" in cat.events and cat.events["order_paid"] == BUILTIN_EVENTS["order_paid"]
    bare = Catalogue.from_dict(CATALOGUE, builtin_events=False)
    assert [p.code for p in check(parse("did order_paid ever"), bare)] == ["unknown_event"]
    with pytest.raises(ValueError, match="unknown catalogue keys"):
        Catalogue.from_dict({"trait": {}})
    with pytest.raises(ValueError, match="unknown field types"):
        Catalogue.from_dict({"traits": {"age": "int"}})


def test_suggest() -> None:
    assert set(suggest("citi", ["city", "cities", "gender"])) == {"city", "cities"}
    assert suggest("CITY", ["city"]) == ("city",)
    assert suggest("zzzz", ["city"]) == ()


def test_segment_references() -> None:
    """Loops through references are found by siyu.tags.references (tests/test_tag_graph.py)."""
    assert referenced_segments(parse('in segment "c" or not in segment "d" and age > 1')) == {"c", "d"}
    assert referenced_segments(parse("age > 2")) == set()


@pytest.mark.parametrize(
    ("text", "zh", "en"),
    [
        (
            "did order_paid ever where categories contains 5",
            "事件属性 categories 是文本列表，不能包含 5",
            "event property categories is a list of text and cannot contain 5",
        ),
        (
            "did order_paid where skus not contains true ever",
            "事件属性 skus 是文本列表，不能包含 true",
            "event property skus is a list of text and cannot contain true",
        ),
        (
            "did any where categories contains 1.5 in last 7d",
            "事件属性 categories 是文本列表，不能包含 1.5",
            "event property categories is a list of text and cannot contain 1.5",
        ),
        (
            "did clicked where ids contains 1.5 ever",
            "事件属性 ids 是整数列表，不能包含 1.5",
            "event property ids is a list of integers and cannot contain 1.5",
        ),
        (
            'did clicked where scores contains "高" ever',
            '事件属性 scores 是数字列表，不能包含 "高"',
            'event property scores is a list of numbers and cannot contain "高"',
        ),
        (
            "did clicked where flags contains 1 ever",
            "事件属性 flags 是布尔值列表，不能包含 1",
            "event property flags is a list of booleans and cannot contain 1",
        ),
        (
            "labels contains 3",
            "客户属性 labels 是文本列表，不能包含 3",
            "trait labels is a list of text and cannot contain 3",
        ),
        (
            "did clicked where ids contains 1d ago ever",
            "事件属性 ids 是整数列表，不能包含 1d ago",
            "event property ids is a list of integers and cannot contain 1d ago",
        ),
    ],
)
def test_list_element_type_mismatches_are_errors(text: str, zh: str, en: str) -> None:
    """A list whose elements have a known type takes only values of that type, in both languages."""
    catalogue = {
        **CATALOGUE,
        "traits": {**CATALOGUE["traits"], "labels": "list<string>"},
        "events": {
            **CATALOGUE["events"],
            "clicked": {"ids": "list<integer>", "scores": "list<number>", "flags": "list<boolean>"},
        },
    }
    (problem,) = problems(text, catalogue)
    assert problem.code == "type_mismatch"
    assert problem.path.endswith(".value") or problem.path == "$.value", problem.path
    assert (problem.message_zh, problem.message_en) == (zh, en)
    with pytest.raises(SegmentValidationError) as info:
        validate(parse(text), catalogue)
    assert zh in info.value.message_zh and en in info.value.message_en


def test_list_elements_of_the_right_type_and_untyped_lists_are_accepted() -> None:
    catalogue = {
        **CATALOGUE,
        "events": {**CATALOGUE["events"], "clicked": {"ids": "list<integer>", "scores": "list<number>"}},
    }
    assert BUILTIN_EVENTS["order_paid"]["categories"] == "list<string>"
    for text in [
        'did order_paid ever where categories contains "奶粉"',
        'did order_paid where skus not contains "2026-01-01" ever',  # a date-shaped string is a string
        "did clicked where ids contains 3 and scores contains 3 and scores contains 2.5 ever",
        'interests contains 1 and interests contains "烘焙" and interests contains true',  # untyped list
    ]:
        assert problems(text, catalogue) == [], text
    # Other operators on a typed list are refused as on an untyped one.
    assert [p.code for p in problems('did order_paid where categories = "奶粉" ever')] == ["bad_operator"]
    assert [p.code for p in problems('did order_paid where categories in ("奶粉") ever')] == ["bad_operator"]
    with pytest.raises(ValueError, match="unknown field types"):
        Catalogue.from_dict({"traits": {"labels": "list<str>"}})
