"""Identity rules through the API (stitching, merge chains, limits, priority), traits, and a
property test of :class:`~siyu.identity.graph.IdentityGraph` against an independent reference."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from helpers import at, identify, track
from siyu.config import IDENTITY_TYPES, Settings
from siyu.identity.graph import IdentityGraph, IdentityRules
from siyu.store.ops.schema import persons


def merged_into(api, person_id: str) -> str | None:
    with api.runtime.engine.connect() as conn:
        return conn.execute(select(persons.c.merged_into).where(persons.c.id == person_id)).scalar_one()


def identity_set(profile: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["type"], i["value"]) for i in profile["identities"]}


def change_events(api, name: str) -> list[tuple[str, dict[str, Any]]]:
    rows = api.duck("SELECT person_id, properties FROM events WHERE name = ? ORDER BY ts, event_id", [name])
    return [(pid, json.loads(props)) for pid, props in rows]


# -- stitching and merges ----------------------------------------------------------------------
def test_identify_after_anonymous_events_attaches_the_user_id_to_the_same_person(api) -> None:
    anon = [track("page_viewed", anonymousId="anon-1", timestamp=at(i)) for i in range(3)]
    api.batch(anon)
    anon_pid = api.person_id("anonymous_id:anon-1")
    ident = identify(anonymousId="anon-1", userId="U-1", timestamp=at(5))
    result = api.batch([ident])
    assert result["new_persons"] == 0 and result["merges"] == 0
    profile = api.person("user_id:U-1")
    assert profile["id"] == anon_pid
    assert identity_set(profile) == {("anonymous_id", "anon-1"), ("user_id", "U-1")}
    timeline_ids = {item["event_id"] for item in profile["timeline"]["items"]}
    assert {m["messageId"] for m in [*anon, ident]} <= timeline_ids


def test_late_stitching_merges_the_anonymous_person_into_the_known_user(api) -> None:
    anon = [track("page_viewed", anonymousId="anon-1", timestamp=at(i)) for i in range(3)]
    known = [track("login", userId="U-1", timestamp=at(10))]
    api.batch(anon)
    api.batch(known)
    anon_pid = api.person_id("anonymous_id:anon-1")
    user_pid = api.person_id("user_id:U-1")
    assert anon_pid != user_pid
    assert api.stats()["persons"] == 2

    ident = identify(anonymousId="anon-1", userId="U-1", timestamp=at(20))
    result = api.batch([ident])
    assert result["merges"] == 1 and result["refused_merges"] == 0

    profile = api.person("user_id:U-1")
    # user_id outranks anonymous_id, so the known user's person survives
    assert profile["id"] == user_pid
    assert profile["merged_from"] == [anon_pid]
    assert identity_set(profile) == {("anonymous_id", "anon-1"), ("user_id", "U-1")}
    assert api.person_id("anonymous_id:anon-1") == user_pid
    assert api.person_id(anon_pid) == user_pid  # the old person id still resolves
    assert merged_into(api, anon_pid) == user_pid
    assert api.stats()["persons"] == 1

    sent = {m["messageId"] for m in [*anon, *known, ident]}
    assert sent <= {item["event_id"] for item in profile["timeline"]["items"]}
    resolved = dict(api.duck("SELECT event_id, person_id FROM events_resolved"))
    assert {resolved[m] for m in sent} == {user_pid}


def test_alias_message_merges_the_previous_id_into_the_user(api) -> None:
    api.batch([track("viewed", anonymousId="dev-old", timestamp=at(0)), track("login", userId="U-a", timestamp=at(1))])
    old, user = api.person_id("anonymous_id:dev-old"), api.person_id("user_id:U-a")
    result = api.batch(
        [{"type": "alias", "messageId": "alias-1", "userId": "U-a", "previousId": "dev-old", "timestamp": at(2)}]
    )
    assert result["merges"] == 1
    assert api.person_id("anonymous_id:dev-old") == user
    assert merged_into(api, old) == user
    assert api.duck("SELECT name FROM events WHERE event_id = 'alias-1'") == [("$alias",)]


def _chain_assertions(
    api, survivor: str, merged: list[str], expected_ids: set[tuple[str, str]], *, across_batches: bool
) -> None:
    profile = api.person(survivor)
    assert profile["id"] == survivor
    assert identity_set(profile) == expected_ids
    assert sorted(profile["merged_from"]) == sorted(merged)
    for pid in merged:
        assert merged_into(api, pid) == survivor, pid
        assert api.person_id(pid) == survivor
    for t, v in expected_ids:
        assert api.person_id(f"{t}:{v}") == survivor
    assert merged_into(api, survivor) is None
    assert api.stats()["persons"] == 1
    if across_batches:
        raw = {r[0] for r in api.duck("SELECT DISTINCT person_id FROM events")}
        assert set(merged) <= raw  # events were written under the persons of their time ...
    resolved = {r[0] for r in api.duck("SELECT DISTINCT person_id FROM events_resolved")}
    assert resolved == {survivor}  # ... and the view maps every one of them to the survivor
    aliases = set(api.duck("SELECT alias_id, person_id FROM person_aliases"))
    assert aliases == {(pid, survivor) for pid in merged}
    applied = [r for r in api.ops_rows("identity_merges") if r["status"] == "applied"]
    assert len(applied) == len(merged)
    merge_events = change_events(api, "$identities_merged")
    assert len(merge_events) == len(merged)
    assert {(p["from_person_id"], p["into_person_id"]) for _, p in merge_events} == {
        (r["from_person_id"], r["into_person_id"]) for r in applied
    }


def test_merge_chain_across_batches_ends_in_one_person(api) -> None:
    api.batch(
        [
            track(userId="UA", timestamp=at(0)),
            track(identities={"email": "b@example.com"}, timestamp=at(1)),
            track(identities={"phone": "13800138001"}, timestamp=at(2)),
        ]
    )
    pa, pb, pc = (api.person_id(r) for r in ("user_id:UA", "email:b@example.com", "phone:+8613800138001"))
    assert len({pa, pb, pc}) == 3

    # A=B: user_id outranks email, so B is merged into A
    assert api.batch([identify(userId="UA", identities={"email": "b@example.com"}, timestamp=at(3))])["merges"] == 1
    assert merged_into(api, pb) == pa
    # B=C: B now belongs to A; phone outranks email, so A (holding B) is merged into C
    assert (
        api.batch([identify(identities={"email": "b@example.com", "phone": "13800138001"}, timestamp=at(4))])["merges"]
        == 1
    )
    _chain_assertions(
        api,
        pc,
        [pa, pb],
        {("user_id", "UA"), ("email", "b@example.com"), ("phone", "+8613800138001")},
        across_batches=True,
    )


def test_merge_chain_inside_one_batch_ends_in_one_person(api) -> None:
    result = api.batch(
        [
            track(anonymousId="a1", timestamp=at(0)),
            track(identities={"email": "e2@example.com"}, timestamp=at(1)),
            track(identities={"phone": "13800138003"}, timestamp=at(2)),
            identify(anonymousId="a1", identities={"email": "e2@example.com"}, timestamp=at(3)),
            identify(identities={"email": "e2@example.com", "phone": "13800138003"}, timestamp=at(4)),
        ]
    )
    assert result["merges"] == 2
    assert result["new_persons"] == 1  # three were created, two of them merged away in the same batch
    survivor = api.person_id("phone:+8613800138003")
    with api.runtime.engine.connect() as conn:
        merged = [r[0] for r in conn.execute(select(persons.c.id).where(persons.c.id != survivor))]
    assert len(merged) == 2
    _chain_assertions(
        api,
        survivor,
        merged,
        {("anonymous_id", "a1"), ("email", "e2@example.com"), ("phone", "+8613800138003")},
        across_batches=False,
    )
    # inside one batch, events are written under the final survivor directly
    assert {r[0] for r in api.duck("SELECT DISTINCT person_id FROM events")} == {survivor}
    profile = api.person(survivor)
    assert profile["first_seen"] == datetime.fromisoformat(at(0)).isoformat()
    assert profile["last_seen"] == datetime.fromisoformat(at(4)).isoformat()


def test_merge_that_would_exceed_a_type_limit_is_refused_and_logged(api, settings) -> None:
    assert settings.identity_limits["member_id"] == 1
    api.batch(
        [
            identify(anonymousId="dev-1", identities={"member_id": "M1"}),
            identify(anonymousId="dev-2", identities={"member_id": "M2"}),
        ]
    )
    p1, p2 = api.person_id("member_id:M1"), api.person_id("member_id:M2")
    before = {p1: identity_set(api.person(p1)), p2: identity_set(api.person(p2))}

    # dev-2 belongs to the M2 person; seen together with M1 this would give one person two member_ids
    msg = track("clicked", anonymousId="dev-2", identities={"member_id": "M1"})
    result = api.batch([msg])
    assert result["accepted"] == 1
    assert result["merges"] == 0
    assert result["refused_merges"] == 1
    assert api.stats()["persons"] == 2
    assert {p1: identity_set(api.person(p1)), p2: identity_set(api.person(p2))} == before
    assert merged_into(api, p1) is None and merged_into(api, p2) is None
    refused = [r for r in api.ops_rows("identity_merges") if r["status"] == "refused"]
    assert len(refused) == 1
    row = refused[0]
    assert {row["from_person_id"], row["into_person_id"]} == {p1, p2}
    assert "member_id" in row["reason"]
    assert row["message_id"] == msg["messageId"]
    assert not [r for r in api.ops_rows("identity_merges") if r["status"] == "applied"]
    assert change_events(api, "$identities_merged") == []
    # the event went to the person of the highest-priority identity (member_id M1)
    assert dict(api.duck("SELECT event_id, person_id FROM events"))[msg["messageId"]] == p1


def test_second_member_id_is_not_attached_and_the_refusal_is_logged(api) -> None:
    api.batch([identify(userId="U1", identities={"member_id": "M1"})])
    pid = api.person_id("user_id:U1")
    msg = identify(userId="U1", identities={"member_id": "M2"})
    result = api.batch([msg])
    assert result["accepted"] == 1 and result["refused_merges"] == 1 and result["merges"] == 0
    assert identity_set(api.person(pid)) == {("user_id", "U1"), ("member_id", "M1")}
    assert api.get_person("member_id:M2").status_code == 404
    refused = [r for r in api.ops_rows("identity_merges") if r["status"] == "refused"]
    assert len(refused) == 1
    assert refused[0]["into_person_id"] == pid
    assert refused[0]["from_person_id"] is None
    assert "M2" in refused[0]["reason"] and refused[0]["message_id"] == msg["messageId"]


def test_values_beyond_the_phone_limit_are_refused(api, settings) -> None:
    limit = settings.identity_limits["phone"]
    phones = [f"1380013{9000 + i}" for i in range(limit + 2)]
    results = [
        api.batch([identify(userId="U-phones", identities={"phone": p}, timestamp=at(i))]) for i, p in enumerate(phones)
    ]
    assert sum(r["refused_merges"] for r in results) == len(phones) - limit
    held = {v for t, v in identity_set(api.person("user_id:U-phones")) if t == "phone"}
    assert held == {"+86" + p for p in phones[:limit]}


@pytest.mark.parametrize(
    "priority",
    [
        pytest.param(None, id="default-priority"),
        pytest.param(
            ["phone", "member_id"],
            id="phone-first",
            marks=pytest.mark.siyu_settings(identity_priority=["phone", "member_id"]),
        ),
    ],
)
def test_person_of_the_highest_priority_identity_survives(api, settings, priority) -> None:
    api.batch([identify(identities={"phone": "13800138002"}, timestamp=at(0))])
    api.batch([identify(identities={"member_id": "M-9"}, timestamp=at(1))])
    phone_pid, member_pid = api.person_id("phone:+8613800138002"), api.person_id("member_id:M-9")
    order = settings.identity_priority
    expected, loser = (
        (member_pid, phone_pid) if order.index("member_id") < order.index("phone") else (phone_pid, member_pid)
    )
    assert api.batch([track(identities={"phone": "13800138002", "member_id": "M-9"}, timestamp=at(2))])["merges"] == 1
    assert api.person_id("phone:+8613800138002") == expected
    assert api.person_id("member_id:M-9") == expected
    assert merged_into(api, loser) == expected
    assert api.person(expected)["merged_from"] == [loser]


def test_a_type_named_twice_in_the_identity_priority_keeps_its_first_place() -> None:
    settings = Settings(identity_priority=["phone", "member_id", "phone"])
    assert settings.identity_priority[:2] == ["phone", "member_id"]
    assert sorted(settings.identity_priority) == sorted(set(settings.identity_priority))


# -- traits ------------------------------------------------------------------------------------
def test_latest_timestamp_wins_and_an_older_identify_arriving_later_does_not_overwrite(api) -> None:
    r1 = api.batch([identify(userId="U-t", traits={"plan": "gold", "city": "杭州"}, timestamp=at(10))])
    assert r1["traits_changed"] == 2
    r2 = api.batch([identify(userId="U-t", traits={"plan": "silver"}, timestamp=at(5))])
    assert r2["accepted"] == 1 and r2["traits_changed"] == 0
    assert api.person("user_id:U-t")["traits"] == {"plan": "gold", "city": "杭州"}
    r3 = api.batch([identify(userId="U-t", traits={"plan": "bronze"}, timestamp=at(20))])
    assert r3["traits_changed"] == 1
    assert api.person("user_id:U-t")["traits"] == {"plan": "bronze", "city": "杭州"}


@pytest.mark.siyu_settings(trait_strategies={"signup_channel": "first"})
def test_first_strategy_keeps_the_first_value(api) -> None:
    api.batch([identify(userId="U-f", traits={"signup_channel": "wecom", "plan": "a"}, timestamp=at(0))])
    api.batch([identify(userId="U-f", traits={"signup_channel": "mall", "plan": "b"}, timestamp=at(10))])
    assert api.person("user_id:U-f")["traits"] == {"signup_channel": "wecom", "plan": "b"}


def test_trait_changed_events_only_for_real_changes(api) -> None:
    api.batch([identify(userId="U-c", traits={"plan": "gold"}, timestamp=at(0))])
    again = api.batch([identify(userId="U-c", traits={"plan": "gold"}, timestamp=at(1))])
    assert again["accepted"] == 1 and again["traits_changed"] == 0
    assert len(change_events(api, "$trait_changed")) == 1
    api.batch([identify(userId="U-c", traits={"plan": "silver"}, timestamp=at(2))])
    events = change_events(api, "$trait_changed")
    pid = api.person_id("user_id:U-c")
    assert [(p, e["key"], e["old"], e["new"]) for p, e in events] == [
        (pid, "plan", None, "gold"),
        (pid, "plan", "gold", "silver"),
    ]


def test_traits_of_merged_persons_are_folded_by_strategy(api) -> None:
    api.batch(
        [
            identify(anonymousId="dev-x", traits={"plan": "old", "only_anon": 1}, timestamp=at(0)),
            identify(userId="U-m", traits={"plan": "new"}, timestamp=at(5)),
        ]
    )
    api.batch([track(anonymousId="dev-x", userId="U-m", timestamp=at(6))])
    assert api.person("user_id:U-m")["traits"] == {"plan": "new", "only_anon": 1}
    assert api.stats()["persons"] == 1


def test_every_merge_and_trait_change_is_an_event(api) -> None:
    api.batch([identify(anonymousId="dev-e", timestamp=at(0)), identify(userId="U-e", timestamp=at(1))])
    anon_pid, user_pid = api.person_id("anonymous_id:dev-e"), api.person_id("user_id:U-e")
    api.batch([identify(anonymousId="dev-e", userId="U-e", traits={"level": 3}, timestamp=at(2))])
    merges = change_events(api, "$identities_merged")
    assert [(p, e["from_person_id"], e["into_person_id"]) for p, e in merges] == [(user_pid, anon_pid, user_pid)]
    traits = change_events(api, "$trait_changed")
    assert [(p, e["key"], e["new"]) for p, e in traits] == [(user_pid, "level", 3)]
    # the change feed and the event store agree
    assert len(api.ops_rows("changes")) == len(merges) + len(traits)


# -- property test of the graph against an independent reference -------------------------------
P_TYPES = ("member_id", "user_id", "phone", "anonymous_id")
P_LIMITS = {"member_id": 1, "user_id": 1, "phone": 2, "anonymous_id": 3}
RULES = IdentityRules(tuple(t for t in IDENTITY_TYPES if t in P_TYPES), dict(P_LIMITS))
T0 = datetime(2024, 1, 1, tzinfo=UTC)

Key = tuple[str, str]


class ReferenceGraph:
    """A deliberately plain union-find: ownership never moves, roots are found by walking parents,
    and counts are recomputed by scanning every identity. Same rules, no shared code."""

    def __init__(self) -> None:
        self.owner: dict[Key, int] = {}
        self.parent: dict[int, int] = {}
        self.next_id = 0
        self.merges = 0
        self.refusals = 0

    def root(self, p: int) -> int:
        while self.parent.get(p, p) != p:
            p = self.parent[p]
        return p

    def count(self, person: int, id_type: str) -> int:
        return sum(1 for (t, _), p in self.owner.items() if t == id_type and self.root(p) == person)

    def resolve(self, keys: list[Key]) -> int:
        ordered = sorted(set(keys), key=lambda k: (P_TYPES.index(k[0]), k[1]))
        unknown = [k for k in ordered if k not in self.owner]
        person: int | None = None
        for k in ordered:
            if k in unknown:
                continue
            other = self.root(self.owner[k])
            if person is None:
                person = other
            elif other != person:
                if all(self.count(person, t) + self.count(other, t) <= P_LIMITS[t] for t in P_TYPES):
                    self.parent[other] = person
                    self.merges += 1
                else:
                    self.refusals += 1
        if person is None:
            person = self.next_id
            self.next_id += 1
        for k in unknown:
            if self.count(person, k[0]) < P_LIMITS[k[0]]:
                self.owner[k] = person
            else:
                self.refusals += 1
        return person

    def partition(self) -> set[frozenset[Key]]:
        blocks: dict[int, set[Key]] = {}
        for k, p in self.owner.items():
            blocks.setdefault(self.root(p), set()).add(k)
        return {frozenset(b) for b in blocks.values()}


def graph_partition(graph: IdentityGraph) -> set[frozenset[Key]]:
    blocks: dict[str, set[Key]] = {}
    for k, p in graph.owner.items():
        blocks.setdefault(graph.find(p), set()).add(k)
    return {frozenset(b) for b in blocks.values()}


def check_invariants(graph: IdentityGraph) -> None:
    every_person = set(graph.held) | set(graph.parent) | set(graph.parent.values())
    for p in every_person:
        root = graph.find(p)
        assert graph.find(root) == root  # find is idempotent
        assert root in graph.held  # roots are the persons still holding identities
    for person, by_type in graph.held.items():
        assert person not in graph.parent
        for t, values in by_type.items():
            assert len(values) <= P_LIMITS[t], (person, t, values)
    # every identity has exactly one owner, and the owner's holdings agree
    held_pairs = [((t, v), p) for p, by_type in graph.held.items() for t, vs in by_type.items() for v in vs]
    assert len(held_pairs) == len({k for k, _ in held_pairs})
    assert {k: p for k, p in held_pairs} == {k: graph.find(p) for k, p in graph.owner.items()}


key_strategy = st.tuples(st.sampled_from(P_TYPES), st.sampled_from("abcd"))
message_strategy = st.lists(key_strategy, min_size=1, max_size=4)
batches_strategy = st.lists(st.lists(message_strategy, min_size=1, max_size=6), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(batches_strategy)
def test_property_identity_graph_matches_reference_and_keeps_invariants(batches: list[list[list[Key]]]) -> None:
    ids = itertools.count()
    make_id = lambda: f"p{next(ids)}"  # noqa: E731
    reference = ReferenceGraph()
    rows: list[tuple[str, str, str]] = []  # what the ops store would hold between batches
    sut_people: list[str] = []
    ref_people: list[int] = []
    for b, batch in enumerate(batches):
        graph = IdentityGraph(RULES, make_id)
        graph.seed(rows)
        ref_merges, ref_refusals = reference.merges, reference.refusals
        for i, keys in enumerate(batch):
            person = graph.resolve(RULES.sort(keys), T0 + timedelta(minutes=b * 100 + i), f"m{b}.{i}")
            assert graph.find(person) == person  # the message's person is a survivor when returned
            ref_people.append(reference.resolve(keys))
            sut_people.append(graph.find(person))
            check_invariants(graph)
        assert graph_partition(graph) == reference.partition()
        assert len(graph.merges) == reference.merges - ref_merges
        assert len(graph.refusals) == reference.refusals - ref_refusals
        # each message's person (as of the end of the batch) holds the same identities in both
        sut_people = [graph.find(p) if p in graph.held or p in graph.parent else p for p in sut_people]
        final = {
            graph.find(p): frozenset((t, v) for t, vs in graph.held[graph.find(p)].items() for v in vs)
            for p in sut_people
            if p in graph.held or p in graph.parent
        }
        ref_blocks = {
            reference.root(p): frozenset(
                k for k, o in reference.owner.items() if reference.root(o) == reference.root(p)
            )
            for p in ref_people
        }
        tail = len(batch)
        for sp, rp in zip(sut_people[-tail:], ref_people[-tail:], strict=True):
            assert final[graph.find(sp)] == ref_blocks[reference.root(rp)]
        rows = [(t, v, graph.find(p)) for (t, v), p in graph.owner.items()]
