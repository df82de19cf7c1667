"""Golden files of the SQL the compiler generates: ``tests/golden/segments_sql/*.sql``.

One file per expression (the issue's examples and one per condition family), compiled at a fixed
`now` in Asia/Shanghai for DuckDB. A change in the generated SQL shows up as a diff to review; every
golden query is also run on a real DuckDB event store (the random data of the oracle tests) and
must select exactly what the compiled expression selects. Regenerate after a deliberate change:

    .venv/bin/python tests/test_segment_sql_golden.py --regenerate
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment_data import random_oracle_data
from segment_load import group_names, load
from segment_vocab import DEFAULT_VOCAB, vocab_catalogue, vocab_segments
from siyu.segments import parse
from siyu.segments.engine import SegmentEngine
from siyu.store.events import EventStore

GOLDEN = Path(__file__).resolve().parent / "golden" / "segments_sql"

EXPRESSIONS: dict[str, str] = {
    "01-city-gender": 'city = "北京" and gender = "女"',
    "02-favorite-active-beijing": (
        'did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女" and first_seen <= 365d ago'
    ),
    "03-paid-twice": "did order_paid >= 2 in last 90d where amount_fen >= 10000",
    "04-tags": 'has tag "高意向" and not has tag "已流失"',
    "05-dormant-buyer": "not did any in last 30d and did order_paid ever",
    "06-sequence": "did add_contact then order_paid within 7d in last 60d",
    "07-segment-or-spend": 'in segment "超级用户" or total_spend_fen >= 500000',
    "08-count-includes-zero": "did order_paid < 2 in last 90d",
    "09-first-did": "first did order_paid where amount_fen >= 10000 in last 30d",
    "10-orders-category": 'orders sum amount_fen where category = "奶粉" >= 10000 in last 180d',
    "11-orders-aov": "orders aov >= 20000",
    "12-trait-types": 'age between 18 and 30 and vip = true and score >= 4.5 and interests contains "烘焙"',
    "13-dates": 'birthday < "2000-01-01" and last_seen between 60d ago and 30d ago',
    "14-group-owner": 'in group "宝妈交流群 1" and owner = "zhangsan"',
    "15-all-none-tags": 'has all tags in ("高意向", "复购") or has no tag in ("羊毛党")',
    "16-is-set": "balance_fen is not set and nickname is set",
}


def _engine(store: EventStore, data_groups: dict[str, tuple[str, ...]]) -> SegmentEngine:
    saved = vocab_segments()
    return SegmentEngine(
        store,
        catalogue=vocab_catalogue(),
        tz=DEFAULT_VOCAB.tz,
        segment=saved.get,
        groups=data_groups,
        now=lambda: DEFAULT_VOCAB.now,
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[SegmentEngine]:
    data = random_oracle_data(3, persons=120)
    store = EventStore(":memory:")
    load(store, data)
    yield _engine(store, group_names(data))
    store.close()


def _sql(engine: SegmentEngine, text: str) -> str:
    return engine.sql(parse(text)).strip() + "\n"


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_generated_sql_matches_the_golden_file(engine: SegmentEngine, name: str) -> None:
    golden = GOLDEN / f"{name}.sql"
    assert golden.exists(), f"missing {golden.name}: run this file with --regenerate"
    expected = golden.read_text(encoding="utf-8").split("\n", 1)[1]  # after the "-- expression" line
    assert _sql(engine, EXPRESSIONS[name]) == expected, f"{golden.name} differs: review, then --regenerate"


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_golden_sql_runs_on_duckdb_and_selects_the_same(engine: SegmentEngine, name: str) -> None:
    sql = (GOLDEN / f"{name}.sql").read_text(encoding="utf-8")
    cur = engine.store.cursor()
    cur.execute(f"SET TimeZone = '{DEFAULT_VOCAB.tz}'")
    ran = {r[0] for r in cur.execute(sql).fetchall()}
    assert ran == engine.members(parse(EXPRESSIONS[name]))


def regenerate() -> None:
    data = random_oracle_data(3, persons=120)
    store = EventStore(":memory:")
    load(store, data)
    engine = _engine(store, group_names(data))
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, text in EXPRESSIONS.items():
        (GOLDEN / f"{name}.sql").write_text(f"-- {text}\n" + _sql(engine, text), encoding="utf-8")
    store.close()


if __name__ == "__main__" and "--regenerate" in sys.argv:
    regenerate()
    print(f"wrote {len(EXPRESSIONS)} files under {GOLDEN}")
