"""Benchmark: simulate a brand and load it, against plain pandas doing the same amount of I/O.

ours      siyu.simulate.run.simulate (`siyu simulate`) for N customers, then
          siyu.simulate.load.load_simulation (`siyu simulate --load`: customers, events and orders
          through the ordinary import path) into a fresh SIYU_HOME, each step timed.
baseline  (a) numpy + pandas writing a table of random values with the same number of event rows
          and columns to Parquet (the I/O floor of generating that much data);
          (b) pandas.read_parquet of our events file + DataFrame.to_sql into a fresh SQLite file
          (the "just load it" floor, as in bench_import.py).

Target (issue 3): 1M customers / ~20M events simulated and loaded in ≤ 3 minutes; report 10M.

    .venv/bin/python benchmarks/bench_simulate.py --customers 100000
    .venv/bin/python benchmarks/bench_simulate.py --customers 1000000 --skip-baseline
    .venv/bin/python benchmarks/bench_simulate.py --customers 100000 --skip-baseline --together
    .venv/bin/python benchmarks/bench_simulate.py --customers 1000000 --skip-baseline --together-only
    .venv/bin/python benchmarks/bench_simulate.py --customers 10000000 --skip-load --skip-baseline
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from _common import DATA_DIR, fmt_int, fmt_rate, fmt_s, print_footer, print_header, ratio, table, timer

TARGET_SECONDS = 180.0


def _one_after_another(
    args: argparse.Namespace, work: Path, out: Path, rows: list[tuple[str, str, str, str]]
) -> tuple[Any, float, float, Any]:
    """Simulate, then load staff, customers, events and orders one after another, each timed
    (rows added to ``rows``); returns the summary, the simulation's and the total time and the
    store's counts."""
    from siyu.simulate.brands import brand_named
    from siyu.simulate.run import simulate

    counts = None
    with timer() as t_sim:
        summary = simulate(
            brand_named(args.brand),
            customers=args.customers,
            months=args.months,
            seed=args.seed,
            out=out,
            end=date(2026, 11, 1),
        )
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    rows.append(
        (
            "simulate",
            fmt_s(t_sim[0]),
            fmt_rate(summary.events, t_sim[0]),
            f"{summary.events:,} events, {summary.orders:,} order rows, {size / 1e6:,.0f} MB",
        )
    )
    total = t_sim[0]
    if not args.skip_load:
        from siyu.config import Settings
        from siyu.profiles.service import stats
        from siyu.runtime import Runtime
        from siyu.simulate.load import LoadReport, data_files, load_file, load_staff

        with Runtime.open(Settings(home=work / "home")) as rt:
            loaded = LoadReport()
            with timer() as t_staff:
                load_staff(rt, out, loaded)
            rows.append(("load staff", fmt_s(t_staff[0]), "", ""))
            total += t_staff[0]
            for kind, path in data_files(out):
                with timer() as t:
                    load_file(rt, kind, path, loaded)
                report = loaded.reports[kind]
                total += t[0]
                rows.append(
                    (
                        f"load {kind}",
                        fmt_s(t[0]),
                        fmt_rate(report.rows, t[0], "rows/s"),
                        f"{report.rows:,} rows, {report.rejected:,} rejected",
                    )
                )
            counts = stats(rt.engine, rt.events)
        rows.append(("**total**", f"**{fmt_s(total)}**", fmt_rate(summary.events, total), str(counts)))
    return summary, t_sim[0], total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--brand", default="母婴")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-load", action="store_true", help="simulate only")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--together",
        action="store_true",
        help="also time simulate_and_load (`siyu simulate --load`: customers imported while events are simulated)",
    )
    parser.add_argument(
        "--together-only",
        action="store_true",
        help="time only simulate_and_load, the path of `siyu simulate --load` (no steps one by one, no baseline)",
    )
    parser.add_argument("--log", action="store_true", help="log each import stage's wall and CPU time (INFO)")
    args = parser.parse_args()
    if args.together_only:
        args.together, args.skip_baseline = True, True
    if args.log:
        start = time.perf_counter()
        logging.basicConfig(level=logging.INFO, format="%(elapsed)8.2f s  %(message)s", stream=sys.stderr)
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: setattr(record, "elapsed", time.perf_counter() - start) or True)

    from siyu.simulate.brands import brand_named

    print_header(f"simulate {args.customers:,} customers of {args.brand} over {args.months} months, then load")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="siyu-bench-sim-", dir=DATA_DIR))
    rows: list[tuple[str, str, str, str]] = []
    total = 0.0
    counts = None
    best = None  # the time the target is judged on: at once when measured, else one after another
    try:
        out = work / "sim"
        summary = None
        simulated = 0.0
        if not args.together_only:
            summary, simulated, total, counts = _one_after_another(args, work, out, rows)
        if args.together:
            from siyu.config import Settings
            from siyu.profiles.service import stats
            from siyu.runtime import Runtime
            from siyu.simulate.pipeline import simulate_and_load

            with Runtime.open(Settings(home=work / "home-together")) as rt, timer() as t_both:
                both, _ = simulate_and_load(
                    rt,
                    brand_named(args.brand),
                    customers=args.customers,
                    months=args.months,
                    seed=args.seed,
                    out=work / "sim-together",
                    end=date(2026, 11, 1),
                )
                found = stats(rt.engine, rt.events)
            best = t_both[0]
            same = str(found) if counts is None else f"same counts: {found == counts}"
            compared = "" if args.together_only else f"ours / the steps one after another {ratio(t_both[0], total)}; "
            rows.append(
                (
                    "**simulate + load at once**",
                    f"**{fmt_s(t_both[0])}**",
                    fmt_rate(both.events, t_both[0]),
                    compared + same,
                )
            )
        print(table(["step", "time", "rate", "size / outcome"], rows))

        if not args.skip_baseline and summary is not None:
            import numpy as np
            import pandas as pd

            rng = np.random.default_rng(0)
            n = summary.events
            with timer() as t_gen:
                pool = np.array([f"value-{i:06d}" for i in range(10_000)], dtype=object)
                frame = pd.DataFrame(
                    {
                        "message_id": pool[rng.integers(0, 10_000, n)],
                        "event": pool[rng.integers(0, 20, n)],
                        "timestamp": pd.to_datetime(rng.integers(1.7e18, 1.8e18, n, dtype=np.int64), utc=True),
                        **{f"id{i}": pool[rng.integers(0, 10_000, n)] for i in range(4)},
                        **{f"prop{i}": pool[rng.integers(0, 10_000, n)] for i in range(8)},
                        **{f"int{i}": rng.integers(0, 10_000, n) for i in range(4)},
                    }
                )
                frame.to_parquet(work / "baseline.parquet")
            del frame
            with timer() as t_load:
                events = pd.read_parquet(out / "events.parquet")
                con = sqlite3.connect(work / "baseline.sqlite")
                events.to_sql("events", con, index=False, chunksize=100_000)
                con.commit()
                con.close()
            print()
            print(
                table(
                    ["baseline", "time", "rate", "ratio (ours / baseline time)"],
                    [
                        (
                            "numpy + pandas → Parquet, same rows × 19 columns",
                            fmt_s(t_gen[0]),
                            fmt_rate(n, t_gen[0]),
                            ratio(simulated, t_gen[0]),
                        ),
                        (
                            "pandas read_parquet → to_sql SQLite (events file)",
                            fmt_s(t_load[0]),
                            fmt_rate(n, t_load[0]),
                            ratio(total - simulated, t_load[0]) if not args.skip_load else "n/a",
                        ),
                    ],
                )
            )
        if not args.skip_load:
            judged = total if best is None else best
            how = "one step after another" if best is None else "at once"
            if args.customers >= 1_000_000:
                verdict = "met" if judged <= TARGET_SECONDS else "not met"
            else:
                verdict = "the target is for 1,000,000 customers"
            print(
                f"\ntarget: 1M customers simulated and loaded in ≤ {TARGET_SECONDS:.0f} s — "
                f"this run: {fmt_int(args.customers)} customers in {fmt_s(judged)}, {how} ({verdict})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_footer()


if __name__ == "__main__":
    main()
