"""Simulate and load at once: the customers are imported while events and orders are simulated.

The customers import is the longest step of a load and keeps one core busy (SQLite and Python);
the simulation of events and orders is numpy on one core. :func:`simulate_and_load` runs the
simulator in a child process (``spawn``: the parent holds open stores and threads) and starts
importing the staff and customers files as soon as the child has written them
(:func:`~siyu.simulate.run.simulate`'s ``on_first_files``), then the events and orders once the
child is done. The files are byte-identical to a plain :func:`~siyu.simulate.run.simulate`, and the
store equals loading them afterwards with :func:`~siyu.simulate.load.load_simulation`.

If the simulation fails before its first files exist nothing is loaded; a failure after that
leaves the staff and customers imported (imports are idempotent: running again completes the load).
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from siyu.ingest.files import Kind, count_rows
from siyu.runtime import Runtime
from siyu.simulate.brands import Brand
from siyu.simulate.load import LoadReport, load_file, load_staff
from siyu.simulate.run import Format, SimulationSummary, simulate


class SimulationFailed(RuntimeError):
    """The simulator's process failed; ``loaded`` says whether anything was imported already."""

    def __init__(self, message: str, *, loaded: bool) -> None:
        super().__init__(message)
        self.loaded = loaded


@dataclass
class _Child:
    """What the parent hears from the simulator's process (filled by the listener thread)."""

    progress: Callable[[int], None] | None
    first: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    summary: SimulationSummary | None = None
    error: tuple[str, str] | None = None  # (exception type name, message)

    def listen(self, queue: Any) -> None:
        while True:
            kind, value = queue.get()
            if kind == "progress":
                if self.progress:
                    self.progress(value)
            elif kind == "first":
                self.first.set()
            else:
                if kind == "done":
                    self.summary = value
                else:
                    self.error = value
                self.first.set()
                self.done.set()
                return


def _simulate_in_child(queue: Any, brand: Brand, options: dict[str, Any]) -> None:
    try:
        summary = simulate(
            brand,
            **options,
            progress=lambda n: queue.put(("progress", n)),
            on_first_files=lambda: queue.put(("first", None)),
        )
    except Exception as exc:  # reported to the parent, which raises it with the message
        queue.put(("error", (type(exc).__name__, str(exc))))
        queue.close()
        queue.join_thread()
        sys.exit(1)
    queue.put(("done", summary))


def simulate_and_load(
    runtime: Runtime,
    brand: Brand,
    *,
    customers: int,
    months: int,
    seed: int,
    out: Path,
    end: date | None = None,
    time_zone: str = "Asia/Shanghai",
    fmt: Format = "parquet",
    simulated: Callable[[int], None] | None = None,
    imported: Callable[[int], None] | None = None,
    rows_known: Callable[[int], None] | None = None,
) -> tuple[SimulationSummary, LoadReport]:
    """Simulate into ``out`` (as :func:`~siyu.simulate.run.simulate`) and load it into ``runtime``.

    ``simulated`` is called with customers simulated, ``imported`` with rows imported, and
    ``rows_known`` with the number of rows to import each time more files are complete (for a
    progress bar). Argument errors raise :class:`ValueError`, other failures of the simulator
    :class:`SimulationFailed`.
    """
    options = {
        "customers": customers,
        "months": months,
        "seed": seed,
        "out": out,
        "end": end,
        "time_zone": time_zone,
        "fmt": fmt,
    }
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = _Child(simulated)
    process = context.Process(target=_simulate_in_child, args=(queue, brand, options), daemon=True)
    process.start()
    listener = threading.Thread(target=child.listen, args=(queue,), daemon=True)
    listener.start()
    report = LoadReport()
    try:
        _wait(child.first, process, child)
        _raise_failure(child, loaded=False)
        customers_file = out / f"customers.{fmt}"
        if rows_known:
            rows_known(count_rows(customers_file))
        load_staff(runtime, out, report)
        load_file(runtime, "customers", customers_file, report, progress=imported)
        _wait(child.done, process, child)
        _raise_failure(child, loaded=True)
        later: list[tuple[Kind, Path]] = [("events", out / f"events.{fmt}"), ("orders", out / f"orders.{fmt}")]
        if rows_known:
            rows_known(sum(count_rows(path) for _, path in later))
        for kind, path in later:
            load_file(runtime, kind, path, report, progress=imported)
    except BaseException:
        process.terminate()  # an import failed or was interrupted: the rest of the files is not wanted
        raise
    finally:
        process.join(timeout=60)
    assert child.summary is not None
    return child.summary, report


def _wait(event: threading.Event, process: Any, child: _Child) -> None:
    """Wait for ``event``; a child that died without a word counts as a failure."""
    while not event.wait(0.5):
        if not process.is_alive() and not event.is_set():
            process.join()
            if not event.wait(2.0):  # the listener may still be reading its last message
                child.error = ("ProcessExit", f"the simulator's process ended with exit code {process.exitcode}")
                return


def _raise_failure(child: _Child, *, loaded: bool) -> None:
    if child.error is None:
        return
    kind, message = child.error
    if kind == "ValueError":
        raise ValueError(message)
    suffix = " (staff and customers were imported already: run the load again to complete it)" if loaded else ""
    raise SimulationFailed(f"simulation failed: {kind}: {message}{suffix}", loaded=loaded)
