"""PIPL: export everything held about a person; erase a person from both stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

import siyu.store.feed as feed
from helpers import ADMIN, WRITE, at, identify, order, track
from siyu.store.ops.schema import metadata

# Values that only the erased person's data contains (so finding one anywhere is a leak).
ANON = "anon-erase-7f3a"
USER = "user-erase-9c1b"
PHONE_RAW, PHONE = "139 1234 5678", "+8613912345678"
EMAIL = "erase.me@example.com"
MEMBER = "MEM-erase-42"
REFUSED_MEMBER = "MEM-erase-43"
ORDER_ID = "O-erase-1"
NAME = "张三丰-erase"


def seed(api) -> dict[str, Any]:
    """A person with a merge, traits, a refused identity and an order; and a bystander to keep."""
    msgs = [
        track("page_viewed", anonymousId=ANON, properties={"page": "/home"}, timestamp=at(0)),
        track("login", userId=USER, timestamp=at(1)),
        identify(
            anonymousId=ANON,
            userId=USER,
            identities={"phone": PHONE_RAW, "email": EMAIL, "member_id": MEMBER},
            traits={"name": NAME, "city": "上海"},
            timestamp=at(2),
        ),
        identify(userId=USER, identities={"member_id": REFUSED_MEMBER}, timestamp=at(3)),
        track("clicked", userId="keeper-1", identities={"phone": "13700000001"}, properties={"k": 1}, timestamp=at(4)),
        identify(userId="keeper-1", traits={"name": "李四"}, timestamp=at(5)),
    ]
    anon_pid = None
    api.batch(msgs[:1])
    anon_pid = api.person_id(f"anonymous_id:{ANON}")
    result = api.batch(msgs[1:])
    assert result["merges"] == 1 and result["refused_merges"] == 1
    api.orders(
        [
            order(
                ORDER_ID,
                userId=USER,
                amount_fen=8_800,
                paid_at=at(6),
                updated_at=at(6),
                items=[{"sku": "SKU-E", "quantity": 1, "price_fen": 8_800}],
            )
        ]
    )
    api.orders(
        [
            order(
                ORDER_ID,
                userId=USER,
                status="partially_refunded",
                amount_fen=8_800,
                refund_fen=800,
                paid_at=at(6),
                updated_at=at(7),
            )
        ]
    )
    api.orders([order("O-keep-1", userId="keeper-1", amount_fen=100, paid_at=at(8), updated_at=at(8))])
    pid = api.person_id(f"user_id:{USER}")
    assert pid != anon_pid
    return {"pid": pid, "anon_pid": anon_pid, "messages": msgs, "keeper": api.person_id("user_id:keeper-1")}


def secrets_of(seeded: dict[str, Any]) -> list[str]:
    return [
        seeded["pid"],
        seeded["anon_pid"],
        ANON,
        USER,
        PHONE,
        PHONE_RAW.replace(" ", ""),
        EMAIL,
        MEMBER,
        REFUSED_MEMBER,
        ORDER_ID,
        NAME,
    ]


def ops_dump(api) -> dict[str, list[str]]:
    out = {}
    with api.runtime.engine.connect() as conn:
        for name, table in metadata.tables.items():
            out[name] = [
                json.dumps(dict(r._mapping), default=str, ensure_ascii=False) for r in conn.execute(select(table))
            ]
    return out


def duck_dump(api) -> dict[str, list[str]]:
    tables = [
        r[0] for r in api.duck("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'")
    ]
    assert {"events", "orders", "person_aliases"} <= set(tables)
    return {
        t: [json.dumps(row, default=str, ensure_ascii=False) for row in api.duck(f"SELECT * FROM {t}")] for t in tables
    }


def leaks(dump: dict[str, list[str]], needles: list[str]) -> list[tuple[str, str, str]]:
    return [
        (table, needle, row[:200])
        for table, rows in dump.items()
        for row in rows
        for needle in needles
        if needle in row
    ]


def test_export_returns_identities_traits_events_and_orders(api) -> None:
    msgs = [
        track("page_viewed", anonymousId=ANON, properties={"page": "/home"}, timestamp=at(0)),
        identify(
            anonymousId=ANON,
            userId=USER,
            identities={"phone": PHONE_RAW, "email": EMAIL},
            traits={"name": NAME, "city": "上海"},
            timestamp=at(1),
        ),
        track("clicked", userId=USER, properties={"button": "buy"}, timestamp=at(2)),
    ]
    other = track("clicked", userId="keeper-1", timestamp=at(3))
    api.batch([*msgs, other])
    api.orders(
        [
            order(ORDER_ID, userId=USER, amount_fen=8_800, paid_at=at(6), updated_at=at(6)),
            order("O-keep-1", userId="keeper-1", amount_fen=100, paid_at=at(8), updated_at=at(8)),
        ]
    )
    api.orders(
        [
            order(
                ORDER_ID,
                userId=USER,
                status="partially_refunded",
                amount_fen=8_800,
                refund_fen=800,
                paid_at=at(6),
                updated_at=at(7),
            )
        ]
    )
    pid = api.person_id(f"user_id:{USER}")

    r = api.client.get(f"/v1/persons/phone:{PHONE}/export", headers=ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()
    profile = data["profile"]
    assert profile["id"] == pid
    assert {(i["type"], i["value"]) for i in profile["identities"]} == {
        ("anonymous_id", ANON),
        ("user_id", USER),
        ("phone", PHONE),
        ("email", EMAIL),
    }
    assert profile["traits"] == {"name": NAME, "city": "上海"}
    assert profile["total_spend_fen"] == 8_800 - 800
    events = {e["event_id"]: e for e in data["events"]}
    assert {m["messageId"] for m in msgs} <= set(events)
    assert other["messageId"] not in events
    assert events[msgs[2]["messageId"]]["properties"] == {"button": "buy"}
    assert {"$trait_changed", "order_paid", "order_refunded"} <= {e["name"] for e in data["events"]}
    assert {e["person_id"] for e in data["events"]} == {pid}
    assert [(o["order_id"], o["version"], o["refund_fen"]) for o in data["orders"]] == [
        (ORDER_ID, 1, 0),
        (ORDER_ID, 2, 800),
    ]
    assert api.client.get(f"/v1/persons/phone:{PHONE}/export", headers=WRITE).status_code == 403


# Regression test for a bug this suite found: export_person builds rows with dict(row._mapping), whose keys are
# SQLAlchemy quoted_name (a str subclass) that orjson refuses ('Dict key must be str'), so the export of any
# person with an identity_merges row is a 500 (src/siyu/profiles/service.py export_person)
def test_export_of_a_merged_person_includes_its_merges(api) -> None:
    seeded = seed(api)
    r = api.client.get(f"/v1/persons/phone:{PHONE}/export", headers=ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["profile"]["merged_from"] == [seeded["anon_pid"]]
    own = {m["messageId"] for m in seeded["messages"] if m.get("userId") != "keeper-1"}
    assert own <= {e["event_id"] for e in data["events"]}
    assert {"$identities_merged", "$trait_changed"} <= {e["name"] for e in data["events"]}
    assert {m["status"] for m in data["identity_merges"]} == {"applied", "refused"}


@pytest.mark.parametrize("bundle_above", [None, 0], ids=["single-changes", "every-change-in-a-bundle"])
def test_delete_erases_the_person_from_both_stores(api, monkeypatch, bundle_above: int | None) -> None:
    if bundle_above is not None:
        monkeypatch.setattr(feed, "BUNDLE_ABOVE", bundle_above)
    seeded = seed(api)
    needles = secrets_of(seeded)
    keeper_before = api.person("user_id:keeper-1")
    keeper_events = api.duck("SELECT count(*) FROM events WHERE person_id = ?", [seeded["keeper"]])[0][0]
    # the check below is not vacuous: before erasure every needle is somewhere
    found = {n for _, n, _ in leaks({**ops_dump(api), **duck_dump(api)}, needles)}
    assert found == set(needles)

    assert api.client.delete(f"/v1/persons/user_id:{USER}", headers=WRITE).status_code == 403
    r = api.client.delete(f"/v1/persons/user_id:{USER}", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["erased"] is True
    assert r.json()["counts"]["persons"] == 2  # the survivor and the person merged into it

    assert leaks(ops_dump(api), needles) == []
    assert leaks(duck_dump(api), needles) == []
    erasures = api.ops_rows("erasures")
    assert len(erasures) == 1
    assert not [n for n in needles if n in json.dumps(erasures[0], default=str, ensure_ascii=False)]

    for ref in (seeded["pid"], seeded["anon_pid"], f"user_id:{USER}", f"phone:{PHONE}", f"anonymous_id:{ANON}"):
        assert api.get_person(ref).status_code == 404, ref
    assert api.client.get(f"/v1/persons/{seeded['pid']}/export", headers=ADMIN).status_code == 404
    assert api.client.delete(f"/v1/persons/{seeded['pid']}", headers=ADMIN).status_code == 404

    # the bystander is untouched
    keeper_after = api.person("user_id:keeper-1")
    for key in ("id", "identities", "traits", "order_count", "total_spend_fen"):
        assert keeper_after[key] == keeper_before[key], key
    assert api.duck("SELECT count(*) FROM events WHERE person_id = ?", [seeded["keeper"]])[0][0] == keeper_events
    assert api.stats()["persons"] == 1


def test_a_pending_bundle_does_not_bring_an_erased_person_back(api) -> None:
    """A crash left a bundle unapplied; the erasure takes the person's changes out of it, and
    applying it afterwards writes only the others'."""
    seeded = seed(api)
    secret = "erased-secret-7f3a"
    at_ = datetime(2026, 3, 1, tzinfo=UTC)
    with api.runtime.engine.begin() as conn:
        feed.insert_changes(
            conn,
            [
                ("trait_changed", seeded["pid"], "pending-1", at_, {"key": "note", "old": None, "new": secret}),
                ("trait_changed", seeded["keeper"], "pending-2", at_, {"key": "note", "old": None, "new": "kept"}),
            ],
            bundle_above=0,
        )
    r = api.client.delete(f"/v1/persons/{seeded['pid']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    with api.runtime.events.transaction() as con:
        feed.apply_changes(api.runtime.engine, api.runtime.events, con)
    assert leaks({**ops_dump(api), **duck_dump(api)}, [secret]) == []
    assert api.duck("SELECT person_id FROM events WHERE event_id LIKE 'pending-%'") == [(seeded["keeper"],)]


def test_erased_person_can_come_back_as_a_new_person(api) -> None:
    seeded = seed(api)
    api.client.delete(f"/v1/persons/{seeded['pid']}", headers=ADMIN)
    again = track("page_viewed", userId=USER)
    assert api.batch([again])["new_persons"] == 1
    assert api.person_id(f"user_id:{USER}") != seeded["pid"]


# Regression test for a bug this suite found (PIPL): erase_person deletes only rows whose person_id is the
# erased person; another person's event whose `identities` JSON names the erased person's identity (e.g. after a
# refused merge) keeps it (src/siyu/profiles/service.py erase_person)
def test_erasure_leaves_no_identity_value_in_other_persons_events(api) -> None:
    api.batch(
        [
            identify(userId="UA-leak", identities={"member_id": "M-A"}, timestamp=at(0)),
            identify(identities={"member_id": "M-B"}, timestamp=at(1)),
        ]
    )
    # member_id M-B outranks user_id: the event goes to B; merging A in would give B two member_ids
    assert (
        api.batch([track("clicked", userId="UA-leak", identities={"member_id": "M-B"}, timestamp=at(2))])[
            "refused_merges"
        ]
        == 1
    )
    assert api.client.delete("/v1/persons/user_id:UA-leak", headers=ADMIN).status_code == 200
    assert api.person("member_id:M-B")  # B remains
    assert leaks(duck_dump(api), ["UA-leak", "M-A"]) == []
    assert leaks(ops_dump(api), ["UA-leak", "M-A"]) == []


# Regression test for a bug this suite found (PIPL): DELETE + CHECKPOINT in DuckDB does not overwrite the
# deleted rows' blocks, so the erased person's phone / e-mail / user id stay readable in events.duckdb
# (src/siyu/profiles/service.py erase_person)
def test_erased_values_are_gone_from_the_event_store_file(api, settings) -> None:
    seed(api)
    assert api.client.delete(f"/v1/persons/user_id:{USER}", headers=ADMIN).status_code == 200
    files = [p for p in settings.home.iterdir() if p.name.startswith(settings.resolved_events_path.name)]
    assert files
    found = [(p.name, n) for p in files for n in (PHONE, EMAIL, USER) if n.encode() in p.read_bytes()]
    assert found == []
