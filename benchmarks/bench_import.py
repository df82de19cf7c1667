"""Benchmark: file import of N events from Parquet, against a pandas + SQLite load of the same file.

ours      siyu.ingest.files.import_file(runtime.ingestor, path, "events") on a fresh SIYU_HOME
          (checks, dedupe, identity graph with merges, both stores) — the code behind `siyu import`.
baseline  pandas.read_parquet → drop duplicate message ids → one-hop identity mapping with a
          groupby + factorize → DataFrame.to_sql (executemany) into a fresh SQLite file.
re-import the same file again through siyu (new Runtime, as a second `siyu import` would be):
          every row must come back as a duplicate (accepted == 0); printed, not asserted.

Data: see benchmarks/_data.py (20 events per person, 5 % of persons merged through a second
anonymous id). The target from the issue is 20M events at ≥ 500k events/s on a 2-core machine.

    .venv/bin/python benchmarks/bench_import.py --events 2000000
    .venv/bin/python benchmarks/bench_import.py --events 200000 --profile   # + cProfile of ours
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA_DIR, fmt_int, fmt_rate, fmt_s, print_footer, print_header, ratio, table, timer
from _data import events_parquet, expected_counts

TARGET_RATE = 500_000


class StageLog(logging.Handler):
    """Collects the per-stage (wall, cpu) seconds that ``siyu.ingest.bulk`` logs at INFO."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stages: list[tuple[str, float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("bulk import") and isinstance(record.args, tuple) and len(record.args) == 3:
            name, wall, cpu = record.args
            assert isinstance(wall, float) and isinstance(cpu, float)
            self.stages.append((str(name), wall, cpu))


def watch_stages() -> StageLog:
    handler = StageLog()
    bulk_log = logging.getLogger("siyu.ingest.bulk")
    bulk_log.setLevel(logging.INFO)
    bulk_log.addHandler(handler)
    return handler


def run_ours(path: Path, home: Path, profile: bool) -> tuple[float, float, object, dict[str, int], str | None]:
    """Import with siyu; returns (seconds, CPU seconds of the process, ImportReport, stats, profile text)."""
    from siyu.config import Settings
    from siyu.ingest.files import import_file
    from siyu.profiles.service import stats
    from siyu.runtime import Runtime

    prof_text = None
    with Runtime.open(Settings(home=home)) as rt:
        prof = cProfile.Profile() if profile else None
        cpu = time.process_time()
        with timer() as t:
            if prof:
                prof.enable()
            report = import_file(rt.ingestor, path, "events")
            if prof:
                prof.disable()
        cpu = time.process_time() - cpu
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(15)
            prof_text = buf.getvalue()
        counts = stats(rt.engine, rt.events)
    return t[0], cpu, report, counts, prof_text


def run_reimport(path: Path, home: Path) -> tuple[float, object]:
    from siyu.config import Settings
    from siyu.ingest.files import import_file
    from siyu.runtime import Runtime

    with timer() as t, Runtime.open(Settings(home=home)) as rt:
        report = import_file(rt.ingestor, path, "events")
    return t[0], report


def run_baseline(path: Path, db_path: Path) -> tuple[float, dict[str, int]]:
    """pandas + SQLite: the 'just load it' approach, same file, same process."""
    import pandas as pd

    with timer() as t:
        df = pd.read_parquet(path)
        df = df.drop_duplicates("message_id")
        # one hop: an anonymous id seen together with a member id belongs to that member
        anon_to_member = df.groupby("anonymous_id")["member_id"].first()
        key = df["member_id"].fillna(df["anonymous_id"].map(anon_to_member)).fillna(df["anonymous_id"])
        codes, _uniques = pd.factorize(key)
        df["person_id"] = codes
        ids = (
            pd.concat(
                [
                    pd.DataFrame({"type": "member_id", "value": df["member_id"], "person_id": codes}),
                    pd.DataFrame({"type": "anonymous_id", "value": df["anonymous_id"], "person_id": codes}),
                ]
            )
            .dropna(subset=["value"])
            .drop_duplicates(["type", "value"])
        )
        con = sqlite3.connect(db_path)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        df.to_sql("events", con, index=False, chunksize=50_000)  # method=None → executemany
        ids.to_sql("identities", con, index=False, chunksize=50_000)
        con.commit()
        con.close()
    persons = len(_uniques)
    return t[0], {"rows": len(df), "persons": persons, "identities": len(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=300_000, help="events in the file (default 300k)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--profile", action="store_true", help="cProfile our import; print the top 15 by cumulative time")
    ap.add_argument("--skip-baseline", action="store_true", help="measure only siyu")
    ap.add_argument("--keep", action="store_true", help="keep the SIYU_HOME and SQLite file (printed)")
    args = ap.parse_args()

    print_header(f"bench_import: {args.events:,} events from Parquet")
    with timer() as t_gen:
        path, _ = events_parquet(DATA_DIR, args.events, seed=args.seed)
    persons, merges = expected_counts(args.events, seed=args.seed)
    size_mb = path.stat().st_size / 1e6
    print(
        f"data: {path} ({size_mb:,.1f} MB, {args.events:,} events, {persons:,} persons, "
        f"{merges:,} of them merged via a second anonymous id; ready in {t_gen[0]:.1f} s)\n",
        flush=True,
    )
    path.read_bytes()  # warm the page cache for both contenders

    work = Path(tempfile.mkdtemp(prefix="siyu-bench-import-", dir=DATA_DIR))
    rows: list[list[str]] = []
    try:
        base_s, base_counts = (None, None)
        if not args.skip_baseline:
            print("running baseline (pandas + SQLite)…", flush=True)
            base_s, base_counts = run_baseline(path, work / "baseline.sqlite")
            gc.collect()
        print("running siyu import…", flush=True)
        stage_log = watch_stages()
        ours_s, ours_cpu, report, counts, prof_text = run_ours(path, work / "home", args.profile)
        stages, stage_log.stages = stage_log.stages, []
        gc.collect()
        print("running siyu re-import of the same file…", flush=True)
        re_s, re_report = run_reimport(path, work / "home")
        re_stages = stage_log.stages

        res = report.result  # type: ignore[attr-defined]
        rows.append(
            [
                "siyu import_file",
                fmt_s(ours_s),
                fmt_rate(args.events, ours_s),
                fmt_int(res.accepted),
                fmt_int(counts["persons"]),
                fmt_int(res.merges),
            ]
        )
        if base_s is not None and base_counts is not None:
            rows.append(
                [
                    "baseline pandas→SQLite",
                    fmt_s(base_s),
                    fmt_rate(args.events, base_s),
                    fmt_int(base_counts["rows"]),
                    fmt_int(base_counts["persons"]),
                    "—",
                ]
            )
        re_res = re_report.result  # type: ignore[attr-defined]
        rows.append(
            ["siyu re-import (same file)", fmt_s(re_s), fmt_rate(args.events, re_s), fmt_int(re_res.accepted), "", ""]
        )
        print()
        print(table(["run", "time", "throughput", "rows stored", "persons", "merges"], rows))
        print()
        summary = [
            ["events in file", fmt_int(args.events)],
            ["expected persons / merges", f"{persons:,} / {merges:,}"],
            ["siyu events stored (incl. $identities_merged change events)", fmt_int(counts["events"])],
            ["siyu identities", fmt_int(counts["identities"])],
            ["siyu rejected rows", fmt_int(report.rejected)],  # type: ignore[attr-defined]
            ["siyu refused merges", fmt_int(res.refused_merges)],
        ]
        if base_s is not None:
            summary.append(["ratio siyu / baseline throughput", ratio(base_s, ours_s)])
        summary.append(["target", f"≥ {TARGET_RATE:,} events/s (issue: 20M events on 2 cores)"])
        summary.append(
            [
                "siyu vs target",
                f"{args.events / ours_s / TARGET_RATE:.2f}× of target — "
                + ("met" if args.events / ours_s >= TARGET_RATE else "NOT met"),
            ]
        )
        ok = re_res.accepted == 0 and re_res.duplicates == res.accepted
        summary.append(
            [
                "idempotency: re-import accepted == 0",
                f"{'yes' if ok else 'NO'} (accepted {re_res.accepted:,}, duplicates {re_res.duplicates:,})",
            ]
        )
        print(table(["check", "value"], summary))
        if stages:
            print(
                f"\nsiyu import by stage (wall / CPU seconds of the whole process, all threads; "
                f"the import used {ours_cpu:.2f} s of CPU in {ours_s:.2f} s):\n"
            )
            stage_rows = [[name, f"{wall:.2f} s", f"{cpu:.2f} s"] for name, wall, cpu in stages]
            walls, cpus = sum(x[1] for x in stages), sum(x[2] for x in stages)
            stage_rows.append(["sum of stages", f"{walls:.2f} s", f"{cpus:.2f} s"])
            print(table(["stage", "wall", "cpu"], stage_rows))
        if re_stages:
            print("\nre-import by stage: " + ", ".join(f"{n} {w:.2f} s" for n, w, _ in re_stages))
        if prof_text:
            print("\ncProfile of the siyu import (top 15 by cumulative time; profiling slows it down):\n")
            print(prof_text)
        if args.keep:
            print(f"\nkept: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    print_footer()


if __name__ == "__main__":
    main()
