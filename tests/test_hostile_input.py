"""Hostile and malformed input: every bad request is refused cleanly (4xx naming the problem), nothing is
stored, and data that merely looks dangerous (SQL) is stored verbatim."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect

from helpers import ADMIN, DUCK_TABLES, WRITE, at, identify, order, track
from siyu.store.ops.schema import metadata


def nested(depth: int, leaf: Any = "x") -> Any:
    """A value whose deepest path below ``properties`` has ``depth`` segments (``properties.a.a…``)."""
    value = leaf
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def rejected(api, response, status: int = 422) -> dict[str, Any]:
    """Assert a clean refusal with our error shape; returns the error object."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def fields_of(error: dict[str, Any]) -> list[tuple[int, str]]:
    return [(e["index"], e["field"]) for e in error.get("errors", [])]


def post_track(api, fields: str, message_id: str = "m1", event: str = "clicked") -> Any:
    """POST /v1/batch of one track message written as raw JSON text, ``fields`` spliced into it."""
    body = (
        f'{{"batch": [{{"type": "track", "event": "{event}", "messageId": "{message_id}", "userId": "U-1", '
        + fields
        + "}]}"
    ).encode()
    return api.client.post("/v1/batch", content=body, headers={**WRITE, "Content-Type": "application/json"})


@pytest.fixture
def unchanged(api):
    """Checks at teardown that the test stored nothing at all."""
    before = api.snapshot()
    yield
    assert api.snapshot() == before


# -- wrong types and unknown fields -------------------------------------------------------------
WRONG_FIELDS = [
    ({"messageId": 12345}, "messageId"),
    ({"messageId": ""}, "messageId"),
    ({"properties": ["a", "b"]}, "properties"),
    ({"properties": "a=b"}, "properties"),
    ({"type": "page"}, "type"),
    ({"event": 7}, "event"),
    ({"timestamp": {"at": "now"}}, "timestamp"),
    ({"identities": {"phone": ["13800138000"]}}, "identities.phone"),
    ({"identities": {"qq": "12345"}}, "identities.qq"),
    ({"userId": True}, "userId"),
    ({"userId": 1.5}, "userId"),
    ({"favourite_colour": "red"}, "favourite_colour"),
]


def test_wrong_types_and_unknown_message_fields_are_rejected_naming_the_field(api, unchanged) -> None:
    for patch, field in WRONG_FIELDS:
        msg = {**track("clicked", userId="U-1"), **patch}
        error = rejected(api, api.post_batch([track("ok", userId="U-0"), msg]))
        assert error["code"] == "invalid_messages", patch
        assert {i for i, _ in fields_of(error)} == {1}, patch
        assert any(f == field or f.startswith(field + ".") for _, f in fields_of(error)), (patch, fields_of(error))


def test_traits_on_track_and_alias_without_previous_id_are_rejected(api, unchanged) -> None:
    error = rejected(
        api,
        api.post_batch(
            [
                track("clicked", userId="U-1", traits={"a": 1}),
                {"type": "alias", "messageId": "m-alias", "userId": "U-1"},
            ]
        ),
    )
    assert {i for i, _ in fields_of(error)} == {0, 1}


def test_bodies_of_the_wrong_shape_are_rejected(api, unchanged) -> None:
    for body in ([1, 2], {"batch": {"a": 1}}, {"batch": []}, {"messages": []}, "batch", None, 3):
        r = api.client.post(
            "/v1/batch", content=json.dumps(body).encode(), headers={**WRITE, "Content-Type": "application/json"}
        )
        error = rejected(api, r)
        assert "batch" in error["message"], body


def test_unknown_top_level_fields_are_rejected_by_name(api, unchanged) -> None:
    error = rejected(api, api.post_batch([track("clicked", userId="U-1")], debug=True, admin="yes"))
    assert "admin" in error["message"] and "debug" in error["message"]


def test_known_segment_top_level_fields_are_accepted(api) -> None:
    r = api.post_batch(
        [track("clicked", userId="U-1")],
        context={"library": {"name": "x"}},
        sentAt=at(0),
        writeKey="ignored",
        metadata={},
    )
    assert r.status_code == 200, r.text


def test_batch_items_that_are_not_objects_are_rejected(api, unchanged) -> None:
    for item in (1, "text", None, [track("clicked", userId="U-1")]):
        error = rejected(api, api.post_batch([track("clicked", userId="U-1"), item]))
        assert fields_of(error) == [(1, "")], item
        assert "object" in error["errors"][0]["reason"]


# -- sizes --------------------------------------------------------------------------------------
def test_string_longer_than_max_string_chars_is_rejected(api, unchanged, settings) -> None:
    limit = settings.max_string_chars
    error = rejected(
        api,
        api.post_batch(
            [
                track("clicked", userId="U-1", properties={"fine": "x" * limit}),
                track("clicked", userId="U-1", properties={"note": "y" * (limit + 1)}),
                identify(userId="U-1", traits={"bio": "中" * (limit + 1)}),
            ]
        ),
    )
    assert fields_of(error) == [(1, "properties.note"), (2, "traits.bio")]


def test_overlong_names_and_ids_are_rejected(api, unchanged) -> None:
    for field, value in (
        ("event", "e" * 129),
        ("messageId", "m" * 129),
        ("userId", "u" * 129),
        ("anonymousId", "a" * 129),
    ):
        error = rejected(api, api.post_batch([{**track("clicked", userId="U-1"), field: value}]))
        assert [f for _, f in fields_of(error)] == [field]


def test_message_larger_than_max_message_bytes_is_rejected(api, unchanged, settings) -> None:
    chunk = settings.max_string_chars - 10
    keys = settings.max_message_bytes // chunk + 2
    big = track("clicked", userId="U-1", properties={f"k{i}": "x" * chunk for i in range(keys)})
    assert len(json.dumps(big)) > settings.max_message_bytes
    error = rejected(api, api.post_batch([track("clicked", userId="U-1"), big]))
    assert [i for i, _ in fields_of(error)] == [1]
    assert str(settings.max_message_bytes) in error["errors"][0]["reason"]


@pytest.mark.siyu_settings(max_body_bytes=4096)
def test_body_larger_than_max_body_bytes_is_413(api, settings) -> None:
    before = api.snapshot()
    msgs = [track("clicked", userId="U-1", properties={"pad": "x" * 1000}) for _ in range(5)]
    body = json.dumps({"batch": msgs}).encode()
    assert len(body) > settings.max_body_bytes
    headers = {**WRITE, "Content-Type": "application/json"}
    error = rejected(api, api.client.post("/v1/batch", content=body, headers=headers), 413)
    assert str(settings.max_body_bytes) in error["message"]
    # without a Content-Length (chunked upload) the limit holds while streaming
    chunks = (body[i : i + 512] for i in range(0, len(body), 512))
    rejected(api, api.client.post("/v1/batch", content=chunks, headers=headers), 413)
    assert api.snapshot() == before
    # just under the limit is fine
    small = json.dumps({"batch": msgs[:1]}).encode()
    assert len(small) < settings.max_body_bytes
    assert api.client.post("/v1/batch", content=small, headers=headers).status_code == 200


@pytest.mark.siyu_settings(max_batch_messages=3)
def test_batch_longer_than_max_batch_messages_is_413(api, unchanged, settings) -> None:
    n = settings.max_batch_messages
    error = rejected(api, api.post_batch([track("clicked", userId="U-1") for _ in range(n + 1)]), 413)
    assert str(n) in error["message"]
    orders = [order(f"O-{i}", userId="U-1") for i in range(n + 1)]
    rejected(api, api.post_orders(orders), 413)


# -- timestamps ---------------------------------------------------------------------------------
def _future(settings, extra: timedelta) -> str:
    return (datetime.now(UTC) + timedelta(seconds=settings.max_future_seconds) + extra).isoformat()


def test_bad_timestamps_are_rejected(api, unchanged, settings) -> None:
    for stamp in (
        _future(settings, timedelta(hours=2)),
        "2999-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "yesterday",
        "2024-13-45T00:00:00Z",
        "2024-05-01 25:00",
        "",
    ):
        error = rejected(api, api.post_batch([track("clicked", userId="U-1", timestamp=stamp)]))
        assert fields_of(error) == [(0, "timestamp")], stamp


def test_timestamps_inside_the_window_are_accepted(api, settings) -> None:
    near_future = _future(settings, -timedelta(hours=2))
    result = api.batch(
        [
            track("clicked", userId="U-1", timestamp=near_future),
            track("clicked", userId="U-1", timestamp="2000-01-01T00:00:00Z"),
            track("clicked", userId="U-1", timestamp="2024-05-01T10:00:00"),
        ]
    )  # brand time zone
    assert result["accepted"] == 3
    stored = {r[0] for r in api.duck("SELECT ts FROM events")}
    assert datetime(2024, 5, 1, 2, 0, tzinfo=UTC) in stored  # 10:00 Asia/Shanghai


# Regression test for a bug this suite found: timestamps at the edge of datetime's range overflow in
# Validator._time (value.astimezone(UTC) raises OverflowError) → 500 instead of 422 (src/siyu/ingest/validate.py
# Validator._time)
@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00", "0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_timestamps_at_the_edge_of_the_calendar_are_rejected(api, unchanged, stamp) -> None:
    error = rejected(api, api.post_batch([track("clicked", userId="U-1", timestamp=stamp)]))
    assert fields_of(error) == [(0, "timestamp")]


# -- encodings ------------------------------------------------------------------------------------
def test_invalid_utf8_body_is_400(api, unchanged) -> None:
    body = b'{"batch": [{"type": "track", "event": "clicked", "messageId": "m1", "userId": "\xff\xfe"}]}'
    error = rejected(
        api, api.client.post("/v1/batch", content=body, headers={**WRITE, "Content-Type": "application/json"}), 400
    )
    assert error["code"] == "invalid_json"


def test_lone_surrogate_escapes_are_rejected(api, unchanged) -> None:
    for escape in ("\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800"):
        for where in ('"properties": {"name": "a%sb"}', '"anonymousId": "a%sb"', '"properties": {"a%sb": 1}'):
            r = post_track(api, where % escape)
            assert 400 <= r.status_code < 500, (escape, where, r.text)
            assert r.json()["error"]["message"]


def test_escaped_surrogate_pairs_are_valid_and_stored_verbatim(api) -> None:
    body = (
        '{"batch": [{"type": "track", "event": "clicked", "messageId": "m-emoji", "userId": "U-1", '
        '"properties": {"name": "\\ud83d\\ude00 好"}}]}'
    ).encode()
    r = api.client.post("/v1/batch", content=body, headers={**WRITE, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    props = json.loads(api.duck("SELECT properties FROM events WHERE event_id = 'm-emoji'")[0][0])
    assert props == {"name": "\U0001f600 好"}


@pytest.mark.parametrize("number", ["100000000000000000000", "-9223372036854775809", "1" + "0" * 40])
def test_integers_past_64_bits_are_refused_not_rounded_into_floats(api, unchanged, number: str) -> None:
    """orjson reads an integer past 64 bits as a float, dropping digits (an order number would be
    stored wrong without a word); such a body is refused, naming the number."""
    for where in ('"properties": {"order_no": %s}', '"properties": {"a": [1, {"b": %s}]}'):
        error = rejected(api, post_track(api, where % number, event="paid"), 400)
        assert error["code"] == "invalid_json" and "integer out of the 64-bit range" in error["message"]


def test_long_digit_runs_that_are_not_huge_integers_are_read_as_before(api) -> None:
    """Twenty digits or more inside a string or a float, and the 64-bit extremes, are read as
    orjson reads them: the largest unsigned one is refused by the checks, naming its field (stored
    integers are signed); the rest is stored as given."""
    fields = (
        '"properties": {"no": "123456789012345678901234567890", "x": 1.0000000000000000000001, '
        '"low": -9223372036854775808%s}'
    )
    error = rejected(api, post_track(api, fields % ', "top": 18446744073709551615', "m-digits", "paid"))
    assert fields_of(error) == [(0, "properties.top")]
    assert "integer out of the 64-bit range" in error["errors"][0]["reason"]
    r = post_track(api, fields % "", "m-digits", "paid")
    assert r.status_code == 200, r.text
    props = json.loads(api.duck("SELECT properties FROM events WHERE event_id = 'm-digits'")[0][0])
    assert props == {"no": "123456789012345678901234567890", "x": 1.0, "low": -(2**63)}


def test_non_json_body_is_400(api, unchanged) -> None:
    r = api.client.post("/v1/batch", content=b"batch=1&x=2", headers={**WRITE, "Content-Type": "application/json"})
    rejected(api, r, 400)


# -- nesting ------------------------------------------------------------------------------------
def test_nesting_up_to_max_depth_is_accepted(api, settings) -> None:
    assert (
        api.batch(
            [
                track("clicked", userId="U-1", properties=nested(settings.max_json_depth)),
                identify(userId="U-1", traits=nested(settings.max_json_depth, leaf=[])),
            ]
        )["accepted"]
        == 2
    )


def test_nesting_deeper_than_max_depth_is_rejected_naming_the_path(api, unchanged, settings) -> None:
    depth = settings.max_json_depth + 1
    deep_list: Any = "x"
    for _ in range(depth - 1):
        deep_list = [deep_list]
    error = rejected(
        api,
        api.post_batch(
            [
                track("clicked", userId="U-1", properties=nested(depth)),
                identify(userId="U-1", traits=nested(depth)),
                track("clicked", userId="U-1", properties=deep_list),
                track("clicked", userId="U-1", properties={"l": deep_list}),
            ]
        ),
    )
    by_index = {i: f for i, f in fields_of(error)}
    assert set(by_index) == {0, 1, 2, 3}
    assert by_index[0].startswith("properties.a.a")
    assert by_index[1].startswith("traits.a.a")
    assert by_index[2] == "properties"  # a list is not a properties object at all
    assert by_index[3].startswith("properties.l[0][0]")


def test_depth_nine_object_is_rejected(api, unchanged, settings) -> None:
    assert settings.max_json_depth == 8
    error = rejected(api, api.post_batch([track("clicked", userId="U-1", properties=nested(9))]))
    assert fields_of(error) and fields_of(error)[0][1].startswith("properties.a")


def test_absurd_nesting_is_rejected_without_a_crash(api, unchanged) -> None:
    for depth in (300, 5000):
        for field in ("properties", "context"):
            body = (
                '{"batch": [{"type": "track", "event": "clicked", "messageId": "m1", "userId": "U-1", '
                f'"{field}": ' + '{"a": ' * depth + "1" + "}" * depth + "}]}"
            )
            r = api.client.post(
                "/v1/batch", content=body.encode(), headers={**WRITE, "Content-Type": "application/json"}
            )
            assert 400 <= r.status_code < 500, (depth, field, r.text[:300])
            assert r.json()["error"]["message"]


# -- NUL and control characters -------------------------------------------------------------------
NUL_CASES = [
    (track("clicked", userId="U-1", properties={"note": "a\x00b"}), "properties.note"),
    (track("clicked", userId="U-1", properties={"list": ["ok", "b\x00"]}), "properties.list[1]"),
    (track("clicked", userId="U-1", properties={"k\x00": "v"}), "properties"),
    (track("cli\x00cked", userId="U-1"), "event"),
    (track("cli\ncked", userId="U-1"), "event"),
    (track("clicked", userId="U-\x001"), "userId"),
    (track("clicked", anonymousId="a\x00"), "anonymousId"),
    (track("clicked", userId="U-1", identities={"email": "a\x00@example.com"}), "identities.email"),
    (identify(userId="U-1", traits={"name": "\x00"}), "traits.name"),
]


def test_nul_and_control_characters_are_rejected_naming_the_field(api, unchanged) -> None:
    for msg, field in NUL_CASES:
        error = rejected(api, api.post_batch([msg]))
        assert [f for _, f in fields_of(error)] == [field], msg


# Regression test for a bug this suite found: messageId is not checked for NUL characters: accepted on SQLite (a
# NUL in the event store's event_id) and a 500 on PostgreSQL when the message logs a merge or refusal
# (identity_merges.message_id cannot hold NUL) (src/siyu/ingest/schemas.py Message.messageId / validate.py
# Validator.messages)
def test_nul_in_message_id_is_rejected(api) -> None:
    assert api.post_batch([identify(userId="U-nul", identities={"member_id": "M1"})]).status_code == 200
    before = api.snapshot()
    # the second member_id is refused, so the message id would also land in identity_merges.message_id
    r = api.post_batch([identify(message_id="m\x00id", userId="U-nul", identities={"member_id": "M2"})])
    error = rejected(api, r)
    assert [f for _, f in fields_of(error)] == ["messageId"]
    assert api.snapshot() == before


# Regression test for a bug this suite found: order_id and channel are not checked for NUL characters and land
# in the event store (src/siyu/ingest/validate.py Validator.orders checks only items.sku/category)
def test_nul_in_order_fields_is_rejected(api, unchanged) -> None:
    for field, value in (("order_id", "O\x00-1"), ("channel", "mall\x00")):
        bad = {**order("O-1", userId="U-1", updated_at=at(0)), field: value}
        error = rejected(api, api.post_orders([bad]))
        assert [f for _, f in fields_of(error)] == [field], field


def test_nul_in_order_items_is_rejected(api, unchanged) -> None:
    bad = order("O-1", userId="U-1", items=[{"sku": "A\x00", "quantity": 1, "price_fen": 1}])
    error = rejected(api, api.post_orders([bad]))
    assert [f for _, f in fields_of(error)] == ["items.0.sku"]


# -- event names --------------------------------------------------------------------------------
def test_event_names_starting_with_dollar_are_reserved(api, unchanged) -> None:
    for name in ("$identify", "$trait_changed", "$identities_merged", "$anything"):
        error = rejected(api, api.post_batch([track(name, userId="U-1")]))
        assert fields_of(error) == [(0, "event")], name
        assert "$" in error["errors"][0]["reason"]


# -- SQL-looking data is just data --------------------------------------------------------------
SQLISH = "'; DROP TABLE persons; --"


def test_sql_looking_strings_are_stored_verbatim(api) -> None:
    event_name = "x'); DELETE FROM identities; --"
    prop_key = 'k"; DROP TABLE events; --'
    msgs = [
        track(event_name, userId=SQLISH, properties={prop_key: "1 OR 1=1", "q": '" OR ""="'}, timestamp=at(0)),
        identify(
            userId=SQLISH,
            anonymousId="a' OR '1'='1",
            traits={"name": "Robert'); DROP TABLE traits;--"},
            identities={"email": "o'brien@example.com"},
            timestamp=at(1),
        ),
    ]
    result = api.batch(msgs)
    assert result["accepted"] == 2 and result["new_persons"] == 1
    profile = api.person(f"user_id:{SQLISH}")
    assert {(i["type"], i["value"]) for i in profile["identities"]} == {
        ("user_id", SQLISH),
        ("anonymous_id", "a' OR '1'='1"),
        ("email", "o'brien@example.com"),
    }
    assert profile["traits"] == {"name": "Robert'); DROP TABLE traits;--"}
    items = {i["event_id"]: i for i in profile["timeline"]["items"]}
    assert items[msgs[0]["messageId"]]["name"] == event_name
    assert items[msgs[0]["messageId"]]["properties"] == msgs[0]["properties"]
    assert api.person_id("anonymous_id:a' OR '1'='1") == profile["id"]
    # every table is still there
    assert set(metadata.tables) <= set(inspect(api.runtime.engine).get_table_names())
    duck_tables = {r[0] for r in api.duck("SELECT table_name FROM information_schema.tables")}
    assert set(DUCK_TABLES) <= duck_tables
    assert api.stats() == {"persons": 1, "identities": 3, "events": 2 + result["traits_changed"], "orders": 0}


def test_sql_looking_tracking_plan_event_name_works(api) -> None:
    r = api.client.put(
        f"/v1/tracking-plan/{SQLISH.replace(' ', '%20')}", json={"type": "object", "required": ["sku"]}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert api.client.get("/v1/tracking-plan", headers=ADMIN).json()["events"] == {
        SQLISH: {"type": "object", "required": ["sku"]}
    }
    assert api.post_batch([track(SQLISH, userId="U-1")]).status_code == 422
    assert api.batch([track(SQLISH, userId="U-1", properties={"sku": "A"})])["accepted"] == 1


def test_overlong_person_reference_is_rejected(api) -> None:
    assert api.get_person("user_id:" + "x" * 400).status_code == 422
    assert api.get_person("user_id:nobody").status_code == 404
    assert api.client.get("/v1/persons/user_id:nobody?limit=0", headers=ADMIN).status_code == 422


# -- auth ---------------------------------------------------------------------------------------
ADMIN_CALLS = [
    ("get", "/v1/stats"),
    ("get", "/v1/persons/user_id:U-1"),
    ("get", "/v1/persons/user_id:U-1/export"),
    ("delete", "/v1/persons/user_id:U-1"),
    ("get", "/v1/tracking-plan"),
    ("delete", "/v1/tracking-plan/clicked"),
]


def test_missing_or_unknown_key_is_401(api, unchanged) -> None:
    body = {"batch": [track("clicked", userId="U-1")]}
    for headers in (
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Token test-write"},
        {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()},
    ):
        r = api.client.post("/v1/batch", json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"
    for method, path in ADMIN_CALLS:
        assert api.client.request(method, path).status_code == 401, path


# Regression: FastAPI's HTTPBasic dependency used to answer this itself, outside the error shape.
def test_malformed_basic_auth_is_401_in_the_error_shape(api, unchanged) -> None:
    r = api.client.post(
        "/v1/batch", json={"batch": [track("clicked", userId="U-1")]}, headers={"Authorization": "Basic !!notbase64"}
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"


def test_write_key_on_admin_endpoints_is_403(api) -> None:
    api.batch([track("clicked", userId="U-1")])
    before = api.snapshot()
    for method, path in ADMIN_CALLS:
        r = api.client.request(method, path, headers=WRITE)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    assert api.snapshot() == before


def test_basic_auth_with_the_key_as_user_name_works(api) -> None:
    token = base64.b64encode(b"test-write:").decode()
    r = api.client.post(
        "/v1/batch", json={"batch": [track("clicked", userId="U-1")]}, headers={"Authorization": f"Basic {token}"}
    )
    assert r.status_code == 200, r.text


def test_admin_key_may_write(api) -> None:
    r = api.client.post("/v1/batch", json={"batch": [track("clicked", userId="U-1")]}, headers=ADMIN)
    assert r.status_code == 200, r.text


# Regression test for a bug this suite found: a non-ASCII API key reaches hmac.compare_digest(str, str), which
# raises TypeError for non-ASCII strings → 500 instead of 401 (src/siyu/api/keys.py key_kind)
def test_non_ascii_key_is_401(api, unchanged) -> None:
    r = api.client.post(
        "/v1/batch", json={"batch": [track("clicked", userId="U-1")]}, headers={"Authorization": "Bearer clé".encode()}
    )
    assert r.status_code == 401, r.text
