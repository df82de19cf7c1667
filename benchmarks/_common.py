"""Shared helpers of the benchmark scripts: machine description, tables, the reproduce line.

Nothing here asserts on timings: the scripts measure and print, people judge.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"  # gitignored


def _meminfo_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10).stdout


def _git_rev() -> str:
    """HEAD, plus a fingerprint of uncommitted changes under src/ (so a figure names its code)."""
    try:
        rev = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--", "src").splitlines()
        if not rev:
            return "?"
        if not dirty:
            return rev
        digest = hashlib.sha256(_git("diff", "HEAD", "--", "src").encode())
        for line in sorted(dirty):
            if line.startswith("??"):
                for f in (
                    sorted((ROOT / line[3:].strip()).rglob("*"))
                    if (ROOT / line[3:].strip()).is_dir()
                    else [ROOT / line[3:].strip()]
                ):
                    if f.is_file() and f.suffix == ".py":
                        digest.update(f.read_bytes())
        return f"{rev} + {len(dirty)} uncommitted file(s) in src/ (fingerprint {digest.hexdigest()[:10]})"
    except (OSError, subprocess.SubprocessError):
        return "?"


def loadavg() -> str:
    """1, 5 and 15-minute load averages (other work on the machine skews figures)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def print_footer() -> None:
    print(f"\nload average at end: {loadavg()}; {reference_speed()}", flush=True)


def reference_speed() -> str:
    """A fixed one-thread workload, timed: how fast the machine is right now.

    The load average does not show a busy host under a virtual machine; this does (the same
    code, on the same machine, measured 1.4× slower for hours at a time). Compare figures of
    different runs only together with this line.
    """
    t = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    python_s = time.perf_counter() - t
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
    t = time.perf_counter()
    con.executemany("INSERT INTO t VALUES (?, ?)", ((f"k{i:09d}", "v") for i in range(500_000)))
    sqlite_s = time.perf_counter() - t
    con.close()
    return f"reference: Python loop of 5M {python_s:.2f} s, SQLite 500k-row insert {sqlite_s:.2f} s"


def machine_rows() -> list[tuple[str, str]]:
    """Rows describing this machine and the software measured."""
    import duckdb
    import numpy
    import pandas
    import pyarrow

    load = loadavg()
    return [
        ("cpu", f"{os.cpu_count()} cores ({_cpu_model()})"),
        ("ram", _meminfo_gib()),
        ("os", platform.platform()),
        ("python", platform.python_version()),
        ("duckdb", duckdb.__version__),
        ("pyarrow / pandas / numpy", f"{pyarrow.__version__} / {pandas.__version__} / {numpy.__version__}"),
        ("sqlite", sqlite3.sqlite_version),
        ("siyu revision", _git_rev()),
        ("load average at start", load),
        ("machine speed at start", reference_speed()),
    ]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown pipe table (readable in a terminal, pastes into docs/benchmarks.md)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def print_header(title: str) -> None:
    """Title, machine table and the command that reproduces this run."""
    print(f"\n## {title}\n")
    print(table(["machine", ""], machine_rows()))
    print("\nreproduce:\n\n    " + reproduce_command() + "\n", flush=True)


def reproduce_command() -> str:
    """The command line of this run, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join([".venv/bin/python", shlex.quote(script_text), *map(shlex.quote, sys.argv[1:])])


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def fmt_s(seconds: float) -> str:
    return f"{seconds:,.2f} s"


def fmt_rate(n: float, seconds: float, unit: str = "events/s") -> str:
    return f"{n / seconds:,.0f} {unit}" if seconds > 0 else "n/a"


def ratio(ours: float, baseline: float) -> str:
    """``ours / baseline`` as ``1.23×``."""
    return f"{ours / baseline:.2f}×" if baseline else "n/a"


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed wall time in seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
