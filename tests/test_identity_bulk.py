"""Bulk identity writes: one large write (indexes rebuilt after the load) and many small ones
(indexes kept) leave identical stores, on SQLite and PostgreSQL; the WITHOUT ROWID migration; the
new-person fast path's guards; batched person ids."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, func, inspect, select, text

import siyu.store.ops.upsert as upsert
from siyu.identity.graph import IdentityGraph, IdentityRules
from siyu.identity.resolve import Sighting, resolve_sightings
from siyu.ids import _NAMESPACE, IdSource, derived_id, new_ids
from siyu.store.ops.engine import alembic_config, make_engine, upgrade
from siyu.store.ops.schema import changes, identities, identity_merges, persons

PRIORITY = ("member_id", "phone", "anonymous_id")
RULES = IdentityRules(PRIORITY, {"member_id": 1, "phone": 2, "anonymous_id": 5})
T0 = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def sightings(n_persons: int, seed: int) -> list[Sighting]:
    """Anonymous visits, then logins, late merges, merge chains and limit conflicts, in time order."""
    rng = random.Random(seed)
    events: list[tuple[int, list[tuple[str, str]]]] = []
    for p in range(n_persons):
        member, phone, anon = ("member_id", f"M{p}"), ("phone", f"+8613{p:09d}"), ("anonymous_id", f"A{p}")
        t = sorted(rng.sample(range(100_000), 4))
        events.append((t[0], [anon]))
        kind = p % 10
        if kind == 0:  # arrives split in two, joined later: a merge
            events += [(t[1], [member, phone]), (t[2], [member, anon])]
        elif kind == 1:  # a second member_id on the same person: refused (limit 1)
            events += [(t[1], [member, phone, anon]), (t[2], [("member_id", f"X{p}"), phone])]
        elif kind == 2 and p + 1 < n_persons:  # shares a phone with the next person: merge (chains)
            events += [(t[1], [phone, anon]), (t[3], [("phone", f"+8613{p + 1:09d}"), anon])]
        else:
            events.append((t[1], [member, phone, anon]))
    events.sort(key=lambda e: e[0])
    out = []
    for i, (t, keys) in enumerate(events):
        at = T0 + timedelta(seconds=t)
        out.append(Sighting(RULES.sort(keys), at, at, f"m{i}"))
    return out


def snapshot(conn: Connection) -> dict[str, Any]:
    """What both write strategies must agree on (ids are deterministic: persons are made in order)."""
    survivors = conn.execute(
        select(persons.c.id, persons.c.first_seen, persons.c.last_seen)
        .where(persons.c.merged_into.is_(None))
        .order_by(persons.c.id)
    ).all()
    return {
        "survivors": survivors,
        "merged_into": conn.execute(select(persons.c.id, persons.c.merged_into).order_by(persons.c.id)).all(),
        "identities": conn.execute(select(identities).order_by(identities.c.type, identities.c.value)).all(),
        # a batch logs its applied merges before its refusals: compare the log as a sorted list
        "merges": sorted(
            conn.execute(
                select(
                    identity_merges.c.status,
                    identity_merges.c.from_person_id,
                    identity_merges.c.into_person_id,
                    identity_merges.c.reason,
                    identity_merges.c.message_id,
                    identity_merges.c.identities,
                )
            ).all(),
            key=repr,
        ),
        "feed": conn.execute(
            select(changes.c.kind, changes.c.event_id, changes.c.occurred_at, changes.c.payload).order_by(changes.c.seq)
        ).all(),
    }


def index_names(engine: Engine, table: str) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes(table)}


def wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (changes, identity_merges, identities, persons):
            conn.execute(table.delete())


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Small thresholds so test-sized writes take the bulk path; records each rebuild decision."""
    monkeypatch.setattr(upsert, "BULK_LOAD_MIN_ROWS", 1)
    seen: list[bool] = []
    real = upsert.dominates

    def spy(conn: Connection, table: Any, n_rows: int) -> bool:
        verdict = real(conn, table, n_rows)
        seen.append(verdict)
        return verdict

    monkeypatch.setattr(upsert, "dominates", spy)
    return seen


def run(engine: Engine, batches: list[list[Sighting]]) -> None:
    ids = itertools.count()
    make_id = lambda: f"p{next(ids):06d}"  # noqa: E731
    for batch in batches:
        with engine.begin() as conn:
            resolve_sightings(conn, RULES, batch, trait_strategies={}, now=NOW, make_id=make_id)


def test_one_bulk_write_and_many_small_writes_leave_identical_stores(ops_url: str, rebuilds: list[bool]) -> None:
    engine = make_engine(ops_url)
    upgrade(engine)
    try:
        data = sightings(400, seed=7)
        expected_indexes = {t: index_names(engine, t) for t in ("identities", "persons")}
        assert "ix_identities_person_type" in expected_indexes["identities"]

        run(engine, [data])
        with engine.connect() as conn:
            bulk = snapshot(conn)
        assert {t: index_names(engine, t) for t in expected_indexes} == expected_indexes
        if engine.dialect.name == "sqlite":
            assert rebuilds and all(rebuilds)  # into an empty store: every table was dominated

        wipe(engine)
        rebuilds.clear()
        run(engine, [data[i : i + 25] for i in range(0, len(data), 25)])
        with engine.connect() as conn:
            small = snapshot(conn)
        assert {t: index_names(engine, t) for t in expected_indexes} == expected_indexes
        if engine.dialect.name == "sqlite":
            assert True in rebuilds and False in rebuilds  # the first batches rebuild, later ones do not

        assert len(bulk["survivors"]) < 400 and bulk["merges"] and any(m.status == "refused" for m in bulk["merges"])
        assert bulk == small
    finally:
        engine.dispose()


def test_a_rolled_back_bulk_write_keeps_the_indexes_and_writes_nothing(ops_url: str, rebuilds: list[bool]) -> None:
    engine = make_engine(ops_url)
    upgrade(engine)
    try:
        before = index_names(engine, "identities")
        with pytest.raises(RuntimeError), engine.begin() as conn:
            resolve_sightings(conn, RULES, sightings(50, seed=3), trait_strategies={}, now=NOW)
            raise RuntimeError("abort the import")
        assert index_names(engine, "identities") == before
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(identities)).scalar_one() == 0
    finally:
        engine.dispose()


def test_dominates_counts_at_most_the_batch(ops_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upsert, "BULK_LOAD_MIN_ROWS", 1)
    engine = make_engine(ops_url)
    upgrade(engine)
    try:
        with engine.begin() as conn:
            assert upsert.dominates(conn, identities, 3)  # empty table
            upsert.bulk_insert(
                conn,
                identities,
                ("type", "value", "person_id", "first_seen"),
                [("phone", f"v{i}", "p", T0) for i in range(5)],
            )
            assert not upsert.dominates(conn, identities, 3)  # 5 rows: not doubled by 3 more
            assert upsert.dominates(conn, identities, 6)
        monkeypatch.setattr(upsert, "BULK_LOAD_MIN_ROWS", 100)
        with engine.begin() as conn:
            assert not upsert.dominates(conn, identities, 99)  # small writes never rebuild
    finally:
        engine.dispose()


def test_identities_and_persons_are_without_rowid_tables_on_sqlite_and_the_migration_keeps_rows(tmp_path) -> None:
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO identities VALUES ('phone', '+8613800000000', 'p1', '2025-01-01 00:00:00.000000')"
            )
            conn.exec_driver_sql(
                "INSERT INTO persons (id, created_at, merged_into) VALUES ('p1', '2025-01-01 00:00:00.000000', 'p0')"
            )

        def without_rowid() -> dict[str, bool]:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE name IN ('identities', 'persons')"))
                return {name: "WITHOUT ROWID" in sql for name, sql in rows}

        def contents() -> list[Any]:
            with engine.connect() as conn:
                return [conn.execute(select(t)).all() for t in (identities, persons)]

        before = contents()
        assert without_rowid() == {"identities": False, "persons": False}
        upgrade(engine)
        assert without_rowid() == {"identities": True, "persons": True}
        assert contents() == before
        assert index_names(engine, "identities") == {"ix_identities_person_type"}
        assert index_names(engine, "persons") == {"ix_persons_merged_into", "ix_persons_owner_staff_id"}
        command.downgrade(alembic_config(engine), "0001")
        assert without_rowid() == {"identities": False, "persons": False}
        assert contents() == before
        upgrade(engine)
        assert contents() == before
    finally:
        engine.dispose()


# -- the new-person fast path keeps the checks it skips --------------------------------------------
def test_a_new_person_with_two_values_of_a_limited_type_keeps_one_and_logs_the_refusal() -> None:
    graph = IdentityGraph(IdentityRules(PRIORITY, {"member_id": 1}), make_id=lambda: "p1")
    person = graph.resolve(RULES.sort([("member_id", "M1"), ("member_id", "M2"), ("phone", "+86")]), T0)
    assert graph.held[person] == {"member_id": {"M1"}, "phone": {"+86"}}
    assert [r.reason for r in graph.refusals] == [
        "member_id=M2 not attached: the person already has 1 member_id value(s) (limit 1)"
    ]


def test_a_type_limited_to_zero_is_never_attached_to_a_new_person() -> None:
    graph = IdentityGraph(IdentityRules(PRIORITY, {"phone": 0}), make_id=lambda: "p1")
    graph.resolve([("member_id", "M1"), ("phone", "+86")], T0)
    assert set(graph.owner) == {("member_id", "M1")}
    assert len(graph.refusals) == 1 and "limit 0" in graph.refusals[0].reason


def test_a_new_person_with_distinct_types_takes_them_all_and_records_when() -> None:
    graph = IdentityGraph(RULES, make_id=lambda: "p1")
    keys = RULES.sort([("anonymous_id", "A"), ("member_id", "M"), ("phone", "+86")])
    assert graph.resolve(keys, T0) == "p1"
    assert graph.held["p1"] == {"member_id": {"M"}, "phone": {"+86"}, "anonymous_id": {"A"}}
    assert graph.new_identities == {k: ("p1", T0) for k in keys}
    assert graph.new_persons == {"p1": T0} and not graph.refusals


# -- batched person ids --------------------------------------------------------------------------
def test_new_ids_are_sorted_uuid7s_of_the_given_millisecond() -> None:
    ms = 1_735_689_600_123
    made = new_ids(300, ms)
    assert made == sorted(made) and len(set(made)) == 300
    for value in made:
        u = uuid.UUID(value)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert u.int >> 80 == ms


def test_id_source_hands_out_unique_uuid7s_in_batches_under_demand_and_singly_otherwise() -> None:
    source = IdSource()
    made = [source() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(v).version == 7 for v in made[::997])
    assert source._size > 16
    lone = IdSource()
    lone._expires = 0
    one = lone()
    assert uuid.UUID(one).version == 7 and lone._ready == []


# -- timestamps as SQLite text ------------------------------------------------------------------
def test_vectorised_sqlite_texts_match_sqlite_value_including_folds_zones_and_naive_values() -> None:
    berlin, shanghai = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Shanghai")
    values = [
        datetime(2025, 1, 1, 12, 0, 0, 5),
        datetime(2025, 1, 1, 12, 0, 0, 5, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC")),
        datetime(2025, 10, 26, 2, 30, tzinfo=berlin),
        datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=berlin),  # equal to the one above, an hour later
        datetime(1990, 9, 16, 23, 30, tzinfo=shanghai),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=8))),
        None,
        "2025-01-01 00:00:00.000000",
    ]
    expected = [upsert.sqlite_value(v) for v in values]
    assert expected[3] != expected[4]
    assert upsert.sqlite_texts(values) == expected
    assert upsert.sqlite_texts(values * 3) == expected * 3


@pytest.mark.parametrize("n", [1, 49, 50, 51, 237])
def test_bulk_insert_writes_every_row_once_across_statement_and_call_boundaries(
    ops_url: str, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    monkeypatch.setattr(upsert, "_STATEMENTS_PER_CALL", 2)  # 100 rows a call: several calls for 237
    engine = make_engine(ops_url)
    upgrade(engine)
    try:
        rows = [("phone", f"+86{i:011d}", f"p{i % 7}", T0 + timedelta(seconds=i)) for i in range(n)]
        with engine.begin() as conn:
            upsert.bulk_insert(conn, identities, ("type", "value", "person_id", "first_seen"), rows)
        with engine.connect() as conn:
            stored = conn.execute(select(identities).order_by(identities.c.value)).all()
        assert [(t, v, p, f.replace(tzinfo=UTC) if f.tzinfo is None else f) for t, v, p, f in stored] == rows
    finally:
        engine.dispose()


@given(st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",))), min_size=1, max_size=4))
def test_derived_ids_are_uuid5_of_the_joined_parts(parts: list[str]) -> None:
    """The byte-level derivation gives exactly uuid5's hex (ids stored by earlier versions stay valid)."""
    assert derived_id(*parts) == uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).hex


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
def test_json_text_is_the_text_json_dumps_makes(value: Any) -> None:
    """Traits and change payloads stay stored exactly as SQLAlchemy's JSON type writes them."""
    assert upsert.json_text(value) == json.dumps(value)
