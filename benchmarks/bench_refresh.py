"""Benchmark: refresh 20 saved segments after 10k new events, on 1M persons / 20M events.

ours      ``SegmentService.saved.refresh()`` — every dynamic segment, incremental where the
          definition does not read the time (only persons touched since the last refresh are
          re-evaluated), full otherwise; writes entered / exited rows and events.
baseline  the same refresh with ``full=True`` (every segment re-evaluated for everyone), same run.

Each timing is the refresh plus a CHECKPOINT right after it (its own writes persisted); the new
events are checkpointed before the clock starts (that is the ingest's cost, and otherwise DuckDB's
automatic checkpoint falls wherever the WAL crosses 16 MB — seen costing 0.3–6.8 s inside a refresh).

Data: the store of bench_segments.py (built there if missing; time-ordered events), copied into a
fresh SIYU_HOME with an empty ops store. The 10k new events (favorites and views by random persons,
now) and 1k trait changes (city: their ``$trait_changed`` events and the state fold) are appended
to the event store directly, as the ingest path and ``apply_changes`` would leave them.
Target from the issue: ≤ 2 s for the 20 segments.

    .venv/bin/python benchmarks/bench_refresh.py --persons 1000000 --events 20000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from _common import DATA_DIR, fmt_int, fmt_s, print_footer, print_header, ratio, table
from bench_segments import build, store_path

from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.store.events import EVENTS_ARROW
from siyu.store.state import CHANGES_ARROW, fold_changes

#: Ten definitions that do not read the time (incremental) and ten that do (full).
SEGMENTS = {
    "北京女性": 'city = "北京" and gender = "女"',
    "收藏过": "did favorite ever",
    "常看商品": "did view_product >= 12 ever",
    "上海未收藏": 'city = "上海" and not did favorite ever',
    "北京收藏": 'city = "北京" and did favorite ever',
    "男性": 'gender = "男"',
    "北京或女性": 'city = "北京" or gender = "女"',
    "收藏两次": "did favorite >= 2 ever",
    "看过没收藏": "did view_product ever and never did favorite ever",
    "老客": 'first_seen <= "2025-06-01"',
    "近7天活跃": "did any in last 7d",
    "近30天收藏": "did favorite in last 30d",
    "北京近7天": 'city = "北京" and did any in last 7d',
    "沉睡": "not did any in last 30d",
    "新客": "first_seen >= 30d ago",
    "近90天常看": "did view_product >= 5 in last 90d",
    "女性近30天收藏": 'gender = "女" and did favorite in last 30d',
    "近14到7天活跃": "did any between 14d ago and 7d ago",
    "近一年老客": "first_seen <= 365d ago and did any in last 30d",
    "近1天": "did any in last 1d",
}


def new_events(persons: int, n: int, now: datetime, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    who = rng.integers(0, persons, n)
    names = np.where(rng.random(n) < 0.3, "favorite", "view_product")
    ts = [now - timedelta(seconds=int(s)) for s in rng.integers(0, 3600, n)]
    return pa.table(
        {
            "event_id": [f"new-{seed}-{i}" for i in range(n)],
            "person_id": [f"p{w}" for w in who],
            "identity_type": [None] * n,
            "identity_value": [None] * n,
            "identities": [None] * n,
            "message_type": ["track"] * n,
            "name": names.tolist(),
            "ts": ts,
            "properties": ["{}"] * n,
            "source": ["bench"] * n,
            "received_at": [now] * n,
        },
        schema=EVENTS_ARROW,
    )


def trait_changes(persons: int, n: int, now: datetime, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed + 1)
    who = rng.choice(persons, n, replace=False)
    return pa.table(
        {
            "seq": list(range(n)),
            "kind": ["trait_changed"] * n,
            "person_id": [f"p{w}" for w in who],
            "payload": [json.dumps({"key": "city", "new": "北京"}, ensure_ascii=False)] * n,
            "changed_at": [now] * n,
        },
        schema=CHANGES_ARROW,
    )


def change_events(changes: pa.Table, now: datetime) -> pa.Table:
    """The ``$trait_changed`` events ``apply_changes`` writes beside the fold (what makes persons touched)."""
    n = changes.num_rows
    return pa.table(
        {
            "event_id": [f"chg-{now.timestamp()}-{i}" for i in range(n)],
            "person_id": changes.column("person_id").to_pylist(),
            "identity_type": [None] * n,
            "identity_value": [None] * n,
            "identities": [None] * n,
            "message_type": ["change"] * n,
            "name": ["$trait_changed"] * n,
            "ts": [now] * n,
            "properties": changes.column("payload").to_pylist(),
            "source": ["siyu"] * n,
            "received_at": [now] * n,
        },
        schema=EVENTS_ARROW,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--new-events", type=int, default=10_000)
    args = parser.parse_args()
    print_header(
        f"Refresh 20 segments after {fmt_int(args.new_events)} new events: "
        f"{fmt_int(args.persons)} persons / {fmt_int(args.events)} events"
    )
    source = store_path(args.persons, args.events, "time")
    if not source.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        build(source, args.persons, args.events, "time")
    home = DATA_DIR / "refresh-home"
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(home=home)
    home.mkdir(parents=True)
    shutil.copy(source, settings.resolved_events_path)
    rows: list[list[object]] = []
    with Runtime.open(settings) as rt:
        svc = rt.segments()
        t0 = time.perf_counter()
        for name, text in SEGMENTS.items():
            svc.saved.create(name, text, by="bench")
        created = time.perf_counter() - t0
        rows.append(["create 20 segments (first full evaluation each)", fmt_s(created), ""])
        for round_, full in enumerate((False, True)):
            now = datetime.now(UTC)
            with rt.events.transaction() as con:
                rt.events.append_events(con, new_events(args.persons, args.new_events, now, round_))
                changes = trait_changes(args.persons, args.new_events // 10, now, round_)
                rt.events.append_events(con, change_events(changes, now))
                fold_changes(con, changes)
            # The writes above are the ingest's: persisted before the clock starts, so that wherever
            # DuckDB's automatic checkpoint would have fallen, it does not land in the refresh. The
            # refresh's own writes are persisted inside the timing (a checkpoint right after it).
            t0 = time.perf_counter()
            rt.events.con.execute("CHECKPOINT")
            ingest_checkpoint = time.perf_counter() - t0
            t0 = time.perf_counter()
            results = svc.saved.refresh(full=full)
            refreshed = time.perf_counter() - t0
            rt.events.con.execute("CHECKPOINT")
            took = time.perf_counter() - t0
            modes = {m: sum(r.mode == m for r in results) for m in ("incremental", "full")}
            inc = sum(r.seconds for r in results if r.mode == "incremental")
            moved = sum(r.entered + r.exited for r in results)
            label = "full refresh of all 20 (baseline)" if full else "siyu refresh (incremental where possible)"
            rows.append(
                [
                    label,
                    fmt_s(took),
                    f"{modes['incremental']} incremental ({fmt_s(inc)}), {modes['full']} full; "
                    f"{moved:,} entered+exited; refresh {fmt_s(refreshed)} + its checkpoint "
                    f"{fmt_s(took - refreshed)} (the ingest's checkpoint before, not counted: "
                    f"{fmt_s(ingest_checkpoint)})",
                ]
            )
            if not full:
                ours = took
            else:
                rows[-1][2] = f"{rows[-1][2]}; ours/baseline {ratio(ours, took)}"
        copies = copy_timings(rt, args.persons, args.new_events)
    print(table(["", "time", "detail"], rows))
    print("\nThe copy of the touched persons' events (the incremental refresh's largest step): all their rows,")
    print("as when some definition reads any time (`ever`, `first did`), against rows since the earliest window")
    print("start when every definition reads a window (membership.events_since); best of 3:\n")
    print(table(["copy", "time", "rows"], copies))
    print_footer()


def copy_timings(rt: Runtime, persons: int, touched: int) -> list[list[object]]:
    """Time the touched-persons copy of events for ``touched`` random persons, unbounded and from 30 days ago."""
    cur = rt.events.cursor()
    rng = np.random.default_rng(7)
    cur.register("_bench_touched", pa.table({"person_id": [f"p{i}" for i in rng.integers(0, persons, touched)]}))
    since = datetime.now(UTC) - timedelta(days=30)
    out: list[list[object]] = []
    times: list[float] = []
    for label, bound in (("all rows", ""), ("since 30 days ago", " AND ts >= $since")):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE _bench_copy AS SELECT person_id, message_type, name, ts, properties "
                f"FROM events WHERE person_id IN (SELECT person_id FROM _bench_touched){bound}",
                {"since": since} if bound else None,
            )
            best = min(best, time.perf_counter() - t0)
        times.append(best)
        rows = cur.execute("SELECT count(*) FROM _bench_copy").fetchall()[0][0]
        out.append([label, fmt_s(best), fmt_int(rows)])
    out[1][2] = f"{out[1][2]}; {ratio(times[1], times[0])} of all rows' time"
    cur.execute("DROP TABLE _bench_copy")
    cur.close()
    return out


if __name__ == "__main__":
    main()
