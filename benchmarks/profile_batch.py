"""Profiling helper (not a benchmark): the work of POST /v1/batch, in-process, without HTTP.

Runs the same batches as bench_http through what the endpoint does per request —
``ingestor.refresh_plan()``, ``ingestor.validator.messages(items)``,
``ingestor.ingest_messages(checked.messages)`` — on a fresh SIYU_HOME, first timed (split into
JSON parsing, validation and ingest), then again on another fresh home under cProfile.
Shows where the server's CPU goes per event.

    .venv/bin/python benchmarks/profile_batch.py --events 50000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import orjson
from _common import DATA_DIR, print_footer, print_header, table
from bench_http import build_bodies


def run(bodies: list[bytes], home: Path) -> dict[str, float]:
    from siyu.config import Settings
    from siyu.runtime import Runtime

    spent = {"parse JSON": 0.0, "validate": 0.0, "ingest": 0.0}
    with Runtime.open(Settings(home=home)) as rt:
        for body in bodies:
            t0 = time.perf_counter()
            items = orjson.loads(body)["batch"]
            t1 = time.perf_counter()
            rt.ingestor.refresh_plan()
            checked = rt.ingestor.validator.messages(items)
            t2 = time.perf_counter()
            rt.ingestor.ingest_messages(checked.messages, source="api")
            t3 = time.perf_counter()
            spent["parse JSON"] += t1 - t0
            spent["validate"] += t2 - t1
            spent["ingest"] += t3 - t2
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    print_header(f"profile_batch: {args.events:,} events through the /v1/batch work, in-process")
    bodies, _warm, n = build_bodies(args.events, args.batch, args.seed)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="siyu-profile-batch-", dir=DATA_DIR))
    try:
        spent = run(bodies, work / "timed")
        prof = cProfile.Profile()
        prof.enable()
        run(bodies, work / "profiled")
        prof.disable()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(spent.values())
    rows = [[k, f"{v:,.2f} s", f"{v / n * 1e6:,.0f} µs", f"{v / total:.0%}"] for k, v in spent.items()]
    rows.append(["total", f"{total:,.2f} s", f"{total / n * 1e6:,.0f} µs", f"{n / total:,.0f} events/s"])
    print(table(["step (no HTTP)", "time", "per event", "share"], rows))
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(args.top)
        print(f"\ncProfile, top {args.top} by {key}:\n")
        print(buf.getvalue().strip("\n"))
    print_footer()


if __name__ == "__main__":
    main()
