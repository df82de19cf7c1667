"""Syntax errors name the position, what was found and what was expected, in Chinese and English;
limits refuse oversized input clearly; hostile input never crashes the parser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siyu.segments import (
    Limits,
    SegmentError,
    SegmentLimitError,
    SegmentSyntaxError,
    from_json,
    parse,
    to_text,
)
from siyu.segments.nodes import MAX_DURATION, Compare, FieldRef


def syntax_error(text: str) -> SegmentSyntaxError:
    with pytest.raises(SegmentSyntaxError) as info:
        parse(text)
    return info.value


def test_the_briefs_example_error() -> None:
    error = syntax_error('gender = "女" and city "北京"')
    assert (error.line, error.column, error.offset) == (1, 23, 22)
    assert error.found == '"北京"'
    assert error.expected == ("a comparison operator",)
    assert error.message_zh == '第 1 行第 23 列：应为 比较运算符，却是 "北京"'
    assert error.message_en == 'line 1, column 23: expected a comparison operator, found "北京"'
    assert str(error) == f"{error.message_zh} / {error.message_en}"


def test_position_on_a_later_line_counts_characters_not_bytes() -> None:
    error = syntax_error('city = "北京北京"\nand 年龄 >= 18\nand did x')
    assert (error.line, error.column) == (3, 10)
    assert error.offset == len('city = "北京北京"\nand 年龄 >= 18\nand did x')
    assert "第 3 行第 10 列" in error.message_zh and "line 3, column 10" in error.message_en
    assert error.found == "the end of the expression"
    assert "表达式结尾" in error.message_zh


def test_to_dict_has_everything_the_console_needs() -> None:
    data = syntax_error("did order_paid in last 30 ").to_dict()
    assert data["kind"] == "SegmentSyntaxError"
    assert (data["line"], data["column"], data["offset"], data["end"]) == (1, 24, 23, 25)
    assert data["found"] == '"30"'
    assert data["expected"] == ["a duration like 30d"]
    assert "时长（如 30d）" in data["zh"] and "a duration like 30d" in data["en"]


@pytest.mark.parametrize(
    ("text", "column", "zh", "en"),
    [
        ("x = 1 and", 10, "应为 条件", "expected a condition"),
        ("did a", 6, '"in last"、"between" 或 "ever"', '"in last", "between" or "ever"'),
        ("did a >= 2", 11, '应为 "in last"', 'expected "in last"'),
        ("did a >= -1 ever", 10, "应为 整数", "expected a whole number"),
        ("never did a >= 2 ever", 13, "不能跟次数条件", "takes no count condition"),
        ("first did a then b within 1d", 13, "不能用于序列", "cannot start a sequence"),
        ("did a then b", 13, '"within"', '"within"'),
        ("did a in last 0d", 15, "超出范围", "out of range"),
        ("has tag 高意向", 9, "应为 字符串", "expected a string"),
        ("orders total >= 1", 8, "订单指标", "an order measure"),
        ("orders sum >= 1", 12, "订单字段", "an order field"),
        ("x in ()", 7, "应为 值", "expected a value"),
        ("(a = 1", 7, '")"', '")"'),
        ("a = 1 )", 7, "表达式结尾", "the end of the expression"),
        ("trait in = 1", 7, "字段名", "a field name"),
        ("in = 1", 4, '"segment" 或 "group"', '"segment" or "group"'),
        ("x is nul", 6, '"set"', '"set"'),
        ('in segment ""', 12, "名称不能为空", "a name cannot be empty"),
    ],
)
def test_syntax_errors(text: str, column: int, zh: str, en: str) -> None:
    error = syntax_error(text)
    assert error.column == column, str(error)
    assert zh in error.message_zh, error.message_zh
    assert en in error.message_en, error.message_en


@pytest.mark.parametrize(
    ("text", "column", "zh", "en"),
    [
        ('x = "abc', 5, "字符串缺少结束引号", "unterminated string"),
        ('x = "a\nb"', 5, "字符串缺少结束引号", "unterminated string"),
        ('x = "\\q"', 6, "无效的转义", "invalid escape"),
        ('x = "\\ud800"', 6, "代理码点", "surrogate"),
        ("x = 99999999999999999999", 5, "整数超出范围", "integer out of range"),
        ("x = 1e999", 5, "数字超出范围", "number out of range"),
        ("x = 30days", 5, "30days", "30days"),
        ("x @ 1", 3, "意外的字符", "unexpected character"),
        ("a = 1 ）", 7, "全角字符", "full-width"),
        ("city = “北京”", 8, "请改用半角", "use ASCII"),
        ("x = 1\x00", 6, "控制字符 U+0000", "control character U+0000"),
        ('x = "a\x1b"', 7, "控制字符 U+001B", "control character U+001B"),
        ("x\u202e = 1", 2, "U+202E", "U+202E"),
    ],
)
def test_lexical_errors(text: str, column: int, zh: str, en: str) -> None:
    error = syntax_error(text)
    assert error.column == column, str(error)
    assert zh in error.message_zh and en in error.message_en, str(error)


def test_length_limit() -> None:
    text = "x = " + "1" * 9_996
    assert len(text) == 10_000
    with pytest.raises(SegmentSyntaxError):  # within the length limit, refused for the number
        parse(text)
    with pytest.raises(SegmentLimitError) as info:
        parse(text + " ")
    assert info.value.limit == "max_length"
    assert "表达式过长：10001 个字符" in info.value.message_zh
    assert "expression too long: 10001 characters, the limit is 10000" in info.value.message_en


def test_depth_limit_names_the_position() -> None:
    ok = "(" * 32 + "a = 1" + ")" * 32
    assert parse(ok) == Compare(FieldRef("a"), "=", 1)
    with pytest.raises(SegmentLimitError) as info:
        parse("(" * 33 + "a = 1" + ")" * 33)
    assert info.value.limit == "max_depth"
    assert info.value.span is not None and info.value.span.column == 33
    assert "嵌套过深" in info.value.message_zh and "nesting too deep" in info.value.message_en
    with pytest.raises(SegmentLimitError):
        parse("not " * 33 + "a = 1")


def test_node_and_list_limits() -> None:
    small = Limits(max_nodes=20, max_list_items=3)
    parse(" and ".join(f"a{i} = 1" for i in range(6)), limits=small)
    with pytest.raises(SegmentLimitError) as info:
        parse(" and ".join(f"a{i} = 1" for i in range(8)), limits=small)
    assert info.value.limit == "max_nodes"
    with pytest.raises(SegmentLimitError) as info:
        parse("x in (1, 2, 3, 4)", limits=small)
    assert info.value.limit == "max_list_items"
    assert info.value.to_dict()["maximum"] == 3


def test_default_limits_refuse_too_many_conditions_within_the_length() -> None:
    text = "a=1 or " * 1_400 + "a=1"
    assert len(text) < 10_000
    with pytest.raises(SegmentLimitError) as info:
        parse(text)
    assert info.value.limit == "max_nodes"
    assert "条件过多" in info.value.message_zh and "too many conditions" in info.value.message_en


def test_deep_parentheses_far_beyond_recursion_limit() -> None:
    with pytest.raises(SegmentLimitError):
        parse("(" * 5_000 + "a = 1" + ")" * 5_000, limits=Limits(max_length=20_000))
    with pytest.raises(SegmentLimitError):
        parse("not " * 2_400, limits=Limits(max_length=20_000))


def test_huge_strings_within_the_limit_are_just_values() -> None:
    value = "北" * 9_000
    tree = parse(f'city = "{value}"')
    assert tree == Compare(FieldRef("city"), "=", value)
    with pytest.raises(SegmentLimitError):
        parse(f'city = "{value * 2}"')


@pytest.mark.parametrize(
    "value",
    [
        "'; DROP TABLE persons; --",
        '" OR 1=1 --',
        "1) UNION SELECT * FROM api_keys --",
        "$(rm -rf /)",
        "{{7*7}}",
        "\u202eevil",
        "\\",
        "a\nb\tc",
        "",
    ],
)
def test_hostile_strings_round_trip_as_plain_strings(value: str) -> None:
    tree = Compare(FieldRef("city"), "=", value)
    assert parse(to_text(tree)) == tree


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_a_segment_error(text: str) -> None:
    try:
        tree = parse(text)
    except SegmentError as error:
        assert error.message_zh and error.message_en
        if isinstance(error, SegmentSyntaxError):
            assert 0 <= error.offset <= len(text)
            assert error.line >= 1 and error.column >= 1
    else:
        assert parse(to_text(tree)) == tree


WORDS = st.sampled_from(
    [
        "did", "never", "first", "any", "not", "and", "or", "(", ")", "in", "last", "30d", "7d", "ago", "ever",
        "between", "where", "then", "within", "has", "tag", "tags", "all", "no", "orders", "count", "sum", "aov",
        "amount_fen", "city", "=", "!=", ">=", "<", "2", "1.5", '"北京"', '"2026-01-01"', "is", "set", "segment",
        "group", "owned", "by", "trait", "contains", ",", "true", "x",
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(WORDS, max_size=25))
def test_keyword_soup_parses_or_fails_cleanly(words: list[str]) -> None:
    text = " ".join(words)
    try:
        tree = parse(text)
    except SegmentSyntaxError as error:
        assert 0 <= error.offset <= len(text)
        assert error.expected or "：" in error.message_zh
    except SegmentLimitError:
        pass
    else:
        assert parse(to_text(tree)) == tree


@pytest.mark.parametrize(("unit", "top"), sorted(MAX_DURATION.items()))
def test_durations_stop_at_about_a_hundred_years(unit: str, top: int) -> None:
    assert 36_400 <= {"h": top / 24, "d": top, "w": top * 7, "m": top * 30.4}[unit] <= 36_700
    parse(f"first_seen > {top}{unit} ago and did x in last {top}{unit}")
    for text in (f"first_seen > {top + 1}{unit} ago", f"did x in last {top + 1}{unit}"):
        error = syntax_error(text)
        assert "超出范围" in error.message_zh and "out of range" in error.message_en


_SMALL = Limits(max_nodes=20, max_list_items=3)
_SEGMENT = {"type": "in_segment", "name": "x"}


def _nested_not(depth: int) -> dict[str, object]:
    tree: dict[str, object] = _SEGMENT
    for _ in range(depth):
        tree = {"type": "not", "item": tree}
    return tree


@pytest.mark.parametrize(
    ("make", "limit", "zh", "en"),
    [
        (
            lambda: parse("x" * 10_001),
            "max_length",
            "表达式过长：10001 个字符，上限为 10000 个字符",
            "expression too long: 10001 characters, the limit is 10000 characters",
        ),
        (
            lambda: from_json({"type": "in_segment", "name": "x" * 10_001}),
            "max_length",
            "表达式过长：10001 个字符，上限为 10000 个字符",
            "expression too long: 10001 characters, the limit is 10000 characters",
        ),
        (
            lambda: parse(" and ".join(f"a{i} = 1" for i in range(8)), limits=_SMALL),
            "max_nodes",
            "第 1 行第 72 列：条件过多：超过上限 20 个节点",
            "line 1, column 72: too many conditions and values: more than the limit of 20 nodes",
        ),
        (
            lambda: from_json({"type": "or", "items": [_SEGMENT] * 50}, limits=Limits(max_nodes=40)),
            "max_nodes",
            "条件过多：超过上限 40 个节点",
            "too many conditions and values: more than the limit of 40 nodes",
        ),
        (
            lambda: parse("(" * 33 + "a = 1" + ")" * 33),
            "max_depth",
            "第 1 行第 33 列：嵌套过深：超过上限 32 层",
            "line 1, column 33: nesting too deep: more than the limit of 32 levels",
        ),
        (
            lambda: parse("not " * 33 + "a = 1"),
            "max_depth",
            "第 1 行第 129 列：嵌套过深：超过上限 32 层",
            "line 1, column 129: nesting too deep: more than the limit of 32 levels",
        ),
        (
            lambda: from_json(_nested_not(40)),
            "max_depth",
            "嵌套过深：超过上限 32 层",
            "nesting too deep: more than the limit of 32 levels",
        ),
        (
            lambda: parse("x in (1, 2, 3, 4)", limits=_SMALL),
            "max_list_items",
            "第 1 行第 16 列：列表过长：超过上限 3 项",
            "line 1, column 16: list too long: more than the limit of 3 items",
        ),
        (
            lambda: parse('has any tag in ("a", "b", "c", "d")', limits=_SMALL),
            "max_list_items",
            "第 1 行第 32 列：列表过长：超过上限 3 项",
            "line 1, column 32: list too long: more than the limit of 3 items",
        ),
        (
            lambda: from_json({"type": "has_tags", "names": ["a"] * 1_001}),
            "max_list_items",
            "列表过长：1001 项，上限为 1000 项",
            "list too long: 1001 items, the limit is 1000 items",
        ),
    ],
)
def test_limit_messages_read_correctly(make: Callable[[], object], limit: str, zh: str, en: str) -> None:
    """The exact wording of every limit, with and without the size found and the position."""
    with pytest.raises(SegmentLimitError) as info:
        make()
    error = info.value
    assert error.limit == limit
    assert (error.message_zh, error.message_en) == (zh, en)
    assert str(error) == f"{zh} / {en}"
    assert error.to_dict()["zh"] == zh and error.to_dict()["en"] == en
