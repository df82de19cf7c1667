"""Benchmark: the issue's second segment example over P persons / E events.

    did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女"
        and first_seen <= 365d ago

ours      siyu.segments.engine.SegmentEngine.count — parse, compile to Ibis, generate SQL, run on
          the DuckDB event store (events_resolved, person_state, trait_state). Median of warm runs.
hand SQL  one hand-written DuckDB query answering the same question on the same connection.
plain pandas evaluator
          the baseline of the issue's ≥ 100× target (decision 020): the project's independent
          plain-pandas evaluator of segment trees (tests/segment_oracle.py, written from
          docs/segments.md for the tests) evaluating the same tree over the same rows as data
          frames already in memory (loading them is not timed; its preparation of the frames is).
          One run.
hand pandas
          the same question written by hand in vectorised pandas for this one expression, on frames
          already in memory (loading not timed): the pandas counterpart of the hand SQL, reported
          beside the baseline. One run after a warm one.
spark     (with --spark) siyu.segments.spark.SparkSegmentEngine.count on local Spark (2 cores) over
          the store exported to a Parquet lake (export and session start not timed). Median of warm runs.

Data (seeded, built once with DuckDB SQL into benchmarks/.data, reused): every person has a first
sighting spread over the last two years (about half more than a year ago), then E − P events at
random moments of the last 400 days, each after its person's first sighting (5 % favorite);
city (10 % 北京) and gender traits. person_state
is folded from the events, so every evaluator reads the same first_seen. Target from the issue:
≤ 0.3 s at 1M / 20M, within 1.5× of the hand SQL, ≥ 100× faster than plain pandas.

    .venv/bin/python benchmarks/bench_segments.py --persons 1000000 --events 20000000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pandas as pd
from _common import DATA_DIR, ROOT, fmt_int, fmt_s, print_footer, print_header, ratio, table

from siyu.segments import Catalogue, parse
from siyu.segments.engine import SegmentEngine
from siyu.segments.nodes import Node
from siyu.store.events import EventStore
from siyu.store.state import TYPED_VALUES

EXAMPLE = (
    'did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女" and first_seen <= 365d ago'
)
NOW = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)


def build(path: Path, persons: int, events: int, layout: str) -> None:
    """A store with ``persons`` persons and ``events`` events (seeded SQL; state tables as the fold keeps them).

    Each person is first sighted at a moment spread over the last two years; the other
    ``events - persons`` events fall on random persons at random moments of the last 400 days,
    each after its person's first sighting (every person acts at the same rate once known, so
    the brand grows). ``person_state`` is folded from the events
    (first / last seen = earliest / latest event), as the store's own fold does.
    ``layout="time"`` stores events in time order, as an append-only log written as they arrive
    is; ``"random"`` shuffles them (the worst case: no block can be skipped by time)."""
    store = EventStore(path)
    con = store.con
    con.execute("SELECT setseed(0.42)")
    start = NOW - timedelta(days=400)
    con.execute(f"""CREATE TEMP TABLE first AS
        SELECT i, TIMESTAMPTZ '{NOW.isoformat()}' - to_microseconds((random() * 730 * 86400e6)::BIGINT) AS f
        FROM range({persons}) r(i)""")
    # Each person acts at the same rate from its first sighting on, so the brand grows: draw
    # candidates over the whole window and keep those after their person's first sighting (about
    # 73 % of them; 1.5× as many are drawn, the first ``events - persons`` kept).
    drawn = max(events - persons, 0)
    con.execute(f"""CREATE TEMP TABLE raw AS
        WITH candidates AS (
            SELECT i AS n, hash(i) % {persons} AS p, random() AS u, random() AS w,
                   TIMESTAMPTZ '{start.isoformat()}' + to_microseconds((random() * 400 * 86400e6)::BIGINT) AS ts
            FROM range({drawn * 3 // 2}) r(i)
        ), kept AS (
            SELECT c.* FROM candidates c JOIN first ON first.i = c.p WHERE c.ts >= first.f
            ORDER BY n LIMIT {drawn}
        )
        SELECT 'e' || n AS event_id, 'p' || p AS person_id,
               CASE WHEN u < 0.05 THEN 'favorite' WHEN w < 0.5 THEN 'view_product' ELSE 'page_view' END AS name,
               ts, n
        FROM kept
        UNION ALL
        SELECT 'f' || i, 'p' || i, 'page_view', f, {events} + i FROM first""")
    con.execute(f"""INSERT INTO events BY NAME
        SELECT event_id, person_id, 'track' AS message_type, name, ts, '{{}}' AS properties,
               'bench' AS source, TIMESTAMPTZ '{NOW.isoformat()}' AS received_at
        FROM raw ORDER BY {"ts" if layout == "time" else "hash(n)"}""")
    stored = con.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    # Fewer candidates than asked can survive the first-sighting filter (about 73 % do, 67 % are needed).
    assert stored == max(events, persons), f"built {stored:,} events, not {max(events, persons):,}"
    con.execute("DROP TABLE raw; DROP TABLE first")
    con.execute("""INSERT INTO person_state
        SELECT person_id, min(ts), max(ts), NULL FROM events GROUP BY person_id""")
    con.execute(f"""INSERT INTO trait_state
        SELECT person_id, key, value, {TYPED_VALUES}, first_seen FROM (
            SELECT person_id, 'city' AS key, first_seen,
                   CASE WHEN hash(person_id || 'c') % 10 = 0 THEN '"北京"' ELSE '"上海"' END AS value
            FROM person_state
            UNION ALL
            SELECT person_id, 'gender', first_seen,
                   CASE WHEN hash(person_id || 'g') % 2 = 0 THEN '"女"' ELSE '"男"' END
            FROM person_state)""")
    con.execute("CHECKPOINT")
    store.close()


def store_path(persons: int, events: int, layout: str) -> Path:
    """Where the store of this size and layout is cached (the name changes with the data's shape)."""
    return DATA_DIR / f"segments-v4-{persons}-{events}-{layout}.duckdb"


HAND_SQL = """
WITH fav AS (SELECT DISTINCT person_id FROM events_resolved
             WHERE name = 'favorite' AND ts >= $now - INTERVAL 30 DAY AND ts <= $now),
     act AS (SELECT DISTINCT person_id FROM events_resolved
             WHERE message_type <> 'change' AND ts >= $now - INTERVAL 7 DAY AND ts <= $now),
     city AS (SELECT person_id FROM trait_state WHERE key = 'city' AND value_str = '北京'),
     gender AS (SELECT person_id FROM trait_state WHERE key = 'gender' AND value_str = '女'),
     old AS (SELECT person_id FROM person_state WHERE first_seen <= $now - INTERVAL 365 DAY)
SELECT count(*) FROM fav JOIN act USING (person_id) JOIN city USING (person_id)
    JOIN gender USING (person_id) JOIN old USING (person_id)
"""


def timed(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    fn()  # warm
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def pandas_count(events: pd.DataFrame, state: pd.DataFrame, traits: pd.DataFrame) -> int:
    now = pd.Timestamp(NOW)
    recent = events[(events.ts >= now - pd.Timedelta(days=30)) & (events.ts <= now)]
    fav = set(recent.person_id[recent.name == "favorite"])
    week = recent[recent.ts >= now - pd.Timedelta(days=7)]
    act = set(week.person_id)
    city = set(traits.person_id[(traits.key == "city") & (traits.value == '"北京"')])
    gender = set(traits.person_id[(traits.key == "gender") & (traits.value == '"女"')])
    old = set(state.person_id[state.first_seen <= now - pd.Timedelta(days=365)])
    return len(fav & act & city & gender & old)


def plain_pandas(cur: duckdb.DuckDBPyConnection, tree: Node, catalogue: Catalogue) -> tuple[float, int]:
    """The time and the count of the project's plain-pandas evaluator (the tests' oracle) on
    ``tree``, given the store's rows as data frames (reading them is not timed)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from segment_oracle import empty_data, evaluate

    data = empty_data()
    data.events = cur.execute("SELECT event_id, person_id, name, ts, properties, message_type FROM events").df()
    data.persons = cur.execute("SELECT person_id, owner FROM person_state").df()
    traits = cur.execute("SELECT person_id, key, value FROM trait_state").df()
    traits["value"] = [orjson.loads(value) for value in traits["value"]]
    data.traits = traits
    t0 = time.perf_counter()
    members = evaluate(tree, data, catalogue=catalogue, now=NOW)
    return time.perf_counter() - t0, len(members)


def spark_count(store: EventStore, path: Path, catalogue: Catalogue, tree: Node, runs: int) -> tuple[float, object]:
    """The segment on local Spark over the store's Parquet lake (exported once, next to the store)."""
    from siyu.segments.spark import SparkSegmentEngine, export_lake, local_session

    lake = path.with_suffix(".lake")
    if not lake.exists():
        t0 = time.perf_counter()
        export_lake(store, lake)
        print(f"exported {lake.name} in {fmt_s(time.perf_counter() - t0)}")
    t0 = time.perf_counter()
    session = local_session(2, shuffle_partitions=4, app="siyu-bench-segments")
    session.sparkContext.setLogLevel("ERROR")
    engine = SparkSegmentEngine(session, lake, catalogue=catalogue, now=lambda: NOW)
    print(f"Spark session started in {fmt_s(time.perf_counter() - t0)}")
    try:
        return timed(lambda: engine.count(tree), runs)
    finally:
        session.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--layout", choices=["time", "random"], default="time", help="event order on disk")
    parser.add_argument("--spark", action="store_true", help="also time the segment on local Spark (needs Java)")
    args = parser.parse_args()
    print_header(
        f"Segment count: {fmt_int(args.persons)} persons / {fmt_int(args.events)} events ({args.layout} order)"
    )
    path = store_path(args.persons, args.events, args.layout)
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build(path, args.persons, args.events, args.layout)
        print(f"built {path.name} in {fmt_s(time.perf_counter() - t0)}")
    store = EventStore(path)
    catalogue = Catalogue.from_dict({"traits": {"city": "string", "gender": "string"}, "events": {"favorite": {}}})
    engine = SegmentEngine(store, catalogue=catalogue, now=lambda: NOW)
    tree = parse(EXAMPLE)
    ours, n_ours = timed(lambda: engine.count(tree), args.runs)
    cur = store.cursor()
    hand, n_hand = timed(lambda: cur.execute(HAND_SQL, {"now": NOW}).fetchone()[0], args.runs)  # type: ignore[index]
    compile_only, _ = timed(lambda: engine.sql(tree), args.runs)
    rows: list[list[object]] = [
        ["siyu SegmentEngine.count (parse+compile+run)", fmt_s(ours), n_ours, "—"],
        ["  of which compile to SQL", fmt_s(compile_only), "", ""],
        ["hand-written DuckDB SQL", fmt_s(hand), n_hand, ratio(ours, hand) + " (ours/hand)"],
    ]
    counts = {"hand SQL": n_hand}
    if not args.skip_pandas:
        plain, counts["plain pandas evaluator"] = plain_pandas(cur, tree, catalogue)
        rows.append(
            [
                "plain pandas evaluator (baseline)",
                fmt_s(plain),
                counts["plain pandas evaluator"],
                ratio(plain, ours) + " (pandas/ours)",
            ]
        )
        events = cur.execute("SELECT person_id, name, ts FROM events").df()
        state = cur.execute("SELECT person_id, first_seen FROM person_state").df()
        traits = cur.execute("SELECT person_id, key, value FROM trait_state").df()
        by_hand, counts["hand pandas"] = timed(lambda: pandas_count(events, state, traits), 1)
        rows.append(
            [
                "hand-written vectorised pandas (this expression only)",
                fmt_s(by_hand),
                counts["hand pandas"],
                ratio(by_hand, ours) + " (pandas/ours)",
            ]
        )
    n_spark = None
    if args.spark:
        spark, n_spark = spark_count(store, path, catalogue, tree, args.runs)
        rows.append(
            ["siyu on local Spark (Parquet lake, warm)", fmt_s(spark), n_spark, ratio(spark, ours) + " (spark/ours)"]
        )
    print(table(["", "median time", "count", "ratio"], rows))
    for name, count in counts.items():
        assert count == n_ours, f"the engine and the {name} disagree"
    assert n_spark in (None, n_ours), "Spark and DuckDB disagree"
    print_footer()


if __name__ == "__main__":
    main()
