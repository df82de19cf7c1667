"""The pandas oracle for segments (tests/segment_oracle.py) against answers worked out by hand,
one test per rule of "Precise meaning（精确语义）" in docs/segments.md; and the random trees and
data sets the compiler is checked with: every tree validates and round-trips, and the oracle
evaluates every tree without raising."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from segment_data import random_oracle_data
from segment_oracle import OracleData, add_months, empty_data, evaluate
from segment_strategies import trees
from segment_vocab import DEFAULT_VOCAB, vocab_catalogue, vocab_segments
from siyu.segments import Catalogue, parse, to_text, validate
from siyu.segments.nodes import Condition, Node, Not

SH = ZoneInfo("Asia/Shanghai")
#: 12:00 on Tuesday 31 March 2026 in Shanghai.
NOW = datetime(2026, 3, 31, 4, 0, tzinfo=UTC)
PEOPLE = ("a", "b", "c")

CATALOGUE = Catalogue.from_dict(
    {
        "traits": {
            "city": "string",
            "nickname": "string",
            "age": "integer",
            "score": "number",
            "vip": "boolean",
            "birthday": "datetime",
            "interests": "list",
        },
        "events": {
            "view": {"sku": "string", "price_fen": "integer", "labels": "list", "at": "datetime", "new": "boolean"},
            "add_contact": {"state": "string"},
            "buy": {"amount_fen": "integer"},
        },
        "tags": ["高意向", "已流失", "宝妈"],
        "segments": ["big", "loop", "again"],
        "groups": ["宝妈群", "wr1", "wr2"],
        "staff": ["zhangsan", "lisi"],
    }
)


def local(text: str) -> datetime:
    """A wall-clock time in Shanghai as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=SH)


def make(
    *,
    persons: Iterable[str] = PEOPLE,
    owners: dict[str, str] | None = None,
    events: Iterable[tuple[Any, ...]] = (),
    orders: Iterable[dict[str, Any]] = (),
    traits: dict[str, dict[str, Any]] | None = None,
    tags: Iterable[tuple[str, str, str]] = (),
    groups: Iterable[tuple[str, str, str | None]] = (),
    aliases: dict[str, str] | None = None,
) -> OracleData:
    """Data from short rows: events ``(person, name, ts[, properties[, message_type]])`` (properties a
    dict, JSON text or None), orders as dicts (defaults filled in), traits ``{person: {key: value}}``,
    tags ``(person, tag, staff)``, groups ``(person, chat_id, name)``, aliases ``{alias: survivor}``."""
    data = empty_data()
    persons = list(persons)
    data.persons = pd.DataFrame({"person_id": persons, "owner": [(owners or {}).get(p) for p in persons]}, dtype=object)
    rows = []
    for i, row in enumerate(events):
        person, name, ts, *rest = row
        props = rest[0] if rest else None
        rows.append(
            {
                "event_id": f"e{i}",
                "person_id": person,
                "name": name,
                "ts": ts,
                "properties": json.dumps(props) if isinstance(props, dict | list) else props,
                "message_type": rest[1] if len(rest) > 1 else "track",
            }
        )
    if rows:
        frame = pd.DataFrame(rows)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        data.events = frame
    order_rows = [
        {
            "version": 1,
            "status": "paid",
            "amount_fen": 10000,
            "discount_fen": 0,
            "refund_fen": 0,
            "items": [],
            "channel": "mall",
            "paid_at": NOW,
            **o,
        }
        for o in orders
    ]
    if order_rows:
        frame = pd.DataFrame(order_rows)
        frame["paid_at"] = pd.to_datetime(frame["paid_at"], utc=True)
        data.orders = frame
    data.traits = pd.DataFrame(
        [(p, k, v) for p, kv in (traits or {}).items() for k, v in kv.items()],
        columns=["person_id", "key", "value"],
        dtype=object,
    )
    data.tags = pd.DataFrame(list(tags), columns=["person_id", "tag", "staff_userid"], dtype=object)
    data.groups = pd.DataFrame(list(groups), columns=["person_id", "chat_id", "name"], dtype=object)
    data.aliases = pd.DataFrame(list((aliases or {}).items()), columns=["alias_id", "person_id"], dtype=object)
    return data


def run(text: str, data: OracleData, *, now: datetime = NOW, segments: Mapping[str, Node] | None = None) -> set[str]:
    """Evaluate ``text`` (validated first) over ``data``."""
    tree = parse(text)
    validate(tree, CATALOGUE)
    return evaluate(tree, data, catalogue=CATALOGUE, now=now, segments=segments)


# -- traits and person fields ------------------------------------------------------------------------
TRAITS = make(
    persons=("a", "b", "c", "d"),
    traits={
        "a": {"city": "北京", "age": 30, "score": 4.0, "vip": True, "nickname": "宝妈小李", "interests": ["烘焙", 1]},
        "b": {"city": "上海", "age": "abc", "score": 4.5, "vip": "true", "nickname": "Amy", "interests": "烘焙"},
        "c": {"age": 18, "score": True, "interests": []},
    },
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('city = "北京"', {"a"}),
        ('city != "北京"', {"b"}),  # != needs the trait to be set
        ('not city = "北京"', {"b", "c", "d"}),  # the complement includes people without a city
        ('city in ("北京", "广州")', {"a"}),
        ('city not in ("北京", "广州")', {"b"}),
        ('nickname contains "宝妈"', {"a"}),
        ('nickname not contains "宝妈"', {"b"}),
        ('interests contains "烘焙"', {"a"}),  # b's interests is a string, not a list: wrong type
        ('interests not contains "烘焙"', {"c"}),
        ("interests contains 1", {"a"}),
        ("interests contains true", set()),  # true is not the number 1
        ("age = 30", {"a"}),
        ("age != 30", {"c"}),  # b's "abc" is of the wrong type: false for != too
        ("age between 18 and 30", {"a", "c"}),  # both ends included
        ("age > 18", {"a"}),
        ("age is set", {"a", "b", "c"}),  # set = present and not null, whatever the type
        ("age is not set", {"d"}),
        ("score = 4", {"a"}),  # numbers compare as numbers: 4.0 = 4
        ("score >= 4.5", {"b"}),  # c's true is not a number
        ("vip = true", {"a"}),  # b's "true" is a string
        ("vip != true", set()),
        ("vip in (true, false)", {"a"}),
    ],
)
def test_trait_conditions(text: str, expected: set[str]) -> None:
    assert run(text, TRAITS) == expected


def test_datetime_trait_date_only_is_the_whole_local_day() -> None:
    # 2026-01-01 in Shanghai is [2025-12-31T16:00Z, 2026-01-01T16:00Z)
    data = make(
        persons=("before", "start", "end", "next", "bad", "none"),
        traits={
            "before": {"birthday": "2025-12-31T23:59:59+08:00"},
            "start": {"birthday": "2026-01-01"},  # no offset: local midnight
            "end": {"birthday": "2026-01-01T15:59:59Z"},
            "next": {"birthday": "2026-01-01T16:00:00Z"},
            "bad": {"birthday": "soon"},
        },
    )
    assert run('birthday = "2026-01-01"', data) == {"start", "end"}
    assert run('birthday != "2026-01-01"', data) == {"before", "next"}
    assert run('birthday < "2026-01-01"', data) == {"before"}
    assert run('birthday <= "2026-01-01"', data) == {"before", "start", "end"}
    assert run('birthday > "2026-01-01"', data) == {"next"}
    assert run('birthday >= "2026-01-01"', data) == {"start", "end", "next"}
    assert run('birthday between "2026-01-01" and "2026-01-01"', data) == {"start", "end"}
    # a date-time without an offset is an instant in the brand time zone
    assert run('birthday = "2026-01-01 00:00"', data) == {"start"}
    assert run('birthday <= "2026-01-01T00:00:00Z"', data) == {"before", "start"}
    assert run("birthday is set", data) == {"before", "start", "end", "next", "bad"}


def test_calendar_months_clamp_to_the_end_of_the_month() -> None:
    assert add_months(pd.Timestamp(NOW), -1, SH) == pd.Timestamp(local("2026-02-28 12:00"))
    leap = datetime(2024, 3, 31, 4, 0, tzinfo=UTC)
    assert add_months(pd.Timestamp(leap), -1, SH) == pd.Timestamp(local("2024-02-29 12:00"))
    assert add_months(pd.Timestamp(NOW), -13, SH) == pd.Timestamp(local("2025-02-28 12:00"))
    # 16:30 UTC on 31 March is already 1 April in Shanghai: 1m ago is 1 March 00:30 local
    late = datetime(2026, 3, 31, 16, 30, tzinfo=UTC)
    assert add_months(pd.Timestamp(late), -1, SH) == pd.Timestamp(local("2026-03-01 00:30"))
    data = make(
        events=[
            ("a", "view", local("2026-02-28 12:00")),
            ("b", "view", local("2026-02-28 11:59:59")),
            ("c", "view", local("2026-03-03 12:00")),
        ]
    )
    assert run("did view in last 1m", data) == {"a", "c"}
    assert run("first_seen >= 1m ago", data) == {"a", "c"}
    assert run("did view in last 30d", data) == {"c"}  # 30 days is 1 March 12:00
    assert run("did view in last 1m", data, now=leap) == set()


def test_person_fields_from_events_and_paid_orders() -> None:
    data = make(
        persons=("a", "b", "c"),
        owners={"a": "zhangsan"},
        events=[
            ("a", "view", local("2025-01-01 08:00")),
            ("a", "view", local("2026-04-02 08:00")),  # after now: still the latest
            ("a", "$trait_changed", local("2024-01-01 08:00"), None, "change"),  # not a first_seen
            ("b", "$group_joined", local("2026-03-01 08:00"), {"chat_id": "wr1"}, "change"),  # a sighting
            ("c", "$owner_changed", local("2026-03-01 08:00"), {"new": "lisi"}, "change"),  # not one
        ],
        orders=[
            {"order_id": "o1", "person_id": "a", "amount_fen": 30000, "refund_fen": 5000},
            {"order_id": "o2", "person_id": "a", "amount_fen": 20000, "status": "refunded", "refund_fen": 20000},
            {"order_id": "o3", "person_id": "a", "amount_fen": 99999, "status": "created", "paid_at": None},
        ],
    )
    assert run('first_seen = "2025-01-01"', data) == {"a"}
    assert run('last_seen > "2026-04-01"', data) == {"a"}
    assert run("first_seen is not set", data) == {"c"}  # c has only a change event that is no sighting
    assert run('first_seen = "2026-03-01"', data) == {"b"}
    assert run("order_count = 2", data) == {"a"}  # refunded orders still count
    assert run("total_spend_fen = 25000", data) == {"a"}  # 30000 - 5000 + 20000 - 20000
    assert run("total_spend_fen = 0 and order_count = 0", data) == {"b", "c"}
    assert run('owner = "zhangsan"', data) == {"a"}
    assert run('owned by "zhangsan"', data) == {"a"}
    assert run('owner != "zhangsan"', data) == set()  # != needs an owner
    assert run("owner is not set", data) == {"b", "c"}


# -- events ---------------------------------------------------------------------------------------------
def test_windows_in_last_between_and_ever() -> None:
    data = make(
        persons=("edge", "now", "future", "old", "jan31", "feb1"),
        events=[
            ("edge", "view", pd.Timestamp(NOW) - pd.Timedelta(days=30)),
            ("now", "view", NOW),
            ("future", "view", pd.Timestamp(NOW) + pd.Timedelta(seconds=1)),
            ("old", "view", pd.Timestamp(NOW) - pd.Timedelta(days=30, microseconds=1)),
            ("jan31", "view", local("2026-01-31 23:59:59")),
            ("feb1", "view", local("2026-02-01 00:00")),
        ],
    )
    assert run("did view in last 30d", data) == {"edge", "now"}
    assert run("did view ever", data) == set(data.persons["person_id"])  # events after now count for ever only
    assert run('did view between "2026-01-01" and "2026-01-31"', data) == {"jan31"}  # end covers its day
    assert run('did view between "2026-01-01" and "2026-02-01 00:00"', data) == {"jan31", "feb1"}
    assert run('did view between "2026-02-01" and 30d ago', data) == {"feb1", "old", "edge"}  # instant end, <=
    assert run("did view between 720h ago and 0h ago", data) == {"edge", "now"}
    assert run("did view in last 1h", data) == {"now"}


def test_count_includes_zero_and_never_is_not() -> None:
    data = make(
        events=[
            ("a", "buy", local("2026-03-01 10:00")),
            ("a", "buy", local("2026-03-02 10:00")),
            ("b", "buy", local("2026-03-01 10:00")),
            ("b", "buy", local("2025-01-01 10:00")),  # outside the window
        ]
    )
    assert run("did buy < 2 in last 90d", data) == {"b", "c"}
    assert run("did buy = 0 in last 90d", data) == {"c"}
    assert run("did buy != 1 times in last 90d", data) == {"a", "c"}
    assert run("did buy >= 2 in last 90d", data) == {"a"}
    assert run("did buy >= 2 ever", data) == {"a", "b"}
    assert run("did buy <= 0 ever", data) == {"c"}
    assert run("did buy in last 90d", data) == {"a", "b"}
    assert run("never did buy in last 90d", data) == {"c"}
    assert run("never did buy where amount_fen > 0 ever", data) == {"a", "b", "c"}  # no amounts at all


def test_change_events_count_only_when_named() -> None:
    data = make(
        events=[
            ("a", "$group_joined", local("2026-03-30 10:00"), {"chat_id": "wr1"}, "change"),
            ("b", "$identify", local("2026-03-30 10:00"), {"traits": {}}, "identify"),
            ("c", "order_paid", local("2026-03-30 10:00"), {"amount_fen": 1}, "order"),
        ]
    )
    assert run("did any in last 7d", data) == {"b", "c"}
    assert run("did $group_joined in last 7d", data) == {"a"}
    assert run('did $group_joined where chat_id = "wr1" ever', data) == {"a"}
    assert run("first did any ever", data) == {"b", "c"}
    assert run("did any then any within 1d", data) == set()


def test_where_reads_typed_properties() -> None:
    data = make(
        persons=("ok", "missing", "null", "wrong", "noprops", "notobject", "float"),
        events=[
            ("ok", "view", NOW, {"sku": "S1", "price_fen": 100, "labels": ["促销"], "new": True}),
            ("missing", "view", NOW, {"price_fen": 100}),
            ("null", "view", NOW, {"sku": None, "price_fen": None, "labels": None}),
            ("wrong", "view", NOW, {"sku": 1, "price_fen": "100", "labels": "促销", "new": "true"}),
            ("noprops", "view", NOW, None),
            ("notobject", "view", NOW, ["sku"]),
            ("float", "view", NOW, {"price_fen": 100.0, "sku": "促销 S1"}),
        ],
    )
    assert run('did view where sku = "S1" ever', data) == {"ok"}
    assert run('did view where sku != "S1" ever', data) == {"float"}  # missing, null, wrong type: false
    assert run('did view where sku not in ("S1") ever', data) == {"float"}
    assert run('did view where sku contains "S1" ever', data) == {"ok", "float"}  # a substring
    assert run('did view where sku not contains "S1" ever', data) == set()
    assert run('did view where labels contains "促销" ever', data) == {"ok"}  # an element, not a substring
    assert run('did view where labels not contains "促" ever', data) == {"ok"}
    assert run("did view where price_fen = 100 ever", data) == {"ok", "missing", "float"}
    assert run("did view where new = true ever", data) == {"ok"}
    assert run("did view where new != true ever", data) == set()
    assert run("did view where sku is set ever", data) == {"ok", "wrong", "float"}
    assert run("did view where sku is not set ever", data) == {"missing", "null", "noprops", "notobject"}


def test_datetime_property_is_an_iso_string() -> None:
    data = make(
        events=[
            ("a", "view", NOW, {"at": "2026-01-01 09:00"}),  # no offset: Shanghai
            ("b", "view", NOW, {"at": "2026-01-01T17:00:00Z"}),  # 01:00 on 2 January in Shanghai
            ("c", "view", NOW, {"at": 1767225600}),  # a number is not a date-time
        ]
    )
    assert run('did view where at = "2026-01-01" ever', data) == {"a"}
    assert run('did view where at < "2026-01-01 12:00" ever', data) == {"a"}
    assert run('did view where at between "2026-01-01" and "2026-01-02" ever', data) == {"a", "b"}


def test_did_any_where_uses_every_events_properties() -> None:
    data = make(events=[("a", "add_contact", NOW, {"state": "渠道A"}), ("b", "view", NOW, {"sku": "渠道A"})])
    assert run('did any where state = "渠道A" in last 1d', data) == {"a"}


def test_first_did_with_ties_where_and_window() -> None:
    t1, t2 = local("2026-03-25 10:00"), local("2026-03-26 10:00")
    data = make(
        persons=("tie", "later", "old", "none"),
        events=[
            ("tie", "buy", t1, {"amount_fen": 100}),
            ("tie", "buy", t1, {"amount_fen": 20000}),  # same earliest instant: one satisfying is enough
            ("later", "buy", t1, {"amount_fen": 100}),
            ("later", "buy", t2, {"amount_fen": 20000}),  # not the first
            ("old", "buy", local("2025-01-01 10:00"), {"amount_fen": 100}),
            ("old", "buy", t2, {"amount_fen": 20000}),  # in the window, but not the first
        ],
    )
    assert run("first did buy where amount_fen >= 10000 ever", data) == {"tie"}
    assert run("first did buy in last 7d", data) == {"tie", "later"}
    assert run("first did buy ever", data) == {"tie", "later", "old"}
    assert run("first did buy where amount_fen < 10000 in last 7d", data) == {"tie", "later"}


def test_sequences_are_strictly_later_and_within_the_first() -> None:
    a = local("2026-03-01 10:00")
    data = make(
        persons=("same", "edge", "late", "chain", "far", "reverse", "where", "window"),
        events=[
            ("same", "add_contact", a),
            ("same", "buy", a),  # not strictly later
            ("edge", "add_contact", a),
            ("edge", "buy", pd.Timestamp(a) + pd.Timedelta(days=7)),  # exactly within
            ("late", "add_contact", a),
            ("late", "buy", pd.Timestamp(a) + pd.Timedelta(days=7, seconds=1)),
            ("chain", "add_contact", a),
            ("chain", "view", pd.Timestamp(a) + pd.Timedelta(days=3)),
            ("chain", "buy", pd.Timestamp(a) + pd.Timedelta(days=6)),
            ("far", "add_contact", a),
            ("far", "view", pd.Timestamp(a) + pd.Timedelta(days=5)),
            ("far", "buy", pd.Timestamp(a) + pd.Timedelta(days=9)),  # within 7d of view, not of the first
            ("reverse", "buy", a),
            ("reverse", "add_contact", pd.Timestamp(a) + pd.Timedelta(days=1)),
            ("where", "add_contact", a, {"state": "渠道B"}),
            ("where", "add_contact", pd.Timestamp(a) + pd.Timedelta(days=2), {"state": "渠道A"}),
            ("where", "buy", pd.Timestamp(a) + pd.Timedelta(days=8), {"amount_fen": 500}),
            ("window", "add_contact", local("2025-12-31 10:00")),
            ("window", "buy", local("2026-01-02 10:00")),
        ],
    )
    assert run("did add_contact then buy within 7d", data) == {"edge", "chain", "where", "window"}
    assert run("did add_contact then view then buy within 7d", data) == {"chain"}
    assert run("did add_contact then buy within 1m", data) == {"edge", "late", "chain", "far", "where", "window"}
    assert run('did add_contact where state = "渠道A" then buy within 7d', data) == {"where"}
    assert run('did add_contact where state = "渠道B" then buy within 7d', data) == set()
    assert run("did add_contact then buy where amount_fen >= 1000 within 30d", data) == set()
    assert run('did add_contact then buy within 7d between "2026-01-01" and "2026-01-31"', data) == set()
    assert run('did add_contact then buy within 7d between "2025-12-01" and "2026-01-31"', data) == {"window"}
    assert run("did buy then add_contact within 2d", data) == {"reverse"}
    assert run("did any then any within 1h", data) == set()


def test_merged_persons_through_aliases() -> None:
    data = make(
        persons=("a", "b"),
        aliases={"old-a": "a"},
        events=[
            ("old-a", "view", NOW),
            ("a", "view", NOW),
            ("gone", "view", NOW),  # an erased person: not in the universe
        ],
        orders=[
            {"order_id": "o1", "person_id": "old-a", "version": 1},
            {"order_id": "o1", "person_id": "a", "version": 2, "status": "shipped"},
            {"order_id": "o2", "person_id": "old-a"},
            {"order_id": "o3", "person_id": "gone"},
        ],
        tags=[("old-a", "宝妈", "")],
        groups=[("old-a", "wr1", "宝妈群")],
        traits={"old-a": {"city": "上海"}, "a": {"city": "北京"}},
    )
    assert run("did view >= 2 ever", data) == {"a"}
    assert run("order_count = 2", data) == {"a"}
    assert run('has tag "宝妈"', data) == {"a"}
    assert run('in group "wr1"', data) == {"a"}
    assert run('city = "北京"', data) == {"a"}  # the survivor's own value wins
    assert run("did view ever", data) == {"a"}


# -- orders -------------------------------------------------------------------------------------------------
def test_only_the_latest_version_of_a_paid_order_counts() -> None:
    paid = local("2026-03-20 10:00")
    data = make(
        orders=[
            # rows out of order: version 2 (cancelled) is the latest
            {"order_id": "o1", "person_id": "a", "version": 2, "status": "cancelled", "paid_at": paid},
            {"order_id": "o1", "person_id": "a", "version": 1, "status": "paid", "paid_at": paid},
            {"order_id": "o2", "person_id": "b", "version": 1, "status": "paid", "amount_fen": 100},
            {"order_id": "o2", "person_id": "b", "version": 2, "status": "shipped", "amount_fen": 5000},
            {"order_id": "o3", "person_id": "c", "version": 1, "status": "created", "paid_at": None},
            {"order_id": "o4", "person_id": "c", "version": 1, "status": "paid", "paid_at": None},
        ]
    )
    assert run("orders count >= 1", data) == {"b"}
    assert run("orders sum amount_fen = 5000", data) == {"b"}
    assert run('orders count where status = "shipped" = 1', data) == {"b"}
    assert run("orders count = 0", data) == {"a", "c"}


def test_order_measures_windows_and_fields() -> None:
    def order(oid: str, person: str, amount: int, days_ago: int, **extra: Any) -> dict[str, Any]:
        return {
            "order_id": oid,
            "person_id": person,
            "amount_fen": amount,
            "paid_at": pd.Timestamp(NOW) - pd.Timedelta(days=days_ago),
            **extra,
        }

    items = [{"sku": "S1", "category": "奶粉", "quantity": 2, "price_fen": 1}]
    data = make(
        orders=[
            order("o1", "a", 10000, 1, discount_fen=100, items=items),
            order("o2", "a", 20000, 100, discount_fen=300, channel="store"),
            order("o3", "b", 5000, 10, refund_fen=5000, items=[*items, *items]),
        ]
    )
    assert run("orders count >= 2", data) == {"a"}
    assert run("orders count >= 1 in last 30d", data) == {"a", "b"}
    assert run("orders sum amount_fen >= 30000", data) == {"a"}
    assert run("orders aov = 15000", data) == {"a"}
    assert run("orders avg discount_fen = 200", data) == {"a"}
    assert run("orders avg discount_fen = 0", data) == {"b"}
    assert run("orders min amount_fen < 10000", data) == {"b"}
    assert run("orders max amount_fen >= 20000", data) == {"a"}
    assert run("orders max amount_fen >= 20000 in last 30d", data) == set()
    assert run("orders sum refund_fen > 0", data) == {"b"}
    assert run("orders sum item_count = 4", data) == {"b"}  # quantities summed over items
    assert run('orders count where channel = "store" >= 1', data) == {"a"}
    assert run("orders count where item_count >= 2 >= 1", data) == {"a", "b"}
    assert run("orders sum amount_fen where amount_fen > 5000 < 1", data) == {"b", "c"}


def test_category_and_sku_are_tested_per_item() -> None:
    def items(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
        return [{"sku": s, "category": c, "quantity": 1, "price_fen": 100} for s, c in pairs]

    data = make(
        persons=("both", "toy", "empty", "none"),
        orders=[
            {"order_id": "o1", "person_id": "both", "items": items(("S1", "奶粉"), ("S2", "玩具"))},
            {"order_id": "o2", "person_id": "toy", "items": items(("S2", "玩具"))},
            {"order_id": "o3", "person_id": "empty", "items": []},
        ],
    )
    assert run('orders count where category = "奶粉" >= 1', data) == {"both"}
    assert run('orders count where category != "奶粉" >= 1', data) == {"toy", "empty"}
    assert run('orders count where category in ("奶粉", "辅食") >= 1', data) == {"both"}
    assert run('orders count where category not in ("奶粉") >= 1', data) == {"toy", "empty"}
    assert run('orders count where category contains "奶" >= 1', data) == {"both"}
    assert run('orders count where category not contains "奶" >= 1', data) == {"toy", "empty"}
    assert run('orders count where sku = "S2" and category = "奶粉" >= 1', data) == {"both"}  # items apart
    assert run("orders count where category is set >= 1", data) == {"both", "toy"}
    # amounts stay whole-order
    assert run('orders sum amount_fen where sku = "S1" = 10000', data) == {"both"}


def test_avg_min_max_of_no_orders_never_match() -> None:
    data = make(orders=[{"order_id": "o1", "person_id": "a", "amount_fen": 100}])
    assert run("orders avg amount_fen < 1000000", data) == {"a"}
    assert run("orders aov < 1000000", data) == {"a"}
    assert run("orders min amount_fen >= 0", data) == {"a"}
    assert run("orders max amount_fen != 5", data) == {"a"}
    assert run("not orders avg amount_fen < 1000000", data) == {"b", "c"}
    assert run("orders count < 1", data) == {"b", "c"}
    assert run("orders sum amount_fen = 0", data) == {"b", "c"}
    assert run('orders avg amount_fen where channel = "store" >= 0', data) == set()


# -- tags, groups, segments ------------------------------------------------------------------------------------
def test_tags_are_a_person_level_view() -> None:
    data = make(
        persons=("a", "b", "c", "d"),
        tags=[
            ("a", "高意向", "zhangsan"),
            ("a", "宝妈", ""),
            ("b", "高意向", ""),
            ("b", "高意向", "lisi"),
            ("c", "已流失", "lisi"),
        ],
    )
    assert run('has tag "高意向"', data) == {"a", "b"}
    assert run('has any tag in ("宝妈", "已流失")', data) == {"a", "c"}
    assert run('has all tags in ("高意向", "宝妈")', data) == {"a"}
    assert run('has no tag in ("高意向", "已流失")', data) == {"d"}  # untagged persons included
    assert run('has tag "高意向" and not has tag "已流失"', data) == {"a", "b"}


def test_groups_by_name_or_chat_id() -> None:
    data = make(groups=[("a", "wr1", "宝妈群"), ("b", "wr2", None)])
    assert run('in group "宝妈群"', data) == {"a"}
    assert run('in group "wr1"', data) == {"a"}
    assert run('in group "wr2"', data) == {"b"}


def test_segments_are_evaluated_by_definition() -> None:
    data = make(orders=[{"order_id": "o1", "person_id": "a", "amount_fen": 600000}])
    segments = {"big": parse("total_spend_fen >= 500000"), "again": parse('in segment "big"')}
    assert run('in segment "again" or has tag "宝妈"', data, segments=segments) == {"a"}
    assert run('not in segment "big"', data, segments=segments) == {"b", "c"}
    with pytest.raises(ValueError, match="refers to itself"):
        run('in segment "loop"', data, segments={"loop": parse('in segment "loop"')})


def test_boolean_structure() -> None:
    data = make(traits={"a": {"city": "北京", "age": 1}, "b": {"city": "北京"}, "c": {"age": 1}})
    assert run('city = "北京" and age = 1', data) == {"a"}
    assert run('city = "北京" or age = 1', data) == {"a", "b", "c"}
    assert run('not (city = "北京" or age = 1)', data) == set()
    assert run('age = 2 or city = "北京" and age = 1', data) == {"a"}


def test_the_seven_examples_of_the_reference_run() -> None:
    data = random_oracle_data(7, persons=40)
    catalogue = vocab_catalogue()
    examples = [
        'city = "北京" and gender = "女"',
        'did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女"'
        " and first_seen <= 365d ago",
        "did order_paid >= 2 in last 90d where amount_fen >= 10000",
        'has tag "高意向" and not has tag "已流失"',
        "not did any in last 30d and did order_paid ever",
        "did add_contact then order_paid within 7d in last 60d",
        'in segment "超级用户" or total_spend_fen >= 500000',
    ]
    for text in examples:
        tree = parse(text)
        validate(tree, catalogue)
        found = evaluate(tree, data, catalogue=catalogue, now=DEFAULT_VOCAB.now, segments=vocab_segments())
        assert found <= set(data.persons["person_id"])


# -- random trees and data ------------------------------------------------------------------------------------
CATALOGUE_OF_VOCAB = vocab_catalogue()
SMALL = random_oracle_data(11, persons=40)
SEGMENTS = vocab_segments()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_random_trees_validate_and_round_trip(tree: Condition) -> None:
    validate(tree, CATALOGUE_OF_VOCAB)
    assert parse(to_text(tree)) == tree


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_the_oracle_evaluates_every_random_tree(tree: Condition) -> None:
    universe = set(SMALL.persons["person_id"])
    found = evaluate(tree, SMALL, catalogue=CATALOGUE_OF_VOCAB, now=DEFAULT_VOCAB.now, segments=SEGMENTS)
    assert found <= universe
    complement = evaluate(Not(tree), SMALL, catalogue=CATALOGUE_OF_VOCAB, now=DEFAULT_VOCAB.now, segments=SEGMENTS)
    assert complement == universe - found


def test_random_data_is_seeded_and_plausible() -> None:
    one, two = random_oracle_data(3, persons=30), random_oracle_data(3, persons=30)
    pd.testing.assert_frame_equal(one.events, two.events)
    pd.testing.assert_frame_equal(one.orders, two.orders)
    assert set(one.events["message_type"]) >= {"track", "order", "change", "identify"}
    assert one.events["ts"].dt.tz is not None and len(one.aliases) > 0
    assert (one.orders.groupby("order_id")["version"].max() > 1).any()
