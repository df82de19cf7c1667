"""The segment language: the issue's seven lines mean exactly what they say, and every condition
type parses to the tree written out by hand here (independently of the golden files)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siyu.segments import parse, to_text
from siyu.segments.nodes import (
    AbsoluteDate,
    And,
    Between,
    Compare,
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
    Span,
    Step,
    walk,
)


def trait(name: str) -> FieldRef:
    return FieldRef(name, "trait")


def person(name: str) -> FieldRef:
    return FieldRef(name, "person")


def prop(name: str) -> FieldRef:
    return FieldRef(name, "property")


def last(n: int, unit: str = "d") -> InLast:
    return InLast(Duration(n, unit))  # type: ignore[arg-type]


ISSUE_EXAMPLES = [
    (
        'city = "北京" and gender = "女"',
        And((Compare(trait("city"), "=", "北京"), Compare(trait("gender"), "=", "女"))),
    ),
    (
        'did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女" '
        "and first_seen <= 365d ago",
        And(
            (
                Did("favorite", last(30)),
                Did(None, last(7)),
                Compare(trait("city"), "=", "北京"),
                Compare(trait("gender"), "=", "女"),
                Compare(person("first_seen"), "<=", RelativeDate(365, "d")),
            )
        ),
    ),
    (
        "did order_paid >= 2 in last 90d where amount_fen >= 10000",
        Did(
            "order_paid",
            last(90),
            count=CountCondition(">=", 2),
            where=(Compare(prop("amount_fen"), ">=", 10000),),
        ),
    ),
    (
        'has tag "高意向" and not has tag "已流失"',
        And((HasTags(("高意向",)), Not(HasTags(("已流失",))))),
    ),
    (
        "not did any in last 30d and did order_paid ever",
        And((Not(Did(None, last(30))), Did("order_paid", Ever()))),
    ),
    (
        "did add_contact then order_paid within 7d in last 60d",
        Sequence((Step("add_contact"), Step("order_paid")), Duration(7, "d"), last(60)),
    ),
    (
        'in segment "超级用户" or total_spend_fen >= 500000',
        Or((InSegment("超级用户"), Compare(person("total_spend_fen"), ">=", 500000))),
    ),
]


@pytest.mark.parametrize(("text", "tree"), ISSUE_EXAMPLES, ids=[f"line{i + 1}" for i in range(len(ISSUE_EXAMPLES))])
def test_issue_examples_mean_what_they_say(text: str, tree: object) -> None:
    assert parse(text) == tree
    assert parse(to_text(parse(text))) == tree


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("age != 3", Compare(trait("age"), "!=", 3)),
        ("score < 4.5", Compare(trait("score"), "<", 4.5)),
        ("balance > -100", Compare(trait("balance"), ">", -100)),
        ("vip = true", Compare(trait("vip"), "=", True)),
        ("vip != false", Compare(trait("vip"), "!=", False)),
        ('city in ("北京", "上海")', InList(trait("city"), ("北京", "上海"))),
        ('city not in ("北京")', InList(trait("city"), ("北京",), negated=True)),
        ('nickname contains "宝妈"', Compare(trait("nickname"), "contains", "宝妈")),
        ('nickname not contains "test"', Compare(trait("nickname"), "not contains", "test")),
        ("age between 18 and 30", Between(trait("age"), 18, 30)),
        ("baby_age_months is set", IsSet(trait("baby_age_months"))),
        ("phone is not set", IsSet(trait("phone"), negated=True)),
        ('last_seen >= "2026-01-01"', Compare(person("last_seen"), ">=", AbsoluteDate("2026-01-01"))),
        ('birthday < "2000-01-01 08:30"', Compare(trait("birthday"), "<", AbsoluteDate("2000-01-01 08:30"))),
        ("first_seen > 12h ago", Compare(person("first_seen"), ">", RelativeDate(12, "h"))),
        ("first_seen > 2w ago", Compare(person("first_seen"), ">", RelativeDate(2, "w"))),
        ("first_seen > 6m ago", Compare(person("first_seen"), ">", RelativeDate(6, "m"))),
        (
            "last_seen between 60d ago and 30d ago",
            Between(person("last_seen"), RelativeDate(60, "d"), RelativeDate(30, "d")),
        ),
        ("order_count >= 2", Compare(person("order_count"), ">=", 2)),
        ('owner = "zhang.san"', Compare(person("owner"), "=", "zhang.san")),
        ('owned by "zhang.san"', Compare(person("owner"), "=", "zhang.san")),
        ("owner is not set", IsSet(person("owner"), negated=True)),
        ('trait "first_seen" = 1', Compare(trait("first_seen"), "=", 1)),
        ('trait "会员 等级" = "金卡"', Compare(trait("会员 等级"), "=", "金卡")),
        ('城市 = "北京"', Compare(trait("城市"), "=", "北京")),
        ('context.page = "home"', Compare(trait("context.page"), "=", "home")),
        ('has any tag in ("A", "B")', HasTags(("A", "B"), "any")),
        ('has all tags in ("A", "B")', HasTags(("A", "B"), "all")),
        ('has no tag in ("A")', HasTags(("A",), "none")),
        ('has no tags in ("A", "B")', HasTags(("A", "B"), "none")),
        ('in group "宝妈交流群 1"', InGroup("宝妈交流群 1")),
        ("never did order_paid in last 30d", Did("order_paid", last(30), mode="never")),
        ("first did order_paid in last 7d", Did("order_paid", last(7), mode="first")),
        ("did $group_joined ever", Did("$group_joined", Ever())),
        ('did "加购" in last 1h', Did("加购", last(1, "h"))),
        ("did order_paid = 0 in last 30d", Did("order_paid", last(30), count=CountCondition("=", 0))),
        ("did order_paid >= 3 times in last 30d", Did("order_paid", last(30), count=CountCondition(">=", 3))),
        (
            'did view_product between "2026-01-01" and "2026-01-31"',
            Did("view_product", DateRange(AbsoluteDate("2026-01-01"), AbsoluteDate("2026-01-31"))),
        ),
        (
            "did view_product between 14d ago and 7d ago",
            Did("view_product", DateRange(RelativeDate(14, "d"), RelativeDate(7, "d"))),
        ),
        (
            'did order_paid where categories contains "奶粉" and amount_fen >= 100 in last 30d',
            Did(
                "order_paid",
                last(30),
                where=(Compare(prop("categories"), "contains", "奶粉"), Compare(prop("amount_fen"), ">=", 100)),
            ),
        ),
        (
            'did order_paid in last 30d where (channel = "mall" and amount_fen between 1 and 5)',
            Did(
                "order_paid",
                last(30),
                where=(Compare(prop("channel"), "=", "mall"), Between(prop("amount_fen"), 1, 5)),
            ),
        ),
        (
            'did add_contact where state = "qr1" then any then order_paid where amount_fen > 0 within 2w',
            Sequence(
                (
                    Step("add_contact", (Compare(prop("state"), "=", "qr1"),)),
                    Step(None),
                    Step("order_paid", (Compare(prop("amount_fen"), ">", 0),)),
                ),
                Duration(2, "w"),
                Ever(),
            ),
        ),
        ("orders count >= 2 in last 90d", Orders("count", ">=", 2, window=last(90))),
        ("orders sum amount_fen >= 50000", Orders("sum", ">=", 50000, field="amount_fen")),
        ("orders aov >= 20000", Orders("aov", ">=", 20000)),
        ("orders avg discount_fen < 500.5 ever", Orders("avg", "<", 500.5, field="discount_fen")),
        (
            'orders count where category = "奶粉" >= 1',
            Orders("count", ">=", 1, where=(Compare(FieldRef("category", "order"), "=", "奶粉"),)),
        ),
        (
            'orders max amount_fen > 100 in last 30d where channel in ("mall", "wecom")',
            Orders(
                "max",
                ">",
                100,
                field="amount_fen",
                where=(InList(FieldRef("channel", "order"), ("mall", "wecom")),),
                window=last(30),
            ),
        ),
    ],
)
def test_condition(text: str, tree: object) -> None:
    assert parse(text) == tree
    assert parse(to_text(parse(text))) == tree


def test_precedence_not_and_or() -> None:
    a, b, c = (Compare(trait(n), "=", 1) for n in "abc")
    assert parse("a = 1 or b = 1 and c = 1") == Or((a, And((b, c))))
    assert parse("a = 1 and b = 1 or c = 1") == Or((And((a, b)), c))
    assert parse("not a = 1 and b = 1") == And((Not(a), b))
    assert parse("not (a = 1 and b = 1)") == Not(And((a, b)))
    assert parse("(a = 1 or b = 1) and c = 1") == And((Or((a, b)), c))
    assert parse("not not a = 1") == Not(Not(a))
    # Parentheses keep the shape the operator wrote: no silent flattening.
    assert parse("a = 1 and (b = 1 and c = 1)") == And((a, And((b, c))))
    assert parse("((a = 1))") == a


def test_where_after_the_window_takes_one_condition() -> None:
    tree = parse('did order_paid in last 90d where amount_fen >= 10000 and city = "北京"')
    assert tree == And(
        (
            Did("order_paid", last(90), where=(Compare(prop("amount_fen"), ">=", 10000),)),
            Compare(trait("city"), "=", "北京"),
        )
    )


def test_where_before_the_window_runs_to_the_window() -> None:
    tree = parse('did order_paid where amount_fen >= 10000 and channel = "mall" in last 90d and city = "北京"')
    assert tree == And(
        (
            Did(
                "order_paid",
                last(90),
                where=(Compare(prop("amount_fen"), ">=", 10000), Compare(prop("channel"), "=", "mall")),
            ),
            Compare(trait("city"), "=", "北京"),
        )
    )


def test_strings_that_look_like_sql_are_just_strings() -> None:
    hostile = "北京'; DROP TABLE persons; --"
    tree = parse('city = "北京\'; DROP TABLE persons; --"')
    assert tree == Compare(trait("city"), "=", hostile)
    assert parse("city = 'x\" OR 1=1 --'") == Compare(trait("city"), "=", 'x" OR 1=1 --')


def test_escapes_and_quotes() -> None:
    assert parse(r'name = "a\"b\\c\n\t\u4e2d"') == Compare(trait("name"), "=", 'a"b\\c\n\t中')
    assert parse("name = 'it\\'s'") == Compare(trait("name"), "=", "it's")


def test_date_shaped_strings_become_dates_and_others_stay_strings() -> None:
    assert parse('d = "2026-01-01"') == Compare(trait("d"), "=", AbsoluteDate("2026-01-01"))
    assert parse('d = "2026-02-30"') == Compare(trait("d"), "=", "2026-02-30")
    assert parse('d = "2026-01-01T08:00:00+08:00"') == Compare(
        trait("d"), "=", AbsoluteDate("2026-01-01T08:00:00+08:00")
    )
    assert AbsoluteDate("2026-01-01").value.isoformat() == "2026-01-01"


def test_multi_line_expressions_and_spans() -> None:
    tree = parse('city = "北京"\n  and did order_paid ever')
    assert isinstance(tree, And)
    did = tree.items[1]
    assert did.span == Span(offset=18, end=37, line=2, column=7)
    assert tree.items[0].span == Span(offset=0, end=11, line=1, column=1)


def test_walk_visits_every_condition() -> None:
    tree = parse("a = 1 and (b = 1 or not c = 1)")
    assert [type(n).__name__ for n in walk(tree)] == ["And", "Compare", "Or", "Compare", "Not", "Compare"]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (
            "did order_paid >= 2 in last 90d where amount_fen >= 10000",
            "did order_paid >= 2 where amount_fen >= 10000 in last 90d",
        ),
        ("did  x   >=2 times in last 7d", "did x >= 2 in last 7d"),
        ("orders count >= 1 ever", "orders count >= 1"),
        ("(a = 1)", "a = 1"),
        ("owned by 'w'", 'owner = "w"'),
        ('has any tag in ("X")', 'has tag "X"'),
        ("a = 1 or (b = 1 and c = 1)", "a = 1 or b = 1 and c = 1"),
        ("not (a = 1 or b = 1)", "not (a = 1 or b = 1)"),
        ('trait "in" = 1', 'trait "in" = 1'),
        ('did "in" ever', 'did "in" ever'),
        ('did x where "a b" = 1 ever', 'did x where "a b" = 1 ever'),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    assert to_text(parse(text)) == canonical


def _doc_examples() -> list[str]:
    """Every expression shown in docs/segments.md: the first column of the examples table and the
    lines of plain fenced blocks (several per line, separated by wide spaces; placeholders in capitals
    and Chinese glosses skipped)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "segments.md").read_text(encoding="utf-8")
    table = text.split("## The seven examples", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)
    fence: str | None = None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence != "":
            continue
        for chunk in re.split(r"\s{2,}", line.strip()):
            starts = chunk.split(" ", 1)[0] in {"has", "did", "in", "owned", "orders", "never", "first", "not"}
            if (
                chunk
                and not re.search(r"\b[A-Z]{2,}\b", chunk)
                and (starts or re.search(r"[=<>]|\bis |\bin \(|contains|between", chunk))
            ):
                found.append(chunk)
    return found


def test_every_expression_in_the_docs_parses() -> None:
    examples = _doc_examples()
    assert len(examples) >= 30
    for example in examples:
        assert parse(to_text(parse(example))) == parse(example), example
    assert [parse(e) for e in examples[:7]] == [tree for _, tree in ISSUE_EXAMPLES]
