"""POST /v1/batch: idempotency, all-or-nothing batches, the tracking plan."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import ADMIN, WRITE, at, identify, track


def event_props(api, message_id: str) -> dict:
    rows = api.duck("SELECT properties FROM events WHERE event_id = ?", [message_id])
    assert len(rows) == 1
    return json.loads(rows[0][0])


# -- idempotency -------------------------------------------------------------------------------
def test_same_batch_twice_is_stored_once(api) -> None:
    batch = [
        track("page_viewed", anonymousId="a-1", timestamp=at(0)),
        identify(anonymousId="a-1", userId="U-1", traits={"plan": "gold"}, timestamp=at(1)),
        track("clicked", userId="U-2", timestamp=at(2)),
        track("clicked", userId="U-1", identities={"phone": "13800138000"}, timestamp=at(3)),
    ]
    first = api.batch(batch)
    assert first["accepted"] == len(batch) and first["duplicates"] == 0
    after_first = api.snapshot()
    second = api.batch(batch)
    assert second["accepted"] == 0
    assert second["duplicates"] == len(batch)
    assert second["new_persons"] == 0 and second["merges"] == 0 and second["traits_changed"] == 0
    assert api.snapshot() == after_first
    assert api.stats()["events"] == after_first["duck.events"]


def test_duplicate_message_ids_inside_one_batch_count_once(api) -> None:
    first = track("clicked", userId="U-1", properties={"n": 1}, timestamp=at(0))
    copy = {**first, "properties": {"n": 2}}
    other = track("clicked", userId="U-1", properties={"n": 3}, timestamp=at(1))
    events_before = api.stats()["events"]
    result = api.batch([first, copy, other, first])
    assert result["accepted"] == 2
    assert result["duplicates"] == 2
    assert api.stats()["events"] == events_before + 2
    assert event_props(api, first["messageId"]) == {"n": 1}  # the first copy wins


def test_a_duplicate_next_to_new_messages_only_skips_the_duplicate(api) -> None:
    old = track("clicked", userId="U-1", timestamp=at(0))
    api.batch([old])
    new = [track("clicked", userId="U-1", timestamp=at(i)) for i in range(1, 4)]
    result = api.batch([old, *new])
    assert (result["accepted"], result["duplicates"]) == (len(new), 1)
    assert api.stats()["events"] == 1 + len(new)


# -- all or nothing ----------------------------------------------------------------------------
def test_one_invalid_message_rejects_the_whole_batch(api) -> None:
    valid = [
        track("page_viewed", anonymousId="a-1", timestamp=at(0)),
        identify(anonymousId="a-1", userId="U-1", traits={"plan": "gold"}, timestamp=at(1)),
        track("clicked", userId="U-2", identities={"member_id": "M-2"}, timestamp=at(2)),
        identify(userId="U-2", anonymousId="a-1", timestamp=at(3)),  # would merge
        track("clicked", identities={"email": "x@example.com"}, timestamp=at(4)),
    ]
    bad = track("clicked", userId="U-3", properties=["not", "an", "object"], timestamp=at(5))
    batch = [*valid[:3], bad, *valid[3:]]
    before = api.snapshot()
    r = api.post_batch(batch)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_messages"
    assert [(e["index"], e["field"]) for e in error["errors"]] == [(3, "properties")]
    assert all(e["reason"] for e in error["errors"])
    assert api.snapshot() == before
    assert api.stats() == {"persons": 0, "identities": 0, "events": 0, "orders": 0}
    # nothing was marked as seen: the valid messages alone go through afterwards
    assert api.batch(valid)["accepted"] == len(valid)


def test_every_invalid_message_is_listed_with_index_field_and_reason(api) -> None:
    batch = [
        track("ok", userId="U-1"),
        track("ok", userId="U-1", timestamp="not a time"),
        track("ok", userId="U-1"),
        {"type": "track", "event": "ok", "userId": "U-1"},  # no messageId
        track("$reserved", userId="U-1"),
    ]
    before = api.snapshot()
    r = api.post_batch(batch)
    assert r.status_code == 422, r.text
    errors = r.json()["error"]["errors"]
    assert sorted((e["index"], e["field"]) for e in errors) == [(1, "timestamp"), (3, "messageId"), (4, "event")]
    assert "3 of 5" in r.json()["error"]["message"]
    assert api.snapshot() == before


# -- tracking plan -----------------------------------------------------------------------------
SKU_SCHEMA = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "price_fen": {"type": "integer", "minimum": 0}},
    "required": ["sku"],
}


def put_schema(api, event: str, schema, headers=ADMIN):
    return api.client.put(f"/v1/tracking-plan/{event}", json=schema, headers=headers)


def test_tracking_plan_rejects_events_that_violate_their_schema(api) -> None:
    assert put_schema(api, "product_viewed", SKU_SCHEMA).status_code == 200
    listed = api.client.get("/v1/tracking-plan", headers=ADMIN).json()
    assert listed["events"] == {"product_viewed": SKU_SCHEMA}

    before = api.snapshot()
    r = api.post_batch(
        [
            track("product_viewed", userId="U-1", properties={"sku": "A1"}),
            track("product_viewed", userId="U-1", properties={"price_fen": 5}),
            track("product_viewed", userId="U-1", properties={"sku": "A2", "price_fen": -1}),
        ]
    )
    assert r.status_code == 422, r.text
    errors = r.json()["error"]["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "properties"), (2, "properties")]
    assert all("product_viewed" in e["reason"] for e in errors)
    assert api.snapshot() == before

    ok = api.batch(
        [
            track("product_viewed", userId="U-1", properties={"sku": "A1", "price_fen": 100}),
            track("unplanned_event", userId="U-1", properties={"anything": True}),
        ]
    )
    assert ok["accepted"] == 2


def test_replacing_and_removing_a_schema_takes_effect(api) -> None:
    put_schema(api, "paid", SKU_SCHEMA)
    assert api.post_batch([track("paid", userId="U-1", properties={"price_fen": 1})]).status_code == 422
    assert put_schema(api, "paid", {"type": "object", "required": ["price_fen"]}).status_code == 200
    assert api.post_batch([track("paid", userId="U-1", properties={"sku": "x"})]).status_code == 422
    assert api.batch([track("paid", userId="U-1", properties={"price_fen": 1})])["accepted"] == 1
    assert api.client.delete("/v1/tracking-plan/paid", headers=ADMIN).status_code == 200
    assert api.client.delete("/v1/tracking-plan/paid", headers=ADMIN).status_code == 404
    assert api.batch([track("paid", userId="U-1", properties={"sku": "x"})])["accepted"] == 1


@pytest.mark.siyu_settings(tracking_plan_mode="strict")
def test_strict_mode_rejects_events_without_a_schema(api) -> None:
    put_schema(api, "product_viewed", SKU_SCHEMA)
    before = api.snapshot()
    r = api.post_batch(
        [track("product_viewed", userId="U-1", properties={"sku": "A"}), track("unplanned_event", userId="U-1")]
    )
    assert r.status_code == 422, r.text
    errors = r.json()["error"]["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "event")]
    assert "unplanned_event" in errors[0]["reason"]
    assert api.snapshot() == before
    # identify messages are not events of the plan; planned events pass
    ok = api.batch(
        [
            track("product_viewed", userId="U-1", properties={"sku": "A"}),
            identify(userId="U-1", traits={"plan": "gold"}),
        ]
    )
    assert ok["accepted"] == 2


@pytest.mark.siyu_settings(tracking_plan_mode="lenient")
def test_lenient_mode_accepts_events_without_a_schema(api) -> None:
    put_schema(api, "product_viewed", SKU_SCHEMA)
    assert api.batch([track("unplanned_event", userId="U-1", properties={"x": 1})])["accepted"] == 1


def test_invalid_schema_is_rejected(api) -> None:
    before = api.snapshot()
    for schema in ({"type": "strin"}, {"type": 5}, [1, 2], "a string", {"required": "sku"}, {"minimum": "zero"}):
        r = put_schema(api, "product_viewed", schema)
        assert r.status_code == 422, (schema, r.text)
        assert r.json()["error"]["code"] == "invalid_schema"
    assert api.client.get("/v1/tracking-plan", headers=ADMIN).json()["events"] == {}
    assert api.snapshot() == before


def test_tracking_plan_needs_an_admin_key(api) -> None:
    assert put_schema(api, "product_viewed", SKU_SCHEMA, headers=WRITE).status_code == 403
    assert api.client.get("/v1/tracking-plan", headers=WRITE).status_code == 403
    assert api.client.get("/v1/tracking-plan", headers=ADMIN).json()["events"] == {}


# Regression test for a bug this suite found: an invalid regex `pattern` escapes compile_schema (re.error) → 500
# instead of 422 (src/siyu/ingest/tracking_plan.py compile_schema)
def test_schema_with_an_invalid_regex_is_rejected(api) -> None:
    r = put_schema(api, "product_viewed", {"type": "object", "properties": {"sku": {"pattern": "("}}})
    assert r.status_code == 422, r.text


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server offering a schema, recording every request it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"type": "object"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/schema.json", hits
    finally:
        server.shutdown()
        server.server_close()


# Regression test for a bug this suite found (SSRF / local file read): fastjsonschema resolves remote and file:
# `$ref`s while compiling, so PUT /v1/tracking-plan makes the server fetch URLs
# (src/siyu/ingest/tracking_plan.py compile_schema)
def test_schema_with_a_remote_ref_is_rejected_without_fetching_it(api, schema_server) -> None:
    url, hits = schema_server
    r = put_schema(api, "product_viewed", {"$ref": url})
    assert (r.status_code, hits) == (422, [])
