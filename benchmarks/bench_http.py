"""Benchmark: HTTP ingestion into POST /v1/batch of a real `siyu serve`, against a parse-only server.

ours      `siyu serve` (uvicorn subprocess on 127.0.0.1, fresh SIYU_HOME in a temp dir, write key
          from SIYU_WRITE_KEYS) storing batches of track messages.
baseline  benchmarks/_echo_server.py: FastAPI + uvicorn that only parses the same body with orjson
          and answers 200 — the transport ceiling on this machine.

The load generator (this process) sends pre-serialised batches from --clients threads, each
with its own httpx keep-alive connection, until --events are sent or --max-seconds pass. It
runs on the same machine, so it takes CPU from the server (its CPU time is reported). Server CPU
counts the server process and its batch-check workers; in brackets, the main process alone.
Target from the issue: ≥ 20,000 events/s sustained. For scale: RudderStack's gateway is
quoted at ~1.7k events/s on 2 vCPU.

    .venv/bin/python benchmarks/bench_http.py --events 200000 --clients 4
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
from _common import BENCH_DIR, DATA_DIR, fmt_int, fmt_s, print_footer, print_header, ratio, table
from _data import make_events

TARGET_RATE = 20_000
HOST = "127.0.0.1"  # loopback only
WRITE_KEY = "bench-key"
ADMIN_KEY = "bench-admin"

_children: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its live descendants (siyu's batch-check workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        spent = cpu_seconds(p)
        total += 0.0 if spent != spent else spent  # a process that just exited: nan
        todo.extend(children.get(p, []))
    return total


def start_server(
    cmd: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 60
) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    _children.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"server did not answer /health within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn shuts down cleanly, siyu closes its stores), then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc in _children:
        _children.remove(proc)


@atexit.register
def _cleanup() -> None:
    for proc in list(_children):
        stop_server(proc)


def build_bodies(n_events: int, batch: int, seed: int) -> tuple[list[bytes], bytes, int]:
    """Pre-serialised /v1/batch bodies of track messages, plus one warm-up body (distinct ids)."""
    table_ = make_events(n_events, seed=seed).table
    rows = table_.to_pylist()
    messages = []
    for r in rows:
        m = {
            "type": "track",
            "messageId": r["message_id"],
            "event": r["event"],
            "anonymousId": r["anonymous_id"],
            "timestamp": r["timestamp"].isoformat(),
            "properties": {"sku": r["sku"], "price_fen": r["price_fen"]},
        }
        if r["member_id"] is not None:
            m["identities"] = {"member_id": r["member_id"]}
        messages.append(m)
    bodies = [orjson.dumps({"batch": messages[i : i + batch]}) for i in range(0, len(messages), batch)]
    warm = [
        {**m, "messageId": "warm-" + m["messageId"], "anonymousId": "W" + m["anonymousId"]} for m in messages[:batch]
    ]
    for m in warm:
        m.pop("identities", None)
    return bodies, orjson.dumps({"batch": warm}), len(messages)


@dataclass
class LoadResult:
    wall: float = 0.0
    sent_events: int = 0
    ok_batches: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    server_main_cpu: float = 0.0
    stopped_by_time: bool = False


def drive(
    url: str,
    bodies: list[bytes],
    sizes: list[int],
    clients: int,
    max_seconds: float,
    server_pid: int,
    min_seconds: float = 0.0,
) -> LoadResult:
    """Send every body once from ``clients`` threads; stop early after ``max_seconds``.

    With ``min_seconds`` the bodies are sent again (round robin) until that much time has passed
    (only for the parse-only baseline, which stores nothing, so that its figure is not a blip).
    """
    res = LoadResult()
    lock = threading.Lock()
    next_index = [0]
    headers = {"Authorization": f"Bearer {WRITE_KEY}", "Content-Type": "application/json"}

    def worker() -> None:
        with httpx.Client(timeout=120, headers=headers) as client:
            while True:
                with lock:
                    n = next_index[0]
                    elapsed = time.perf_counter() - start
                    if n >= len(bodies) and elapsed >= min_seconds:
                        return
                    if elapsed > max_seconds:
                        res.stopped_by_time = True
                        return
                    next_index[0] = n + 1
                    i = n % len(bodies)
                t0 = time.perf_counter()
                try:
                    r = client.post(url, content=bodies[i])
                    status = str(r.status_code)
                    payload = orjson.loads(r.content) if r.status_code == 200 else None
                except httpx.HTTPError as exc:
                    status, payload = type(exc).__name__, None
                dt = time.perf_counter() - t0
                with lock:
                    if status == "200":
                        res.ok_batches += 1
                        res.sent_events += sizes[i]
                        res.latencies.append(dt)
                        res.accepted += int(payload.get("accepted", 0)) if payload else 0
                        res.duplicates += int(payload.get("duplicates", 0)) if payload else 0
                    else:
                        res.failed[status] = res.failed.get(status, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    cpu0, srv0, main0 = time.process_time(), tree_cpu_seconds(server_pid), cpu_seconds(server_pid)
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max_seconds + 300)  # bounded: each request has its own 120 s timeout
    res.wall = time.perf_counter() - start
    res.client_cpu = time.process_time() - cpu0
    res.server_cpu = tree_cpu_seconds(server_pid) - srv0
    res.server_main_cpu = cpu_seconds(server_pid) - main0
    return res


def run_server(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    bodies: list[bytes],
    sizes: list[int],
    warm: bytes,
    args: argparse.Namespace,
) -> tuple[LoadResult, dict | None]:
    print(f"starting {name}…", flush=True)
    proc = start_server(cmd, env, port, log)
    try:
        url = f"http://{HOST}:{port}/v1/batch"
        r = httpx.post(
            url,
            content=warm,
            timeout=120,
            headers={"Authorization": f"Bearer {WRITE_KEY}", "Content-Type": "application/json"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"{name}: warm-up batch answered {r.status_code}: {r.text[:2000]}")
        print(f"sending {len(bodies):,} batches with {args.clients} clients…", flush=True)
        min_s = args.baseline_min_seconds if name.startswith("baseline") else 0.0
        res = drive(url, bodies, sizes, args.clients, args.max_seconds, proc.pid, min_s)
        stats = None
        if name == "siyu serve":
            s = httpx.get(
                f"http://{HOST}:{port}/v1/stats", timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            stats = s.json() if s.status_code == 200 else {"error": s.status_code}
        return res, stats
    finally:
        stop_server(proc)


def summarise(res: LoadResult) -> list[str]:
    lat = np.array(res.latencies) * 1000 if res.latencies else np.array([float("nan")])
    rate = res.sent_events / res.wall if res.wall else 0.0
    return [
        fmt_int(res.sent_events),
        f"{res.ok_batches:,}",
        fmt_s(res.wall),
        f"{rate:,.0f} events/s",
        f"{np.percentile(lat, 50):,.1f} ms",
        f"{np.percentile(lat, 99):,.1f} ms",
        f"{res.server_cpu:,.1f} s ({res.server_main_cpu:,.1f} s)",
        f"{res.client_cpu:,.1f} s",
        ", ".join(f"{k}×{v}" for k, v in res.failed.items()) or "none",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=200_000, help="events to send (default 200k)")
    ap.add_argument("--batch", type=int, default=1000, help="messages per POST (default 1000)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent client connections (default 4)")
    ap.add_argument(
        "--max-seconds", type=float, default=45.0, help="stop sending to a server after this long (default 45)"
    )
    ap.add_argument(
        "--baseline-min-seconds",
        type=float,
        default=5.0,
        help="keep the parse-only baseline busy at least this long, repeating batches (default 5)",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--ingest-workers",
        type=int,
        default=None,
        help="SIYU_INGEST_WORKERS for siyu serve (default: siyu's own default)",
    )
    args = ap.parse_args()

    print_header(f"bench_http: {args.events:,} events in batches of {args.batch:,} to POST /v1/batch")
    t0 = time.perf_counter()
    bodies, warm, n = build_bodies(args.events, args.batch, args.seed)
    sizes = [min(args.batch, n - i * args.batch) for i in range(len(bodies))]
    avg_kb = sum(map(len, bodies)) / len(bodies) / 1024
    print(
        f"data: {n:,} track events in {len(bodies):,} batches (~{avg_kb:,.0f} KiB each), "
        f"built in {time.perf_counter() - t0:.1f} s; {args.clients} clients; "
        f"limit {args.max_seconds:.0f} s per server\n",
        flush=True,
    )

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="siyu-bench-http-", dir=DATA_DIR))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    env.update(
        {
            "SIYU_HOME": str(work / "home"),
            "SIYU_WRITE_KEYS": orjson.dumps([WRITE_KEY]).decode(),
            "SIYU_ADMIN_KEYS": orjson.dumps([ADMIN_KEY]).decode(),
        }
    )
    if args.ingest_workers is not None:
        env["SIYU_INGEST_WORKERS"] = str(args.ingest_workers)
    bindir = Path(sys.executable).parent
    results: dict[str, LoadResult] = {}
    stats = None
    try:
        if not args.skip_baseline:
            port = free_port()
            results["baseline: parse-only FastAPI"], _ = run_server(
                "baseline (parse-only)",
                [sys.executable, str(BENCH_DIR / "_echo_server.py"), str(port)],
                env,
                port,
                work / "baseline.log",
                bodies,
                sizes,
                warm,
                args,
            )
        port = free_port()
        results["siyu serve"], stats = run_server(
            "siyu serve",
            [str(bindir / "siyu"), "serve", "--host", HOST, "--port", str(port)],
            env,
            port,
            work / "siyu.log",
            bodies,
            sizes,
            warm,
            args,
        )
    finally:
        _cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        table(
            [
                "server",
                "events sent",
                "batches ok",
                "wall",
                "sustained",
                "p50 / batch",
                "p99 / batch",
                "server CPU (main process)",
                "client CPU",
                "errors",
            ],
            [[name, *summarise(r)] for name, r in results.items()],
        )
    )
    ours = results["siyu serve"]
    ours_rate = ours.sent_events / ours.wall if ours.wall else 0.0
    rows = [
        ["siyu accepted / duplicates (from responses)", f"{ours.accepted:,} / {ours.duplicates:,}"],
        ["siyu stats after the run", orjson.dumps(stats).decode() if stats else "n/a"],
        ["siyu stopped by --max-seconds", "yes" if ours.stopped_by_time else "no"],
    ]
    if "baseline: parse-only FastAPI" in results:
        base = results["baseline: parse-only FastAPI"]
        base_rate = base.sent_events / base.wall if base.wall else 0.0
        rows.append(["siyu / transport ceiling", ratio(ours_rate, base_rate)])
    verdict = "met" if ours_rate >= TARGET_RATE else "NOT met"
    rows.append(
        ["target", f"≥ {TARGET_RATE:,} events/s sustained — {verdict} ({ours_rate / TARGET_RATE:.2f}× of target)"]
    )
    rows.append(
        ["for scale", f"RudderStack gateway ~1.7k events/s on 2 vCPU (siyu here: {ours_rate / 1700:.1f}× that)"]
    )
    print()
    print(table(["check", "value"], rows))
    print_footer()


if __name__ == "__main__":
    main()
