"""Small performance helpers."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Resolving identities creates millions of tuples, sets and dicts that are never cyclic
    garbage; with the collector on, its repeated full-heap passes took ~60 % of the time.
    Reference counting still frees everything; the collector resumes (and runs once) after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def alongside(work: Callable[[], None]) -> Iterator[None]:
    """Run ``work`` in a thread while the block runs; after the block, wait for it and re-raise its error.

    For work that releases the GIL (SQLite's and DuckDB's C code) beside work that needs none of
    its results until the end. Even when the block fails the thread is waited for, so nothing it
    uses is torn down under it.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="siyu-alongside") as pool:
        running = pool.submit(work)
        try:
            yield
        finally:
            wait([running])
        running.result()


class StageTimer:
    """Logs how long each stage of a long operation took, at INFO on ``log``: wall and CPU time."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.last = time.perf_counter()
        self.last_cpu = time.process_time()

    def lap(self, name: str) -> None:
        """Log the wall time since the last lap, and the process's CPU time (all threads)."""
        now, cpu = time.perf_counter(), time.process_time()
        self.log.info(self.what + " %s: %.2fs (cpu %.2fs)", name, now - self.last, cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu
