"""Benchmark: `siyu demo` from an empty SIYU_HOME to a served 概览 page with numbers.

ours      `siyu demo --port P` as a subprocess on an empty SIYU_HOME (simulate the default brand,
          load it, serve); the clock stops when GET / answers 200 and GET /v1/overview answers
          200 with the demo's admin key (the data the page shows).
baseline  `siyu serve` on an empty SIYU_HOME until GET / answers 200: the cost of starting the
          server alone.

Target (issue 3): ≤ 60 s with the default 50,000 customers and 12 months.

    .venv/bin/python benchmarks/bench_demo.py
    .venv/bin/python benchmarks/bench_demo.py --customers 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _common import DATA_DIR, fmt_s, print_footer, print_header, ratio, table

TARGET_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _time_until_ready(args: list[str], home: Path, ready: Callable[[str, Path], bool], limit: float) -> float:
    port = _free_port()
    env = {**os.environ, "SIYU_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "siyu.cli", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        while time.perf_counter() - start < limit:
            try:
                if ready(base, home):
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
            time.sleep(0.1)
        raise RuntimeError(f"{args[0]} not ready within {limit:.0f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _page_and_data(base: str, home: Path) -> bool:
    key_file = home / "demo-admin-key.txt"
    if httpx.get(base + "/", timeout=2).status_code != 200 or not key_file.exists():
        return False
    r = httpx.get(
        base + "/v1/overview", headers={"Authorization": f"Bearer {key_file.read_text().strip()}"}, timeout=30
    )
    return r.status_code == 200 and r.json()["contacts"] > 0


def _page(base: str, _home: Path) -> bool:
    return httpx.get(base + "/", timeout=2).status_code == 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--limit", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args()
    print_header(f"siyu demo ({args.customers:,} customers, 12 months) from an empty SIYU_HOME to a served page")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="siyu-bench-demo-", dir=DATA_DIR))
    try:
        ours = _time_until_ready(
            ["demo", "--customers", str(args.customers)], work / "demo", _page_and_data, args.limit
        )
        base = _time_until_ready(["serve"], work / "empty", _page, args.limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        table(
            ["run", "time to page", "ratio"],
            [
                ("siyu demo (simulate + load + serve)", fmt_s(ours), ratio(ours, base)),
                ("baseline: siyu serve on an empty home", fmt_s(base), "1.00×"),
            ],
        )
    )
    verdict = "met" if ours <= TARGET_SECONDS else "not met"
    print(
        f"\ntarget: ≤ {TARGET_SECONDS:.0f} s at 50,000 customers — this run {fmt_s(ours)} at "
        f"{args.customers:,} customers ({verdict})"
    )
    print_footer()


if __name__ == "__main__":
    main()
