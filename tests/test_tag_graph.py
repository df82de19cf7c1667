"""The graph of saved segments and rule tags (siyu.tags.references): loops, refresh order, renames."""

from __future__ import annotations

import pytest

from siyu.segments import parse
from siyu.tags.references import Definitions, rename_tag_in


def test_rename_in_a_tree_touches_only_tag_names() -> None:
    tree = parse('has all tags in ("A", "B") or not (has tag "A" and in segment "A") or did A ever')
    assert rename_tag_in(tree, "A", "C") == parse(
        'has all tags in ("C", "B") or not (has tag "C" and in segment "A") or did A ever'
    )
    assert rename_tag_in(tree, "X", "C") == tree


def test_loops_follow_segments_and_rule_tags_but_not_manual_tags() -> None:
    defs = Definitions(
        segments={"S": parse('has tag "R"'), "T": parse('has tag "M" and in segment "S"')},
        static=frozenset(),
        rules={"R": parse('city = "北京"')},
    )
    loop = defs.find_loop(("tag", "R"), parse('in segment "T"'))
    assert loop == [("tag", "R"), ("segment", "T"), ("segment", "S"), ("tag", "R")]
    # T tests the (manual) tag M, not a segment M: tags and segments are two kinds of names.
    assert defs.find_loop(("segment", "M"), parse('in segment "T"')) is None
    assert defs.find_loop(("tag", "M"), parse('in segment "T"')) == [("tag", "M"), ("segment", "T"), ("tag", "M")]
    assert defs.find_loop(("segment", "U"), parse('has tag "R" and in segment "T"')) is None
    assert defs.any_loop() is None
    looped = defs.with_definition(("tag", "R"), parse('in segment "S"'))
    assert looped.any_loop() == [("segment", "S"), ("tag", "R"), ("segment", "S")]
    with pytest.raises(ValueError, match="R → R"):
        looped.refresh_order(["S"], ["R"])


def test_the_refresh_order_runs_rule_tags_before_what_reads_them_in_few_batches() -> None:
    defs = Definitions(
        segments={
            "X": parse('city = "北京"'),
            "Y": parse('in segment "ST"'),  # a static segment's stored members: no rule tag read
            "HV": parse('has tag "R"'),
            "W": parse('in segment "HV" and has tag "M"'),  # reads R through the dynamic HV
            "ST": parse('has tag "R2"'),
            "Z": parse('has tag "R2"'),
        },
        static=frozenset({"ST"}),
        rules={"R": parse("orders count >= 1"), "R2": parse('has tag "R"'), "A": parse('has tag "R2"')},
    )
    assert defs.refresh_order(["HV", "W", "X", "Y", "Z"], ["A", "R", "R2"]) == [
        ("segment", ["X", "Y"]),
        ("tag", ["R"]),
        ("segment", ["HV", "W"]),
        ("tag", ["R2"]),
        ("segment", ["Z"]),
        ("tag", ["A"]),
    ]


def test_a_renamed_rule_tag_can_close_a_loop_through_a_name_it_takes_over() -> None:
    defs = Definitions(
        segments={"S": parse('has tag "新"')},  # names a tag that does not exist (yet)
        static=frozenset(),
        rules={"旧": parse('in segment "S"')},
    )
    assert defs.any_loop() is None
    assert defs.with_rule_renamed("旧", "新").any_loop() == [("segment", "S"), ("tag", "新"), ("segment", "S")]
    assert defs.with_rule_renamed("手动", "新") is defs


def test_the_rule_tags_behind_segments_include_those_read_through_rule_tags() -> None:
    defs = Definitions(
        segments={"HV": parse('has tag "A"'), "X": parse('city = "北京"')},
        static=frozenset(),
        rules={"A": parse('has tag "B"'), "B": parse("orders count >= 1"), "C": parse('has tag "B"')},
    )
    assert defs.rule_tags_behind([("segment", "HV")]) == {"A", "B"}
    assert defs.rule_tags_behind([("segment", "X")]) == set()
