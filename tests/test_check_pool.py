"""POST /v1/batch with bodies parsed and checked in worker processes (SIYU_INGEST_WORKERS > 0).

The other modules run with ``ingest_workers=0`` (checks in the request thread). Here the same
ingest and hostile-input tests run again through a worker process, so both paths are held to the
same answers (status, error code, per-message index / field / reason, nothing stored); then the
few things only the pool has: tracking-plan changes reach the workers, and a dead worker is
replaced without losing a batch.
"""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures.process import BrokenProcessPool

import duckdb
import pytest
from fastapi.testclient import TestClient

from helpers import WRITE, at, identify, track
from siyu.api.app import create_app
from siyu.api.checkpool import CheckPool
from siyu.config import Settings
from siyu.store.events import hash_event_ids
from test_hostile_input import *  # noqa: F403  (re-run here through the worker processes)
from test_ingest_api import *  # noqa: F403


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings (with any ``siyu_settings`` marker), checking batches in one worker."""
    return settings.model_copy(update={"ingest_workers": 1})


def _worker_pids(api) -> list[int]:
    pool = api.client.app.state.check_pool
    assert pool is not None, "the app did not start a check pool"
    return list(pool._pool._processes)


def test_batches_are_checked_in_a_worker_process(api) -> None:
    assert api.batch([track("clicked", userId="U-1", timestamp=at(1))])["accepted"] == 1
    pids = _worker_pids(api)
    assert pids and os.getpid() not in pids


def test_invalid_batch_from_a_worker_names_index_field_and_reason(api) -> None:
    r = api.post_batch([track("ok", userId="U-0"), track("clicked", userId="U-1", timestamp={"at": "now"})])
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_messages"
    assert error["message"] == "1 of 2 messages are invalid; nothing was stored"
    assert [(e["index"], e["field"]) for e in error["errors"]] == [(1, "timestamp")]
    assert api.runtime.events.counts()["events"] == 0


def test_a_dead_worker_is_replaced_and_no_batch_is_lost(api) -> None:
    assert api.batch([track("first", userId="U-1", timestamp=at(1))])["accepted"] == 1
    for pid in _worker_pids(api):
        os.kill(pid, signal.SIGKILL)
    for i in range(3):
        r = api.client.post("/v1/batch", json={"batch": [track(f"after-{i}", userId="U-1")]}, headers=WRITE)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
    assert api.runtime.events.counts()["events"] == 4
    assert _worker_pids(api)


def test_stored_json_encoded_by_the_worker_matches_the_message(api) -> None:
    api.batch([identify(userId="old-user", traits={"plan": "gold"}, timestamp=at(0))])
    api.batch([track("clicked", anonymousId="dev-9", properties={"sku": "A-1", "n": 2}, timestamp=at(1))])
    # previousId is a known user id: the writer rewrites the keys the worker encoded.
    api.batch(
        [{"type": "alias", "messageId": "al-1", "anonymousId": "dev-9", "previousId": "old-user", "timestamp": at(2)}]
    )
    rows = {
        name: (json.loads(props), json.loads(ids))
        for name, props, ids in api.duck(
            "SELECT name, properties, identities FROM events_with_identities WHERE source = 'api'"
        )
    }
    assert rows["$identify"] == ({"traits": {"plan": "gold"}}, [["user_id", "old-user"]])
    assert rows["clicked"] == ({"sku": "A-1", "n": 2}, [["anonymous_id", "dev-9"]])
    assert rows["$alias"] == ({}, [["user_id", "old-user"], ["anonymous_id", "dev-9"]])


def test_workers_that_cannot_start_leave_checking_in_the_request_thread(settings, runtime, monkeypatch) -> None:
    def fail(self) -> None:
        raise BrokenProcessPool("cannot start here")

    monkeypatch.setattr(CheckPool, "warm_up", fail)
    with TestClient(create_app(settings, runtime), raise_server_exceptions=False) as client:
        assert client.app.state.check_pool is None
        r = client.post("/v1/batch", json={"batch": [track("clicked", userId="U-1", timestamp=at(1))]}, headers=WRITE)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1


def test_worker_hashes_are_the_stores_dedupe_hashes(api) -> None:
    """The worker hashes ids on its own in-memory DuckDB; the store's dedupe index must agree."""
    ids = ["m-1", "消息-2", "", "x" * 300]
    assert hash_event_ids(duckdb.connect(), ids).tolist() == api.runtime.events.event_id_hashes(ids).tolist()
    body = [track("clicked", message_id="dup-1", userId="U-1", timestamp=at(1))]
    assert api.batch(body)["accepted"] == 1
    again = api.batch(body)  # found by the hash the worker computed
    assert (again["accepted"], again["duplicates"]) == (0, 1)
