"""The event store: the dedupe index, transactions, aliases, and the change feed's watermark."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

import siyu.store.feed as feed
from helpers import identify, track
from siyu.store.events import EVENTS_ARROW, EventStore, SeenIndex
from siyu.store.feed import BUNDLE, VOID, WATERMARK, apply_changes, insert_changes, void_changes_of
from siyu.store.ops.schema import changes

U64 = np.uint64
MAX_U64 = 2**64 - 1


# -- SeenIndex ----------------------------------------------------------------------------------
def test_empty_index_contains_nothing() -> None:
    idx = SeenIndex(np.array([], dtype=U64))
    assert idx.contains(np.array([0, 1, MAX_U64], dtype=U64)).tolist() == [False, False, False]


def test_index_built_from_hashes_finds_exactly_those() -> None:
    stored = [5, 1, 9, 2**63, MAX_U64]
    idx = SeenIndex(np.array(stored, dtype=U64))
    probe = [1, 5, 9, 2, 10, 0, 2**63, 2**63 - 1, MAX_U64, MAX_U64 - 1]
    assert idx.contains(np.array(probe, dtype=U64)).tolist() == [p in stored for p in probe]


def test_add_merges_new_hashes_with_the_sorted_ones() -> None:
    idx = SeenIndex(np.array([10, 20], dtype=U64))
    idx.add(np.array([15, 30], dtype=U64))
    idx.add(np.array([30, 40, 10], dtype=U64))  # overlaps both the sorted part and the recent part
    known = {10, 20, 15, 30, 40}
    probe = list(range(0, 45))
    assert idx.contains(np.array(probe, dtype=U64)).tolist() == [p in known for p in probe]


def test_compaction_keeps_every_hash() -> None:
    idx = SeenIndex(np.array([3, 1], dtype=U64))
    added = np.arange(1, 500_002, dtype=U64) * U64(7919)  # more than the 500k recent-set threshold
    idx.add(added)
    assert len(idx._recent) == 0  # the compaction path ran
    idx.add(np.array([2], dtype=U64))  # and the recent set works again after it
    rng = np.random.default_rng(7)
    sample = np.concatenate(
        [
            rng.choice(added, 1000),
            np.array([1, 2, 3, 4, 7918, 7920], dtype=U64),
            rng.integers(0, 2**62, 1000, dtype=np.int64).astype(U64),
        ]
    )
    known = set(added.tolist()) | {1, 2, 3}
    assert idx.contains(sample).tolist() == [int(h) in known for h in sample]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, MAX_U64), max_size=30),
    st.lists(st.lists(st.integers(0, MAX_U64), max_size=10), max_size=5),
    st.lists(st.integers(0, MAX_U64), max_size=30),
)
def test_property_index_agrees_with_a_set(initial: list[int], adds: list[list[int]], probe: list[int]) -> None:
    idx = SeenIndex(np.array(initial, dtype=U64))
    known = set(initial)
    for batch in adds:
        idx.add(np.array(batch, dtype=U64))
        known.update(batch)
    everything = probe + initial + [h for b in adds for h in b]
    assert idx.contains(np.array(everything, dtype=U64)).tolist() == [h in known for h in everything]


# -- EventStore ---------------------------------------------------------------------------------
def event_table(ids: list[str], person: str = "p1", name: str = "clicked") -> pa.Table:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "person_id": [person] * n,
            "identity_type": ["user_id"] * n,
            "identity_value": ["u"] * n,
            "identities": ['[["user_id","u"]]'] * n,
            "message_type": ["track"] * n,
            "name": [name] * n,
            "ts": [now + timedelta(seconds=i) for i in range(n)],
            "properties": ["{}"] * n,
            "source": ["test"] * n,
            "received_at": [now] * n,
        },
        schema=EVENTS_ARROW,
    )


@pytest.fixture
def store(tmp_path: Path):
    s = EventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


def test_existing_event_ids_after_append(store: EventStore) -> None:
    assert store.existing_event_ids(["a", "b"]) == set()  # builds the (empty) index
    with store.transaction() as con:
        store.append_events(con, event_table(["a", "b", "c"]))
    assert store.existing_event_ids(["a", "c", "x", "b", "y"]) == {"a", "b", "c"}
    assert store.counts()["events"] == 3


def _with_identities(table: pa.Table, sets: int) -> pa.Table:
    """``table`` with identity columns cycling through ``sets`` identity sets, a row in 7 without."""
    rows: list[tuple[str | None, str | None, str | None]] = []  # (type, value, identities)
    for i in range(table.num_rows):
        k = i % sets
        keys = [["member_id", f"M{k}"], ["phone", f"+86138{k:08d}"]][: 1 + k % 2]
        rows.append((None, None, None) if i % 7 == 3 else (keys[0][0], keys[0][1], json.dumps(keys)))
    for name, column in zip(("identity_type", "identity_value", "identities"), zip(*rows, strict=True), strict=True):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(column, pa.string()))
    return table


def test_large_and_small_appends_store_the_same_identity_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large append finds its distinct identity sets in DuckDB, a small one in Python: the same
    sets, ids and original identities either way, each stored once (also when appended again)."""
    import siyu.store.events as events_module

    n = events_module._SQL_SETS_ROWS + 500
    first = _with_identities(event_table([f"e{i}" for i in range(n)]), 3_000)
    again = _with_identities(event_table([f"f{i}" for i in range(n)]), 3_500)  # the first's sets and new ones
    stored = []
    for threshold in (events_module._SQL_SETS_ROWS, n + 1):  # the SQL path, then the Python path
        monkeypatch.setattr(events_module, "_SQL_SETS_ROWS", threshold)
        s = EventStore(tmp_path / f"events-{threshold}.duckdb")
        try:
            for table in (first, again):
                with s.transaction() as con:
                    s.append_events(con, table)
            stored.append(
                (
                    s.con.execute("SELECT * FROM identity_sets ORDER BY set_id").fetchall(),
                    s.con.execute("SELECT event_id, identity_set FROM events ORDER BY event_id").fetchall(),
                )
            )
        finally:
            s.close()
    sets, events = stored[0]
    assert stored[0] == stored[1]
    expected = {t for table in (first, again) for t in table.column("identities").to_pylist() if t is not None}
    assert sorted(row[3] for row in sets) == sorted(expected)  # each distinct set once
    assert len(expected) > 3_000
    assert sum(1 for _, set_id in events if set_id is None) == sum(1 for i in range(n) if i % 7 == 3) * 2


def test_rolled_back_events_are_neither_stored_nor_seen(store: EventStore) -> None:
    store.existing_event_ids(["warm-up"])
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as con:
        store.append_events(con, event_table(["r1", "r2"]))
        raise RuntimeError("boom")
    assert store.existing_event_ids(["r1", "r2"]) == set()
    assert store.counts()["events"] == 0


def test_index_is_rebuilt_from_the_table_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    first = EventStore(path)
    with first.transaction() as con:
        first.append_events(con, event_table(["keep-1", "keep-2"]))
    first.close()
    again = EventStore(path)
    try:
        assert again.existing_event_ids(["keep-1", "keep-2", "new"]) == {"keep-1", "keep-2"}
    finally:
        again.close()


def test_index_hits_are_confirmed_against_the_table(store: EventStore) -> None:
    store.existing_event_ids(["x"])
    store.note_stored(["ghost"])  # the index now believes in an id the table does not have
    assert store.existing_event_ids(["ghost"]) == set()


def test_aliases_stay_flat_and_resolve_events(store: EventStore) -> None:
    with store.transaction() as con:
        store.append_events(con, event_table(["e1"], person="a"))
        store.append_events(con, event_table(["e2"], person="b"))
        store.append_events(con, event_table(["e3"], person="c"))
        store.add_aliases(con, [("a", "b")])
        store.add_aliases(con, [("b", "c")])
    cur = store.cursor()
    assert set(cur.execute("SELECT alias_id, person_id FROM person_aliases").fetchall()) == {("a", "c"), ("b", "c")}
    assert set(cur.execute("SELECT event_id, person_id FROM events_resolved").fetchall()) == {
        ("e1", "c"),
        ("e2", "c"),
        ("e3", "c"),
    }
    assert sorted(store.aliases_of("c")) == ["a", "b", "c"]


# -- the change feed (needs the ops store: both SQLite and PostgreSQL) ----------------------------
def add_change(runtime, kind: str, event_id: str, payload: dict, person: str = "p1") -> None:
    with runtime.engine.begin() as conn:
        conn.execute(
            insert(changes).values(
                kind=kind,
                person_id=person,
                event_id=event_id,
                occurred_at=datetime(2024, 5, 1, tzinfo=UTC),
                payload=payload,
            )
        )


def change_rows(runtime) -> list[tuple]:
    return (
        runtime.events.cursor()
        .execute(
            "SELECT event_id, person_id, name, properties FROM events WHERE message_type = 'change' ORDER BY event_id"
        )
        .fetchall()
    )


def apply(runtime, **kw) -> int:
    with runtime.events.transaction() as con:
        return apply_changes(runtime.engine, runtime.events, con, **kw)


def test_apply_changes_twice_applies_once(runtime) -> None:
    add_change(runtime, "trait_changed", "ch-1", {"key": "plan", "old": None, "new": "gold"})
    add_change(runtime, "identities_merged", "ch-2", {"from_person_id": "p0", "into_person_id": "p1"})
    assert apply(runtime) == 2
    assert apply(runtime) == 0
    rows = change_rows(runtime)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("ch-1", "p1", "$trait_changed"),
        ("ch-2", "p1", "$identities_merged"),
    ]
    assert json.loads(rows[0][3]) == {"key": "plan", "old": None, "new": "gold"}
    assert runtime.events.cursor().execute("SELECT alias_id, person_id FROM person_aliases").fetchall() == [
        ("p0", "p1")
    ]
    with runtime.engine.connect() as conn:
        last_seq = max(r[0] for r in conn.execute(select(changes.c.seq)))
    assert runtime.events.get_meta(WATERMARK) == str(last_seq)
    # a later change is picked up, and only it
    add_change(runtime, "trait_changed", "ch-3", {"key": "plan", "old": "gold", "new": "silver"})
    assert apply(runtime) == 1
    assert [r[0] for r in change_rows(runtime)] == ["ch-1", "ch-2", "ch-3"]


def test_a_rolled_back_apply_is_repeated_by_the_next_call(runtime) -> None:
    add_change(runtime, "trait_changed", "ch-1", {"key": "k", "old": None, "new": 1})
    with pytest.raises(RuntimeError), runtime.events.transaction() as con:
        assert apply_changes(runtime.engine, runtime.events, con) == 1
        raise RuntimeError("crash between the two commits")
    assert change_rows(runtime) == []
    assert apply(runtime) == 1
    assert [r[0] for r in change_rows(runtime)] == ["ch-1"]


def test_apply_changes_pages_through_a_long_feed(runtime) -> None:
    ids = [f"ch-{i:02d}" for i in range(7)]
    for i, event_id in enumerate(ids):
        add_change(runtime, "trait_changed", event_id, {"key": "n", "old": i - 1, "new": i})
    assert apply(runtime, limit=3) == len(ids)
    assert apply(runtime, limit=3) == 0
    assert [r[0] for r in change_rows(runtime)] == ids


def test_ingest_leaves_no_change_unapplied(api) -> None:
    api.batch([identify(anonymousId="a-1", traits={"plan": "gold"}), track("x", userId="U-1")])
    api.batch([identify(anonymousId="a-1", userId="U-1")])
    feed = api.ops_rows("changes")
    assert {"trait_changed", "identities_merged"} <= {r["kind"] for r in feed}
    assert apply(api.runtime) == 0
    # every change in the ops feed is in the event store, exactly once
    assert sorted(r[0] for r in change_rows(api.runtime)) == sorted(r["event_id"] for r in feed)


def _trait_change(person: str, n: int, value: object) -> feed.Change:
    at = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=n)
    return ("trait_changed", person, f"ch-{n:03d}", at, {"key": "plan", "old": None, "new": value})


def _feed_kinds(runtime) -> list[str]:
    with runtime.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(changes.c.kind).order_by(changes.c.seq))]


def _trait_state(runtime) -> list[tuple]:
    return runtime.events.cursor().execute("SELECT person_id, key, value FROM trait_state ORDER BY 1").fetchall()


@pytest.mark.parametrize(("bundle_above", "bundles"), [(0, 3), (2, 1), (1000, 0)])
def test_a_bundle_applies_as_its_changes_would_in_feed_order_and_is_pruned(
    runtime, bundle_above: int, bundles: int
) -> None:
    """Singles, then a bundle, then singles: the events are the changes' own, and the last change
    per person and key wins in feed order, wherever the bundle stands."""
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("p1", 0, "bronze")], bundle_above=bundle_above)
        insert_changes(
            conn,
            [_trait_change("p1", 1, "silver"), _trait_change("p2", 2, "gold"), _trait_change("p3", 3, 7)],
            bundle_above=bundle_above,
        )
        insert_changes(conn, [_trait_change("p2", 4, "platinum")], bundle_above=bundle_above)
    assert _feed_kinds(runtime).count(BUNDLE) == bundles
    assert apply(runtime) == 5
    rows = change_rows(runtime)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"ch-{n:03d}", p, "$trait_changed") for n, p in enumerate(["p1", "p1", "p2", "p3", "p2"])
    ]
    assert json.loads(rows[3][3]) == {"key": "plan", "old": None, "new": 7}
    ts = runtime.events.cursor().execute("SELECT ts FROM events WHERE event_id = 'ch-002'").fetchone()[0]
    assert ts == datetime(2024, 5, 1, 0, 2, tzinfo=UTC)
    assert _trait_state(runtime) == [("p1", "plan", '"silver"'), ("p2", "plan", '"platinum"'), ("p3", "plan", "7")]
    # Applied and committed: the bundle rows are void (no payload left), the singles stay.
    expected = {3: [VOID] * 3, 1: ["trait_changed", VOID, "trait_changed"], 0: ["trait_changed"] * 5}
    assert _feed_kinds(runtime) == expected[bundles]
    assert apply(runtime) == 0


def test_a_large_call_is_split_into_bundles_applied_in_order(runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """No bundle holds more than BUNDLE_MOST changes (a bundle is one ops-store value); split,
    they apply as one would, in feed order."""
    monkeypatch.setattr(feed, "BUNDLE_MOST", 2)
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("p1", n, n) for n in range(5)], bundle_above=1)
    assert _feed_kinds(runtime) == [BUNDLE] * 3
    assert apply(runtime) == 5
    assert [r[0] for r in change_rows(runtime)] == [f"ch-{n:03d}" for n in range(5)]
    assert _trait_state(runtime) == [("p1", "plan", "4")]
    assert _feed_kinds(runtime) == [VOID] * 3


def test_a_bundle_whose_apply_rolls_back_stays_and_is_applied_by_the_next_call(runtime) -> None:
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("p1", n, n) for n in range(4)], bundle_above=1)
    with pytest.raises(RuntimeError), runtime.events.transaction() as con:
        assert apply_changes(runtime.engine, runtime.events, con) == 4
        raise RuntimeError("crash between the two commits")
    assert change_rows(runtime) == [] and _feed_kinds(runtime) == [BUNDLE]
    assert apply(runtime) == 4
    assert [r[0] for r in change_rows(runtime)] == [f"ch-{n:03d}" for n in range(4)]
    assert _feed_kinds(runtime) == [VOID]


def test_a_bundle_keeps_64_bit_integers_exact_and_takes_what_orjson_refuses(runtime) -> None:
    """Bundles are written with orjson; the extremes the validators let through stay exact, and a
    value orjson cannot encode (an integer past 64 bits) falls back to the JSON type's form."""
    low, high = -(2**63), 2**63 - 1
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("p1", 0, low), _trait_change("p2", 1, high)], bundle_above=1)
        insert_changes(conn, [_trait_change("p3", 2, 2**70), _trait_change("p3", 3, "x")], bundle_above=1)
    assert _feed_kinds(runtime) == [BUNDLE, BUNDLE]
    assert apply(runtime) == 4
    assert [json.loads(r[3])["new"] for r in change_rows(runtime)[:2]] == [low, high]
    assert _trait_state(runtime) == [("p1", "plan", str(low)), ("p2", "plan", str(high)), ("p3", "plan", '"x"')]


def test_scrubbing_a_pending_bundle_drops_only_that_persons_changes(runtime) -> None:
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change(p, n, n) for n, p in enumerate("abab")], bundle_above=1)
        insert_changes(conn, [_trait_change("a", 10 + n, n) for n in range(3)], bundle_above=1)
    with runtime.engine.begin() as conn:
        assert void_changes_of(conn, ["a"], applied_upto=0) == 5
        assert void_changes_of(conn, ["a"], applied_upto=0) == 0
    assert _feed_kinds(runtime) == [BUNDLE, VOID]  # the second held only a's changes
    assert apply(runtime) == 2
    assert [(r[0], r[1]) for r in change_rows(runtime)] == [("ch-001", "b"), ("ch-003", "b")]


def _list_bundle(rows: list[feed.Change], texts: bool) -> dict[str, list]:
    """A bundle as earlier versions wrote it: JSON lists, payloads as objects or as their texts."""
    body: dict[str, list] = {
        "kind": [r[0] for r in rows],
        "person_id": [r[1] for r in rows],
        "event_id": [r[2] for r in rows],
        "at_us": [int(r[3].timestamp() * 1_000_000) for r in rows],
    }
    if texts:
        body["payload_text"] = [json.dumps(r[4], separators=(",", ":")) for r in rows]
    else:
        body["payload"] = [r[4] for r in rows]
    return body


@pytest.mark.parametrize("texts", [False, True])
def test_bundles_of_earlier_versions_apply_and_scrub_as_arrow_ones(runtime, texts: bool) -> None:
    """Bundles are written as Arrow now; a pending one in the JSON-list form of earlier versions
    (a crash before it was applied) still applies the same, and erasure scrubs it the same."""
    old = [_trait_change(p, n, f"v{n}") for n, p in enumerate("abcab")]
    with runtime.engine.begin() as conn:
        at = old[0][3]
        conn.execute(
            insert(changes),
            [{"kind": BUNDLE, "event_id": "old-bundle", "occurred_at": at, "payload": _list_bundle(old, texts)}],
        )
        insert_changes(conn, [_trait_change("a", 10 + n, n) for n in range(3)], bundle_above=1)  # Arrow
        assert void_changes_of(conn, ["c"], applied_upto=0) == 1
    assert apply(runtime) == 7
    assert [(r[0], r[1]) for r in change_rows(runtime)][:4] == [
        ("ch-000", "a"),
        ("ch-001", "b"),
        ("ch-003", "a"),
        ("ch-004", "b"),
    ]
    assert json.loads(change_rows(runtime)[1][3]) == {"key": "plan", "old": None, "new": "v1"}
    assert _trait_state(runtime) == [("a", "plan", "2"), ("b", "plan", '"v4"')]
    assert _feed_kinds(runtime) == [VOID, VOID]


def test_voided_rows_keep_their_seq_so_later_changes_are_applied(runtime) -> None:
    """SQLite gives a new row max(rowid) + 1: had the applied last row been deleted, the next
    change would reuse its seq, at or below the watermark, and never be applied."""
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("p1", n, n) for n in range(3)], bundle_above=1)
    assert apply(runtime) == 3
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("p1", 9, 9)])
    assert apply(runtime) == 1
    assert _trait_state(runtime) == [("p1", "plan", "9")]
    with runtime.engine.connect() as conn:
        body = conn.execute(select(changes.c.payload).where(changes.c.kind == VOID)).scalar_one()
    assert body == {}


def test_an_erasure_voids_applied_bundles_left_whole_and_keeps_pending_ones(runtime) -> None:
    """Bundles at or below the committed watermark are applied ones whose voiding did not happen
    (a crash after the commit): an erasure voids them whoever they hold."""
    with runtime.engine.begin() as conn:
        insert_changes(conn, [_trait_change("b", n, n) for n in range(2)], bundle_above=1)
        insert_changes(conn, [_trait_change("b", 5 + n, n) for n in range(2)], bundle_above=1)
    with runtime.engine.connect() as conn:
        first = conn.execute(select(changes.c.seq).order_by(changes.c.seq)).scalars().first()
    with runtime.engine.begin() as conn:
        assert void_changes_of(conn, ["a"], applied_upto=first) == 0
    assert _feed_kinds(runtime) == [VOID, BUNDLE]


def test_a_large_writer_call_is_one_bundle_by_default(runtime) -> None:
    many = [_trait_change(f"p{n}", n, n) for n in range(feed.BUNDLE_ABOVE + 1)]
    with runtime.engine.begin() as conn:
        insert_changes(conn, many[:-1])
        insert_changes(conn, many)
    kinds = _feed_kinds(runtime)
    assert kinds.count(BUNDLE) == 1 and len(kinds) == feed.BUNDLE_ABOVE + 1


# -- identity sets --------------------------------------------------------------------------------
def sets_table(ids: list[str], identities: list[list[list[str]] | None]) -> pa.Table:
    """Events carrying the given identity lists (None: a state change without identities)."""
    table = event_table(ids)
    texts = [None if keys is None else json.dumps(keys, separators=(",", ":")) for keys in identities]
    return (
        table.set_column(2, "identity_type", pa.array([k[0][0] if k else None for k in identities], pa.string()))
        .set_column(3, "identity_value", pa.array([k[0][1] if k else None for k in identities], pa.string()))
        .set_column(4, "identities", pa.array(texts, pa.string()))
    )


def stored_sets(store: EventStore) -> list[tuple[str, str, str]]:
    return sorted(
        store.cursor().execute("SELECT identity_type, identity_value, identities FROM identity_sets").fetchall()
    )


WITH_IDENTITIES = (
    "SELECT event_id, identity_type, identity_value, identities FROM events_with_identities ORDER BY event_id"
)
A = [["member_id", "M1"], ["anonymous_id", "a1"]]
B = [["anonymous_id", "a2"]]


def test_each_identity_set_is_stored_once_and_events_read_back_with_it(store: EventStore) -> None:
    with store.transaction() as con:
        store.append_events(con, sets_table(["e1", "e2", "e3"], [A, A, B]))
        store.append_events(con, sets_table(["e4"], [A]))  # a second append in the same transaction
    with store.transaction() as con:
        store.append_events(con, sets_table(["e5", "e6"], [B, None]))  # a later transaction
    assert stored_sets(store) == sorted(
        [("member_id", "M1", json.dumps(A, separators=(",", ":"))), ("anonymous_id", "a2", '[["anonymous_id","a2"]]')]
    )
    rows = store.cursor().execute(WITH_IDENTITIES).fetchall()
    a, b = json.dumps(A, separators=(",", ":")), '[["anonymous_id","a2"]]'
    assert rows == [
        ("e1", "member_id", "M1", a),
        ("e2", "member_id", "M1", a),
        ("e3", "anonymous_id", "a2", b),
        ("e4", "member_id", "M1", a),
        ("e5", "anonymous_id", "a2", b),
        ("e6", None, None, None),
    ]


def test_sets_of_a_rolled_back_transaction_are_written_again_later(store: EventStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as con:
        store.append_events(con, sets_table(["r1"], [A]))
        raise RuntimeError("abort")
    assert stored_sets(store) == []
    with store.transaction() as con:
        store.append_events(con, sets_table(["r2"], [A]))
    assert [s[1] for s in stored_sets(store)] == ["M1"]
    assert store.cursor().execute("SELECT identities FROM events_with_identities").fetchall() == [
        (json.dumps(A, separators=(",", ":")),)
    ]


def test_the_set_index_is_exact_even_when_two_ids_share_their_high_half() -> None:
    from siyu.store.events import SetIndex

    high = np.array([7, 7, 7, 1, MAX_U64], dtype=U64)
    low = np.array([3, 1, 2, 9, 0], dtype=U64)
    index = SetIndex(high, low)
    probe_high = np.array([7, 7, 7, 7, 1, 1, MAX_U64, 0], dtype=U64)
    probe_low = np.array([1, 2, 3, 4, 9, 8, 0, 0], dtype=U64)
    assert index.missing(probe_high, probe_low).tolist() == [False, False, False, True, False, True, False, True]
    index.add(np.array([7, 0], dtype=U64), np.array([4, 0], dtype=U64))
    assert index.missing(probe_high, probe_low).tolist() == [False, False, False, False, False, True, False, False]


def test_a_store_of_schema_1_is_migrated_on_open(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("""CREATE TABLE events (event_id VARCHAR NOT NULL, person_id VARCHAR NOT NULL, identity_type VARCHAR,
        identity_value VARCHAR, identities VARCHAR, message_type VARCHAR NOT NULL, name VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL, properties VARCHAR, source VARCHAR, received_at TIMESTAMPTZ NOT NULL)""")
    old.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    old.execute("INSERT INTO store_meta VALUES ('schema_version', '1')")
    a = json.dumps(A, separators=(",", ":"))
    old.execute(
        f"""INSERT INTO events VALUES
        ('e1', 'p1', 'member_id', 'M1', '{a}', 'track', 'x', TIMESTAMPTZ '2024-01-01 00:00:00+00', '{{}}', 't',
         TIMESTAMPTZ '2024-01-01 00:00:00+00'),
        ('e2', 'p1', 'member_id', 'M1', '{a}', 'track', 'y', TIMESTAMPTZ '2024-01-02 00:00:00+00', '{{}}', 't',
         TIMESTAMPTZ '2024-01-01 00:00:00+00'),
        ('c1', 'p1', NULL, NULL, NULL, 'change', '$trait_changed', TIMESTAMPTZ '2024-01-03 00:00:00+00', '{{}}',
         'siyu', TIMESTAMPTZ '2024-01-01 00:00:00+00')"""
    )
    old.close()
    store = EventStore(path)
    try:
        rows = store.cursor().execute(WITH_IDENTITIES).fetchall()
        assert rows == [("c1", None, None, None), ("e1", "member_id", "M1", a), ("e2", "member_id", "M1", a)]
        assert stored_sets(store) == [("member_id", "M1", a)]
        assert store.get_meta("schema_version") == "2"
        columns = [r[0] for r in store.cursor().execute("DESCRIBE events").fetchall()]
        assert "identities" not in columns and "identity_set" in columns
        with store.transaction() as con:  # and a new event with the same identities names the same set
            store.append_events(con, sets_table(["e3"], [A]))
        assert stored_sets(store) == [("member_id", "M1", a)]
    finally:
        store.close()


def test_the_set_index_takes_many_ids_at_once_and_keeps_the_recent_ones() -> None:
    from siyu.store.events import SetIndex

    index = SetIndex(np.array([5], dtype=U64), np.array([5], dtype=U64))
    index.add(np.array([1, 2], dtype=U64), np.array([1, 2], dtype=U64))  # recent
    rng = np.random.default_rng(3)
    many_high = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(U64)
    many_low = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(U64)
    index.add(many_high, many_low)  # straight into the sorted arrays
    probe_high = np.concatenate([many_high[:50], np.array([1, 2, 5, 3], dtype=U64)])
    probe_low = np.concatenate([many_low[:50], np.array([1, 2, 5, 3], dtype=U64)])
    assert index.missing(probe_high, probe_low).tolist() == [False] * 53 + [True]


def test_a_large_query_of_the_set_index_sees_the_recent_ids_too() -> None:
    from siyu.store.events import SetIndex

    index = SetIndex(np.array([5], dtype=U64), np.array([5], dtype=U64))
    index.add(np.array([1, 2], dtype=U64), np.array([1, 2], dtype=U64))  # recent
    probe_high = np.concatenate([np.arange(10, 20_010, dtype=U64), np.array([1, 2, 5, 3], dtype=U64)])
    probe_low = probe_high.copy()
    assert index.missing(probe_high, probe_low).tolist() == [True] * 20_000 + [False, False, False, True]
    assert index.missing(np.array([1], dtype=U64), np.array([1], dtype=U64)).tolist() == [False]
