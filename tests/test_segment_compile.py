"""The segment compiler against the independent pandas oracle, on random data and random trees.

Every condition type is drawn by ``segment_strategies.trees``; the data sets plant the edge cases
(merged ids, ties, events after now, bad properties, multi-version orders …). The compiled Ibis
expression runs on a real DuckDB event store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment_data import random_oracle_data
from segment_load import group_names, load
from segment_oracle import OracleData, evaluate
from segment_strategies import trees
from segment_vocab import DEFAULT_VOCAB, vocab_catalogue, vocab_segments
from siyu.segments import parse, to_text
from siyu.segments.engine import SegmentEngine
from siyu.segments.nodes import Node
from siyu.store.events import EventStore

CATALOGUE = vocab_catalogue()
SAVED = vocab_segments()


@dataclass
class World:
    data: OracleData
    engine: SegmentEngine

    def compiled(self, tree: Node) -> set[str]:
        return self.engine.members(tree)

    def oracle(self, tree: Node) -> set[str]:
        return evaluate(
            tree, self.data, catalogue=CATALOGUE, now=DEFAULT_VOCAB.now, tz=DEFAULT_VOCAB.tz, segments=SAVED
        )


def _world(seed: int, persons: int) -> Iterator[World]:
    data = random_oracle_data(seed, persons=persons)
    store = EventStore(":memory:")
    load(store, data)
    engine = SegmentEngine(
        store,
        catalogue=CATALOGUE,
        tz=DEFAULT_VOCAB.tz,
        segment=SAVED.get,
        groups=group_names(data),
        now=lambda: DEFAULT_VOCAB.now,
    )
    yield World(data, engine)
    store.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield from _world(7, 300)


@pytest.fixture(scope="module")
def other_world() -> Iterator[World]:
    yield from _world(11, 200)


ISSUE_EXAMPLES = [
    'city = "北京" and gender = "女"',
    'did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女" and first_seen <= 365d ago',
    "did order_paid >= 2 in last 90d where amount_fen >= 10000",
    'has tag "高意向" and not has tag "已流失"',
    "not did any in last 30d and did order_paid ever",
    "did add_contact then order_paid within 7d in last 60d",
    'in segment "超级用户" or total_spend_fen >= 500000',
]


@pytest.mark.parametrize("text", ISSUE_EXAMPLES)
def test_the_issue_examples_match_the_oracle(world: World, text: str) -> None:
    tree = parse(text)
    assert world.compiled(tree) == world.oracle(tree)


def test_the_examples_select_someone_and_not_everyone(world: World) -> None:
    """The data must make the examples discriminate, or the comparison above proves little."""
    everyone = set(world.data.persons["person_id"])
    sizes = [len(world.oracle(parse(text))) for text in ISSUE_EXAMPLES]
    assert sum(0 < size < len(everyone) for size in sizes) >= 4, sizes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees(DEFAULT_VOCAB))
def test_random_trees_match_the_oracle(world: World, tree: Node) -> None:
    assert world.compiled(tree) == world.oracle(tree)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees(DEFAULT_VOCAB), negate=st.booleans())
def test_random_trees_match_the_oracle_on_other_data(other_world: World, tree: Node, negate: bool) -> None:
    if negate:
        tree = parse(f"not ({to_text(tree)})")
    assert other_world.compiled(tree) == other_world.oracle(tree)
