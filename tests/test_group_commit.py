"""Group commit: calls of ``Ingestor.ingest_messages`` that wait for the writer are written together
(one DuckDB transaction), with the same counts per call and the same stores as one after the other;
a call that fails in its own ops transaction fails alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import at, identify, track
from siyu.config import Settings
from siyu.ingest.pipeline import Ingestor, IngestResult
from siyu.runtime import Runtime
from siyu.store.fingerprint import store_fingerprint


def batches() -> list[list[dict[str, Any]]]:
    """Calls that depend on each other: a person seen anonymously, then logging in (a merge),
    traits changing across calls, duplicates within a call and across calls."""
    out: list[list[dict[str, Any]]] = []
    for b in range(6):
        msgs: list[dict[str, Any]] = []
        for p in range(12):
            person = f"u{(b * 5 + p) % 20}"
            msgs.append(
                track("page_viewed", message_id=f"m{b}-{p}", anonymousId=f"a-{person}", timestamp=at(b * 60 + p))
            )
            if p % 3 == 0:
                # the same person on another device, known by user id only; the identify then joins them
                msgs.append(track("login", message_id=f"l{b}-{p}", userId=person, timestamp=at(b * 60 + p)))
                msgs.append(
                    identify(
                        message_id=f"i{b}-{p}",
                        userId=person,
                        anonymousId=f"a-{person}",
                        traits={"level": b, "city": "北京" if p % 2 else "上海"},
                        timestamp=at(b * 60 + p + 1),
                    )
                )
        msgs.append(track("page_viewed", message_id=f"m{b}-0", anonymousId="a-dup", timestamp=at(b)))  # in-call dup
        if b:
            msgs.append(
                track("page_viewed", message_id=f"m{b - 1}-1", anonymousId="a-x", timestamp=at(b))
            )  # earlier call
        out.append(msgs)
    return out


def checked(ingestor: Ingestor, msgs: list[dict[str, Any]]) -> Any:
    result = ingestor.validator.messages(msgs)
    assert not result.errors
    return result.messages


def run_grouped(rt: Runtime, calls: list[list[dict[str, Any]]]) -> list[IngestResult | BaseException]:
    """Start every call while the writer is held, in a known order, then let the writer go."""
    prepared = [checked(rt.ingestor, msgs) for msgs in calls]
    results: list[IngestResult | BaseException | None] = [None] * len(calls)

    def call(i: int) -> None:
        try:
            results[i] = rt.ingestor.ingest_messages(prepared[i])
        except BaseException as exc:
            results[i] = exc

    threads = []
    with rt.events.write_lock:
        for i in range(len(calls)):
            thread = threading.Thread(target=call, args=(i,))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 10
            while len(rt.ingestor._queue) < i + 1:  # queued in this order
                assert time.monotonic() < deadline, "a call did not queue up"
                time.sleep(0.001)
    for thread in threads:
        thread.join(30)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def test_calls_written_together_count_and_store_as_one_after_the_other(tmp_path: Path) -> None:
    calls = batches()
    with Runtime.open(Settings(home=tmp_path / "one-by-one")) as rt:
        expected = [rt.ingestor.ingest_messages(checked(rt.ingestor, msgs)) for msgs in calls]
        expected_store = store_fingerprint(rt.engine, rt.events)
    with Runtime.open(Settings(home=tmp_path / "grouped")) as rt:
        got = run_grouped(rt, calls)
        got_store = store_fingerprint(rt.engine, rt.events)
    assert got == expected
    assert got_store == expected_store
    assert sum(r.merges for r in expected) > 0 and sum(r.duplicates for r in expected) >= 2 * len(calls) - 1
    assert sum(r.traits_changed for r in expected) > 0


def test_a_call_failing_in_its_ops_transaction_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = batches()[:3]
    real = Ingestor._resolve

    def failing(self: Ingestor, conn: Any, sightings: Any, now: Any) -> Any:
        if any(s.message_id == "m1-0" for s in sightings):
            raise RuntimeError("the ops store refused this call")
        return real(self, conn, sightings, now)

    with Runtime.open(Settings(home=tmp_path / "expected")) as rt:
        expected = [rt.ingestor.ingest_messages(checked(rt.ingestor, calls[i])) for i in (0, 2)]
        expected_store = store_fingerprint(rt.engine, rt.events)
    monkeypatch.setattr(Ingestor, "_resolve", failing)
    with Runtime.open(Settings(home=tmp_path / "grouped")) as rt:
        got = run_grouped(rt, calls)
        assert isinstance(got[1], RuntimeError)
        # the others are stored as if the failing call had never come; its ids stay free for a retry
        assert [got[0], got[2]] == expected
        assert store_fingerprint(rt.engine, rt.events) == expected_store
        monkeypatch.setattr(Ingestor, "_resolve", real)
        retried = rt.ingestor.ingest_messages(checked(rt.ingestor, calls[1]))
        assert retried.accepted > 0


def test_when_the_writer_stops_half_way_no_call_of_its_group_reports_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import siyu.ingest.pipeline as pipeline

    class Stop(BaseException):
        """Not an Exception: what a KeyboardInterrupt or SystemExit in the writer looks like."""

    def stop(*args: Any, **kwargs: Any) -> None:
        raise Stop

    calls = batches()[:3]
    with Runtime.open(Settings(home=tmp_path / "home")) as rt:
        monkeypatch.setattr(pipeline, "apply_changes", stop)
        got = run_grouped(rt, calls)
        assert all(isinstance(r, Stop | RuntimeError) for r in got), got
        assert sum(isinstance(r, Stop) for r in got) == 1  # the writer's own call sees the real error
        assert rt.events.counts()["events"] == 0
