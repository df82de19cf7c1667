"""Parsing and checking ``POST /v1/batch`` bodies in worker processes, beside the single writer.

Storing a batch runs under the event store's write lock and is bound by one core (and the GIL).
Parsing the body and checking its messages needs neither a lock nor a store, so with
``SIYU_INGEST_WORKERS`` > 0 it runs in a small process pool: batch N+1 is parsed and checked on
another core while batch N is written. The checks are the very same code
(:meth:`siyu.ingest.validate.Validator.messages`, with the tracking plan the writer loaded and the
writer's clock), so a message is accepted or rejected for the same reasons either way; only the
place where the work happens changes. See docs/decisions/006-http-ingest-throughput.md.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from siyu.api.deps import ApiError, body_items, parse_json
from siyu.config import Settings
from siyu.ingest.tracking_plan import CompiledPlan
from siyu.ingest.validate import Checked, PreparedMessage, Validator
from siyu.perf import gc_paused
from siyu.store.events import hash_event_ids

log = logging.getLogger(__name__)

# A prepared message crosses the process boundary as a plain tuple of its fields, in this order
# (a tuple pickles about twice as fast as a dataclass instance).
_FIELDS = tuple(f.name for f in fields(PreparedMessage))

#: What a worker sends back: ``("ok", (total, pickled rows, event-id hashes))``, ``("invalid", (total, errors))`` or
#: ``("refused", (status, code, message))``.
Outcome = tuple[str, Any]


# -- in the worker process -------------------------------------------------------------------
class _Worker:
    """Per-process state of a worker: the validator, and the tracking plan it was last sent."""

    validator: Validator | None = None
    stamp: object = object()
    hasher: duckdb.DuckDBPyConnection | None = None  # an in-memory DuckDB for the event-id hashes


def _init_worker(settings: Settings) -> None:
    _Worker.validator = Validator(settings, CompiledPlan())
    _Worker.stamp = object()
    _Worker.hasher = duckdb.connect()


def _ready() -> bool:
    return _Worker.validator is not None


def check_body(validator: Validator, body: bytes, now: datetime) -> tuple[Checked, int]:
    """Parse and check a ``/v1/batch`` body: the outcome and how many messages it had.

    Raises :class:`ApiError` for a body that is not a batch at all (bad JSON, wrong shape, too many).
    """
    items = body_items(parse_json(body), "batch", validator.settings)
    return validator.messages(items, now=now), len(items)


def _check_in_worker(body: bytes, now: datetime, stamp: object, schemas: dict[str, dict[str, Any]]) -> Outcome:
    validator = _Worker.validator
    assert validator is not None, "worker not initialised"
    if stamp != _Worker.stamp:
        validator.plan = CompiledPlan(schemas)
        _Worker.stamp = stamp
    try:
        checked, total = check_body(validator, body, now)
    except ApiError as exc:  # not sent back as is: its constructor does not survive pickling
        return "refused", (exc.status, exc.code, exc.message)
    if checked.errors:
        return "invalid", (total, checked.errors)
    for m in checked.messages:
        m.encode()  # the writer's JSON encoding, done here on the other core
    rows = [tuple(getattr(m, f) for f in _FIELDS) for m in checked.messages]
    assert _Worker.hasher is not None, "worker not initialised"
    hashes = hash_event_ids(_Worker.hasher, [m.message_id for m in checked.messages])  # and the dedupe hashes
    # Pickled here, unpickled by from_outcome with the collector paused (not by the pool's
    # result thread, where tens of thousands of new objects would trigger full collections).
    return "ok", (total, pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL), hashes.tobytes())


# -- in the server process -------------------------------------------------------------------
def from_outcome(outcome: Outcome) -> tuple[Checked, int, np.ndarray | None]:
    """What :func:`check_body` would have returned, from a worker's outcome (raises the same),
    and the messages' event-id hashes (:func:`~siyu.store.events.hash_event_ids`) when valid."""
    kind, value = outcome
    if kind == "refused":
        status, code, message = value
        raise ApiError(status, code, message)
    if kind == "invalid":
        total, errors = value
        return Checked(errors=list(errors)), total, None
    total, payload, hashes = value
    with gc_paused():
        messages = [PreparedMessage(*row) for row in pickle.loads(payload)]
    return Checked(messages=messages), total, np.frombuffer(hashes, dtype=np.uint64)


class CheckPool:
    """A process pool that parses and checks batch bodies (``workers`` processes)."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self._pool = self._start()

    @classmethod
    def start(cls, settings: Settings) -> CheckPool | None:
        """A started pool of ``settings.ingest_workers`` processes, or None (0 workers, or they
        cannot start here: batches are then checked in the request thread, as with 0)."""
        if settings.ingest_workers < 1:
            return None
        pool = None
        try:
            pool = cls(settings, settings.ingest_workers)
            pool.warm_up()
        except Exception:  # no forkserver here, or an embedding script whose __main__ cannot be re-imported
            log.warning("batch-check worker processes did not start; checking batches in-thread", exc_info=True)
            if pool is not None:
                pool.close()
            return None
        return pool

    def _start(self) -> ProcessPoolExecutor:
        # forkserver: workers fork from a clean helper process (never from the server with its
        # DuckDB and event-loop threads), and the helper imports this module once, so starting
        # a pool again (tests, or after a crash) takes milliseconds.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["siyu.api.checkpool"])
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.settings,)
        )

    def warm_up(self) -> None:
        """Start every worker now rather than on the first request."""
        for future in [self._pool.submit(_ready) for _ in range(self.workers)]:
            future.result(timeout=120)

    def submit(self, body: bytes, now: datetime, plan: tuple[object, dict[str, dict[str, Any]]]) -> Future[Outcome]:
        """Queue one body; the future's result is an :data:`Outcome`. Restarts a broken pool."""
        stamp, schemas = plan
        try:
            return self._pool.submit(_check_in_worker, body, now, stamp, schemas)
        except BrokenProcessPool:
            log.warning("batch-check workers died; starting new ones")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(_check_in_worker, body, now, stamp, schemas)

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)
