"""Benchmark: the issue's second segment example over P persons / E events.

    did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女"
        and first_seen <= 365d ago

ours      siyu.segments.engine.SegmentEngine.count — parse, compile to Ibis, generate SQL, run on
          the DuckDB event store (events_resolved, person_state, trait_state). Median of warm runs.
hand SQL  one hand-written DuckDB query answering the same question on the same connection.
pandas    the same question in plain pandas on frames already in memory (loading not timed).
spark     (with --spark) siyu.segments.spark.SparkSegmentEngine.count on local Spark (2 cores) over
          the store exported to a Parquet lake (export and session start not timed). Median of warm runs.

Data (seeded, built once with DuckDB SQL into benchmarks/.data, reused): persons with first_seen
spread over two years, 20 events each on average over the last 400 days (5 % favorite), city
(10 % 北京) and gender traits. Target from the issue: ≤ 0.3 s at 1M / 20M, within 1.5× of the hand
SQL, ≥ 100× faster than pandas.

    .venv/bin/python benchmarks/bench_segments.py --persons 1000000 --events 20000000
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from _common import DATA_DIR, fmt_int, fmt_s, print_footer, print_header, ratio, table

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

    ``layout="time"`` stores events in time order, as an append-only log written as they arrive
    is; ``"random"`` shuffles them (the worst case: no block can be skipped by time)."""
    store = EventStore(path)
    con = store.con
    con.execute("SELECT setseed(0.42)")
    start = NOW - timedelta(days=400)
    con.execute(f"""INSERT INTO events BY NAME
        SELECT 'e' || i AS event_id, 'p' || (hash(i) % {persons}) AS person_id, 'track' AS message_type,
               CASE WHEN random() < 0.05 THEN 'favorite' WHEN random() < 0.5 THEN 'view_product'
                    ELSE 'page_view' END AS name,
               TIMESTAMPTZ '{start.isoformat()}' + to_microseconds((random() * 400 * 86400e6)::BIGINT) AS ts,
               '{{}}' AS properties, 'bench' AS source, TIMESTAMPTZ '{NOW.isoformat()}' AS received_at
        FROM range({events}) r(i) ORDER BY {"ts" if layout == "time" else "hash(i)"}""")
    con.execute("""INSERT INTO person_state
        SELECT person_id, min(ts) - to_days((hash(person_id) % 365)::INTEGER), max(ts), NULL
        FROM events GROUP BY person_id""")
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
    path = DATA_DIR / f"segments-{args.persons}-{args.events}-{args.layout}.duckdb"
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
    if not args.skip_pandas:
        events = cur.execute("SELECT person_id, name, ts FROM events").df()
        state = cur.execute("SELECT person_id, first_seen FROM person_state").df()
        traits = cur.execute("SELECT person_id, key, value FROM trait_state").df()
        slow, n_pandas = timed(lambda: pandas_count(events, state, traits), 1)
        rows.append(["plain pandas (frames in memory)", fmt_s(slow), n_pandas, ratio(slow, ours) + " (pandas/ours)"])
    n_spark = None
    if args.spark:
        spark, n_spark = spark_count(store, path, catalogue, tree, args.runs)
        rows.append(
            ["siyu on local Spark (Parquet lake, warm)", fmt_s(spark), n_spark, ratio(spark, ours) + " (spark/ours)"]
        )
    print(table(["", "median time", "count", "ratio"], rows))
    assert n_ours == n_hand, "the engine and the hand-written SQL disagree"
    assert n_spark in (None, n_ours), "Spark and DuckDB disagree"
    print_footer()


if __name__ == "__main__":
    main()
