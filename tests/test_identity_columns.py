"""Columnar identity resolution (siyu.identity.vectorised) leaves the same stores as the graph run
sighting by sighting (siyu.identity.resolve.resolve_sightings), on SQLite and PostgreSQL: into an
empty store and on top of stored persons, on planted merges, chains and refusals and on random
sightings; and it really decides most persons without the graph."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

import siyu.identity.graph as graph_module
from siyu.identity.graph import IdentityRules
from siyu.identity.resolve import Resolution, Sighting, resolve_sightings
from siyu.identity.vectorised import SightingColumns, partition_sightings, resolve_columns
from siyu.store.ops.engine import make_engine, upgrade
from test_identity_bulk import NOW, RULES, T0, sightings, snapshot, wipe


def columns(batch: list[Sighting], types: tuple[str, ...]) -> SightingColumns:
    """The sightings as columns (each sighting has at most one value per type)."""
    values: dict[str, list[str | None]] = {t: [] for t in types}
    for s in batch:
        held = dict(s.keys)
        assert len(held) == len(s.keys), "one value per type"
        for t in types:
            values[t].append(held.get(t))
    stamp = pa.timestamp("us", tz="UTC")
    return SightingColumns(
        identities={t: pa.array(v, pa.string()) for t, v in values.items()},
        first=pa.array([s.first for s in batch], stamp),
        last=pa.array([s.last for s in batch], stamp),
        message_id=pa.array([s.message_id for s in batch], pa.string()),
    )


def counter() -> Any:
    ids = itertools.count()
    return lambda: f"p{next(ids):06d}"


def both_ways(
    engine: Engine, rules: IdentityRules, before: list[list[Sighting]], batch: list[Sighting]
) -> tuple[tuple[Resolution, dict[str, Any]], tuple[Resolution, dict[str, Any]]]:
    """Write ``before`` (sighting by sighting), then ``batch`` by each method; outcomes and stores."""
    out = []
    for method in ("graph", "columns"):
        wipe(engine)
        make_id = counter()
        for earlier in before:
            with engine.begin() as conn:
                resolve_sightings(conn, rules, earlier, trait_strategies={}, now=NOW, make_id=make_id)
        with engine.begin() as conn:
            if method == "graph":
                result = resolve_sightings(conn, rules, batch, trait_strategies={}, now=NOW, make_id=make_id)
            else:
                cols = columns(batch, rules.priority)
                result = resolve_columns(conn, rules, cols, trait_strategies={}, now=NOW, make_id=make_id)
        with engine.connect() as conn:
            out.append((result, snapshot(conn)))
    return out[0], out[1]


@pytest.fixture
def engine(ops_url: str) -> Any:
    engine = make_engine(ops_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def graph_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the sightings the graph resolves (the real method runs)."""
    calls = [0]
    real = graph_module.IdentityGraph.resolve

    def counted(self: Any, *args: Any, **kwargs: Any) -> str:
        calls[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(graph_module.IdentityGraph, "resolve", counted)
    return calls


def test_into_an_empty_store_the_outcome_equals_the_graph_and_most_sightings_skip_it(
    engine: Engine, graph_calls: list[int]
) -> None:
    data = sightings(400, seed=7)  # merges, chains and refused second member ids are planted
    (graph_result, graph_store), (cols_result, cols_store) = both_ways(engine, RULES, [], data)
    assert cols_store == graph_store
    assert cols_result == graph_result
    assert graph_store["merges"] and any(m.status == "refused" for m in graph_store["merges"])
    # The graph ran for every sighting once (graph way) and for a minority of them (columns way).
    in_columns_way = graph_calls[0] - len(data)
    assert 0 < in_columns_way < len(data) / 2


def test_on_top_of_stored_persons_the_outcome_equals_the_graph(engine: Engine) -> None:
    data = sightings(300, seed=11)
    earlier, later = data[: len(data) // 2], data[len(data) // 2 :]
    (graph_result, graph_store), (cols_result, cols_store) = both_ways(engine, RULES, [earlier], later)
    assert cols_store == graph_store
    assert cols_result == graph_result


def test_sightings_of_stored_persons_skip_the_graph_unless_another_component_touches_them(
    engine: Engine, graph_calls: list[int]
) -> None:
    def seen(keys: list[tuple[str, str]], minute: int, mid: str) -> Sighting:
        at = T0 + timedelta(minutes=minute)
        return Sighting(RULES.sort(keys), at, at + timedelta(minutes=1), mid)

    before = [
        seen([("member_id", "M1"), ("phone", "+8613800000001")], 0, "b1"),
        seen([("anonymous_id", "A2"), ("phone", "+8613800000002")], 1, "b2"),
        seen([("member_id", "M3"), ("anonymous_id", "A3")], 2, "b3"),
        seen([("member_id", "M5")], 4, "b5"),
    ]
    batch = [
        seen([("member_id", "M1")], 500, "k1"),  # known: only the stored M1's person
        seen([("member_id", "M1"), ("phone", "+8613800000001")], 90, "k2"),  # the same component, earlier
        seen([("member_id", "M3")], 700, "m1"),  # M3's person is also in the next component, seen later
        seen([("anonymous_id", "A3"), ("phone", "+8613800000009")], 900, "m2"),
        seen([("anonymous_id", "A2")], 800, "m3"),  # A2's person is merged into M5's by the next one
        seen([("phone", "+8613800000002"), ("member_id", "M5")], 300, "m4"),
        seen([("anonymous_id", "A9")], 50, "n1"),  # new
    ]
    calls_before = graph_calls[0]
    (graph_result, graph_store), (cols_result, cols_store) = both_ways(engine, RULES, [before], batch)
    assert cols_store == graph_store
    assert cols_result == graph_result
    by_method = graph_calls[0] - calls_before - 2 * len(before)
    # The graph way resolves all 7; the columns way all but the known component's two and the new one.
    assert by_method == len(batch) + len(batch) - 3


def test_a_partition_made_beforehand_gives_the_same_outcome_and_must_be_of_the_same_sightings(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that partitioned the sightings already (the orders import asks which are simple
    or known first) hands that partition over: the stored identities are read once, with the same
    stores as a fresh partition; a partition of other sightings is refused."""
    import siyu.identity.vectorised as vectorised

    data = sightings(300, seed=11)
    earlier, later = data[: len(data) // 2], data[len(data) // 2 :]
    _, (fresh_result, fresh_store) = both_ways(engine, RULES, [earlier], later)
    wipe(engine)
    make_id = counter()
    with engine.begin() as conn:  # as both_ways stores them
        resolve_sightings(conn, RULES, earlier, trait_strategies={}, now=NOW, make_id=make_id)
    reads: list[str] = []
    real = vectorised._stored
    monkeypatch.setattr(vectorised, "_stored", lambda *a: reads.append("read") or real(*a))
    cols = columns(later, RULES.priority)
    with engine.begin() as conn:
        part = partition_sightings(conn, RULES, cols)
        result = resolve_columns(conn, RULES, cols, trait_strategies={}, now=NOW, make_id=make_id, partition=part)
    with engine.connect() as conn:
        assert snapshot(conn) == fresh_store
    assert result == fresh_result
    assert reads == ["read"]
    wrong = f"partition is of {len(later)} sightings, not these {len(later) - 1}"
    with engine.begin() as conn, pytest.raises(ValueError, match=wrong):
        resolve_columns(conn, RULES, columns(later[1:], RULES.priority), trait_strategies={}, now=NOW, partition=part)


def test_the_full_scan_of_stored_identities_finds_the_same_owners(engine: Engine, monkeypatch) -> None:
    import siyu.identity.vectorised as vectorised

    monkeypatch.setattr(vectorised, "SCAN_ABOVE", 5)
    data = sightings(120, seed=5)
    earlier, later = data[:150], data[150:]
    (graph_result, graph_store), (cols_result, cols_store) = both_ways(engine, RULES, [earlier], later)
    assert cols_store == graph_store and cols_result == graph_result


def test_a_type_limited_to_zero_and_sightings_without_identities_go_through_the_graph(engine: Engine) -> None:
    rules = IdentityRules(RULES.priority, {"member_id": 1, "phone": 0, "anonymous_id": 5})
    at = T0
    batch = [
        Sighting([("member_id", "M1"), ("phone", "+8613800000001")], at, at, "m0"),
        Sighting([], at + timedelta(seconds=1), at + timedelta(seconds=2), "m1"),
        Sighting([("anonymous_id", "A1")], at + timedelta(seconds=3), at + timedelta(seconds=9), "m2"),
        Sighting([("member_id", "M1"), ("anonymous_id", "A1")], at + timedelta(seconds=4), at, "m3"),
        Sighting([("anonymous_id", "A2")], at + timedelta(seconds=5), at + timedelta(seconds=6), "m4"),
    ]
    (graph_result, graph_store), (cols_result, cols_store) = both_ways(engine, rules, [], batch)
    assert cols_store == graph_store and cols_result == graph_result
    assert cols_result.new_persons == 3  # M1's (phone refused; A1's merged into it), the empty sighting's, A2's


def test_an_unknown_identity_type_is_an_error(engine: Engine) -> None:
    cols = columns([Sighting([("member_id", "M1")], T0, T0, "m0")], ("member_id",))
    cols = SightingColumns({"wechat_nick": cols.identities["member_id"]}, cols.first, cols.last, cols.message_id)
    with engine.begin() as conn, pytest.raises(ValueError, match="wechat_nick"):
        resolve_columns(conn, RULES, cols, trait_strategies={}, now=NOW)


TYPES = RULES.priority
sighting_keys = st.fixed_dictionaries(
    {}, optional={t: st.sampled_from([f"{t[0]}{i}" for i in range(4)]) for t in TYPES}
)
batches = st.lists(st.tuples(sighting_keys, st.integers(0, 50), st.integers(0, 5)), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=batches, stored=st.booleans(), batch=batches)
def test_random_sightings_give_the_graphs_outcome(
    engine: Engine, before: list[Any], stored: bool, batch: list[Any]
) -> None:
    def as_sightings(rows: list[Any], start: int) -> list[Sighting]:
        out = []
        for i, (keys, minute, extra) in enumerate(rows):
            at = T0 + timedelta(minutes=start + minute)
            out.append(Sighting(RULES.sort(keys.items()), at, at + timedelta(minutes=extra), f"m{start}.{i}"))
        return out

    earlier = [as_sightings(before, 0)] if stored else []
    (graph_result, graph_store), (cols_result, cols_store) = both_ways(engine, RULES, earlier, as_sightings(batch, 100))
    assert cols_store == graph_store
    assert cols_result == graph_result


def test_sightings_without_any_identity_column_each_make_a_person(engine: Engine) -> None:
    stamp = pa.timestamp("us", tz="UTC")
    cols = SightingColumns(
        identities={},
        first=pa.array([T0, T0], stamp),
        last=pa.array([T0, T0], stamp),
        message_id=pa.array(["m0", "m1"], pa.string()),
    )
    with engine.begin() as conn:
        result = resolve_columns(conn, RULES, cols, trait_strategies={}, now=NOW, make_id=counter())
    assert result.people == ["p000000", "p000001"] and result.new_persons == 2
