"""The person-state tables in the event store agree with the ops store after random write sequences.

Random messages (identify with traits, track, alias → merges), relations (owners) and group
memberships go through the real API and services; afterwards every state table must say what the
ops store says, and folding the whole history again (``rebuild_state``) must give the same tables.
"""

from __future__ import annotations

import contextlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import siyu.store.feed as feed
from helpers import Api, identify, track
from siyu.relations.service import RelationError, RelationService
from siyu.store.ops.schema import group_members, person_tags, persons, relation_tags, staff_relations, tags, traits
from siyu.store.state import SIGHTING, STATE_TABLES, rebuild_state
from siyu.tags.service import TagError, TagService
from siyu.tags.targets import Target

BASE = datetime(2026, 3, 1, tzinfo=UTC)


def _when(rng: random.Random) -> datetime:
    return BASE + timedelta(minutes=rng.randrange(0, 60 * 24 * 30))


def _identities(rng: random.Random) -> dict[str, str]:
    ids: dict[str, str] = {}
    if rng.random() < 0.5:
        ids["phone"] = f"1380000{rng.randrange(40):04d}"
    if rng.random() < 0.4:
        ids["wecom_external_userid"] = f"wm{rng.randrange(40)}"
    if rng.random() < 0.3:
        ids["member_id"] = f"M{rng.randrange(30)}"
    return ids


def _message(rng: random.Random) -> dict[str, Any]:
    who: dict[str, Any] = {"anonymousId": f"dev-{rng.randrange(60)}"}
    if rng.random() < 0.4:
        who = {"userId": f"u{rng.randrange(30)}"}
    ids = _identities(rng)
    if ids:
        who["identities"] = ids
    at = _when(rng).isoformat()
    roll = rng.random()
    if roll < 0.45:
        traits_ = {
            k: v
            for k, v in (
                ("city", rng.choice(["北京", "上海", "杭州", None])),
                ("vip", rng.choice([True, False])),
                ("score", rng.choice([1, 2.5, 7, None])),
            )
            if rng.random() < 0.6
        }
        return identify(timestamp=at, traits=traits_, **who)
    if roll < 0.55 and "anonymousId" in who:
        return {
            "type": "alias",
            "messageId": f"al-{rng.random()}",
            "anonymousId": who["anonymousId"],
            "previousId": f"u{rng.randrange(30)}",
            "timestamp": at,
        }
    return track(rng.choice(["viewed", "favorite", "add_to_cart"]), timestamp=at, **who)


def _tagging(rng: random.Random, tags: TagService) -> None:
    """Add or remove a tag, person-level or on a WeCom relation (refusals write nothing)."""
    target = Target(external_userid=f"wm{rng.randrange(40)}") if rng.random() < 0.5 else None
    if target is not None and rng.random() < 0.7:
        target = Target(external_userid=target.external_userid, staff_userid=rng.choice(["zhangsan", "lisi"]))
    if target is None:
        target = Target(person=f"user_id:u{rng.randrange(30)}")
    with contextlib.suppress(TagError):  # an unknown person or relation: refused, nothing written
        tags.tag(rng.choice(["高意向", "复购"]), [target], add=rng.random() < 0.7, by="test")


def _wecom(rng: random.Random, service: RelationService) -> None:
    external = f"wm{rng.randrange(40)}"
    staff_member = rng.choice(["zhangsan", "lisi", "wangwu"])
    when = _when(rng)
    roll = rng.random()
    try:
        if roll < 0.4:
            service.add_relation(external, staff_member, add_time=when, state="store-1")
        elif roll < 0.6:
            service.remove_relation(external, staff_member, by=rng.choice(["customer", "staff"]), at=when)
        elif roll < 0.85:
            service.join_group(f"chat{rng.randrange(4)}", external, at=when)
        else:
            service.leave_group(f"chat{rng.randrange(4)}", external, at=when)
    except RelationError:
        pass  # removing a relation or membership that does not exist: refused, nothing written


def _state(api: Api) -> dict[str, set[tuple[Any, ...]]]:
    api.runtime.events.settle()  # what every reader of person_state does first
    cur = api.runtime.events.cursor()
    out: dict[str, set[tuple[Any, ...]]] = {}
    out["persons"] = set(cur.execute("SELECT person_id, first_seen, last_seen, owner FROM person_state").fetchall())
    # One row per person and key: the sets below would hide a repeated one (trait_state has no
    # PRIMARY KEY; the fold keeps it so).
    repeated = cur.execute("SELECT person_id, key FROM trait_state GROUP BY ALL HAVING count(*) > 1").fetchall()
    assert not repeated, f"trait_state rows repeated: {repeated[:5]}"
    out["traits"] = {
        (p, k, json.dumps(json.loads(v)))
        for p, k, v in cur.execute("SELECT person_id, key, value FROM trait_state").fetchall()
    }
    out["groups"] = set(cur.execute("SELECT person_id, chat_id FROM group_state").fetchall())
    out["tags"] = set(cur.execute("SELECT person_id, tag, staff_userid FROM tag_state").fetchall())
    return out


def _ops(api: Api) -> dict[str, set[tuple[Any, ...]]]:
    with api.runtime.engine.connect() as conn:
        people = conn.execute(
            select(persons.c.id, persons.c.first_seen, persons.c.last_seen, persons.c.owner_staff_id).where(
                persons.c.merged_into.is_(None)
            )
        ).all()
        trait_rows = conn.execute(select(traits.c.person_id, traits.c.key, traits.c.value)).all()
        person_level = conn.execute(
            select(person_tags.c.person_id, tags.c.name).join(tags, tags.c.id == person_tags.c.tag_id)
        ).all()
        on_relations = conn.execute(
            select(staff_relations.c.person_id, tags.c.name, relation_tags.c.staff_userid)
            .join(tags, tags.c.id == relation_tags.c.tag_id)
            .join(
                staff_relations,
                (staff_relations.c.external_userid == relation_tags.c.external_userid)
                & (staff_relations.c.staff_userid == relation_tags.c.staff_userid),
            )
        ).all()
        members = conn.execute(
            select(group_members.c.person_id, group_members.c.chat_id).where(
                group_members.c.left_at.is_(None), group_members.c.member_type == "customer"
            )
        ).all()
    # First / last seen are checked against the event log itself (the definition); the ops
    # store's columns are widened per batch and may differ at batch boundaries (docs/segments.md).
    seen = {
        p: (f, la)
        for p, f, la in api.runtime.events.cursor()
        .execute(f"""SELECT person_id, min(ts) FILTER (WHERE {SIGHTING}), max(ts) FILTER (WHERE {SIGHTING})
                     FROM events_resolved GROUP BY person_id""")
        .fetchall()
    }
    return {
        "persons": {(p, *seen.get(p, (None, None)), o) for p, _f, _la, o in people},
        "traits": {(p, k, json.dumps(v)) for p, k, v in trait_rows},
        "groups": {(p, c) for p, c in members},
        "tags": {(p, t, "") for p, t in person_level} | {(p, t, u) for p, t, u in on_relations},
    }


@pytest.mark.parametrize(
    ("seed", "settle_rows", "bundle_above"),
    [(1, None, None), (2, None, None), (3, None, None), (1, 1, None), (2, 7, None), (3, None, 0), (1, 7, 2)],
    ids=[
        "seed1",
        "seed2",
        "seed3",
        "seed1-writer-settles-always",
        "seed2-writer-settles-often",
        "seed3-every-change-in-a-bundle",
        "seed1-bundles-and-settling",
    ],
)
def test_state_tables_match_the_ops_store_after_random_writes(
    api: Api, monkeypatch: pytest.MonkeyPatch, seed: int, settle_rows: int | None, bundle_above: int | None
) -> None:
    """First / last seen wait in seen_pending until a reader settles them (default), or the
    writer settles them itself every few rows, in the same transactions as merges and owners.
    The change feed holds single changes, or (a lower bundle threshold) bundles of them."""
    if settle_rows is not None:
        api.runtime.events.settle_rows = settle_rows
    if bundle_above is not None:
        monkeypatch.setattr(feed, "BUNDLE_ABOVE", bundle_above)
    rng = random.Random(seed)
    service = RelationService(api.runtime.ingestor)
    for userid in ("zhangsan", "lisi", "wangwu"):
        service.upsert_staff(userid, userid)
    tagger = TagService(api.runtime.ingestor)
    for name in ("高意向", "复购"):
        tagger.create_tag(name, "跟进状态")
    for _ in range(60):
        roll = rng.random()
        if roll < 0.5:
            api.batch([_message(rng) for _ in range(rng.randrange(1, 12))])
        elif roll < 0.75:
            _wecom(rng, service)
        else:
            _tagging(rng, tagger)
    state, ops = _state(api), _ops(api)
    assert (
        len(ops["persons"]) > 10 and ops["traits"] and ops["groups"] and ops["tags"]
    )  # the sequence exercised something
    merged = api.runtime.events.cursor().execute("SELECT count(*) FROM person_aliases").fetchone()
    assert merged is not None and merged[0] > 0, "no merge happened: the sequence is too weak"
    for part in ("persons", "traits", "groups", "tags"):
        assert state[part] == ops[part], f"{part}:\n{_diff(state[part], ops[part])}"

    # Folding the whole history again gives the same tables.
    with api.runtime.events.transaction() as con:
        rebuild_state(con)
    rebuilt = _state(api)
    for part in ("persons", "traits", "groups", "tags"):
        assert rebuilt[part] == state[part], f"{part} after rebuild:\n{_diff(rebuilt[part], state[part])}"


def test_erasure_removes_the_person_from_every_state_table(api: Api) -> None:
    service = RelationService(api.runtime.ingestor)
    service.upsert_staff("zhangsan", "张三")
    api.batch([identify(userId="gone", identities={"wecom_external_userid": "wmGone"}, traits={"city": "北京"})])
    service.add_relation("wmGone", "zhangsan")
    service.join_group("chat1", "wmGone")
    person = api.person("user_id:gone")["id"]
    api.runtime.events.settle()
    cur = api.runtime.events.cursor()
    assert all(
        cur.execute(f"SELECT count(*) FROM {t} WHERE person_id = ?", [person]).fetchone() != (0,)
        for t in ("person_state", "trait_state", "group_state")
    )
    cur.close()  # the erasure compacts the file: no cursor may stay open on it
    r = api.client.delete(f"/v1/persons/{person}", headers={"Authorization": "Bearer test-admin"})
    assert r.status_code == 200, r.text
    cur = api.runtime.events.cursor()
    for table in (*STATE_TABLES, "seen_pending"):
        assert cur.execute(f"SELECT count(*) FROM {table} WHERE person_id = ?", [person]).fetchone() == (0,)


def _diff(a: set[Any], b: set[Any]) -> str:
    left = {x[0]: x for x in a - b}
    right = {x[0]: x for x in b - a}
    return "\n".join(f"{k}: state={left.get(k)} ops={right.get(k)}" for k in sorted({*left, *right}))
