"""Writing who holds a tag, each change also a ``tag_added`` / ``tag_removed`` change-feed row.

Everything here runs inside the caller's ops transaction (connection-level functions), so the
state and its change commit together; the caller applies the feed after commit. This module
imports no identity code: :mod:`siyu.identity.persist` uses it when persons merge.

The change contract (the event-store fold depends on it)::

    kind        tag_added | tag_removed
    person_id   the (surviving) person
    occurred_at when it happened
    event_id    derived_id("tag", kind, person, tag_id, staff or "", at) (+ "#n" if that id is taken)
    payload     {"tag", "tag_id", "group", "staff_userid" (None: person-level), "by", "reason", "source"}

A no-op (adding a tag already held at that level, removing one not held) writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, select, tuple_

from siyu.ids import derived_id
from siyu.store.feed import Change, insert_changes
from siyu.store.ops.schema import changes, person_tags, relation_tags, tags
from siyu.store.ops.upsert import bulk_insert

Source = Literal["manual", "rule", "event", "import"]
SOURCES: tuple[str, ...] = ("manual", "rule", "event", "import")
_CHUNK = 500


@dataclass(frozen=True)
class TagRef:
    """A tag as the change payload names it."""

    id: str
    name: str
    group: str
    kind: str = "manual"


@dataclass(frozen=True)
class Relation:
    """One WeCom relation (a staff member's contact) and the person it belongs to."""

    external_userid: str
    staff_userid: str
    person_id: str


@dataclass(frozen=True)
class Why:
    """Who made a change, why, through which path, and when."""

    by: str
    reason: str | None
    source: str
    at: datetime


def payload(tag: TagRef, staff_userid: str | None, why: Why) -> dict[str, Any]:
    """The change payload of the contract above."""
    return {
        "tag": tag.name,
        "tag_id": tag.id,
        "group": tag.group,
        "staff_userid": staff_userid,
        "by": why.by,
        "reason": why.reason,
        "source": why.source,
    }


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def write_changes(conn: Connection, rows: Sequence[tuple[str, str, TagRef, str | None, Why]]) -> int:
    """Append (kind, person, tag, staff, why) changes with deterministic, collision-free event ids.

    The id is derived from the change itself, so a retried request derives the same one; only when
    that id is already in the feed (the same change at the same instant, e.g. add → remove → add
    with one explicit time) is a ``#n`` suffix added, deterministically.
    """
    if not rows:
        return 0
    base = [
        derived_id("tag", kind, person, tag.id, staff or "", why.at.isoformat())
        for kind, person, tag, staff, why in rows
    ]
    taken: set[str] = set()
    for part in _chunks(base):
        taken.update(conn.execute(select(changes.c.event_id).where(changes.c.event_id.in_(part))).scalars())
    feed: list[Change] = []
    for eid, (kind, person, tag, staff, why) in zip(base, rows, strict=True):
        n = 0
        while eid in taken:
            n += 1
            eid = derived_id("tag", kind, person, tag.id, staff or "", why.at.isoformat(), f"#{n}")
        taken.add(eid)
        feed.append((kind, person, eid, why.at, payload(tag, staff, why)))
    insert_changes(conn, feed)
    return len(feed)


def set_person_tags(conn: Connection, tag: TagRef, persons: Sequence[str], *, add: bool, why: Why) -> int:
    """Add (or remove) ``tag`` at person level for each of ``persons``; returns how many changed."""
    wanted = list(dict.fromkeys(persons))
    held: set[str] = set()
    for part in _chunks(wanted):
        held.update(
            conn.execute(
                select(person_tags.c.person_id).where(person_tags.c.tag_id == tag.id, person_tags.c.person_id.in_(part))
            ).scalars()
        )
    todo = [p for p in wanted if (p not in held) == add]
    if not todo:
        return 0
    if add:
        bulk_insert(
            conn,
            person_tags,
            ("person_id", "tag_id", "tagged_at", "tagged_by", "reason", "source"),
            [(p, tag.id, why.at, why.by, why.reason, why.source) for p in todo],
        )
    else:
        for part in _chunks(todo):
            conn.execute(delete(person_tags).where(person_tags.c.tag_id == tag.id, person_tags.c.person_id.in_(part)))
    kind = "tag_added" if add else "tag_removed"
    return write_changes(conn, [(kind, p, tag, None, why) for p in todo])


def set_relation_tags(conn: Connection, tag: TagRef, relations: Sequence[Relation], *, add: bool, why: Why) -> int:
    """Add (or remove) ``tag`` on each of ``relations``; returns how many changed."""
    wanted = list({(r.external_userid, r.staff_userid): r for r in relations}.values())
    held: set[tuple[str, str]] = set()
    key = tuple_(relation_tags.c.external_userid, relation_tags.c.staff_userid)
    for part in _chunks(wanted):
        rows = conn.execute(
            select(relation_tags.c.external_userid, relation_tags.c.staff_userid).where(
                relation_tags.c.tag_id == tag.id, key.in_([(r.external_userid, r.staff_userid) for r in part])
            )
        )
        held.update((e, s) for e, s in rows)
    todo = [r for r in wanted if ((r.external_userid, r.staff_userid) not in held) == add]
    if not todo:
        return 0
    if add:
        bulk_insert(
            conn,
            relation_tags,
            ("external_userid", "staff_userid", "tag_id", "tagged_at", "tagged_by", "reason", "source"),
            [(r.external_userid, r.staff_userid, tag.id, why.at, why.by, why.reason, why.source) for r in todo],
        )
    else:
        for r in todo:
            conn.execute(
                delete(relation_tags).where(
                    relation_tags.c.tag_id == tag.id,
                    relation_tags.c.external_userid == r.external_userid,
                    relation_tags.c.staff_userid == r.staff_userid,
                )
            )
    kind = "tag_added" if add else "tag_removed"
    return write_changes(conn, [(kind, r.person_id, tag, r.staff_userid, why) for r in todo])


def holders(conn: Connection, tag: TagRef) -> tuple[list[str], list[Relation]]:
    """Who holds ``tag``: persons (person level) and relations (with their current person)."""
    from siyu.store.ops.schema import staff_relations

    persons = list(conn.execute(select(person_tags.c.person_id).where(person_tags.c.tag_id == tag.id)).scalars())
    rels = [
        Relation(e, s, p)
        for e, s, p in conn.execute(
            select(relation_tags.c.external_userid, relation_tags.c.staff_userid, staff_relations.c.person_id)
            .join(
                staff_relations,
                and_(
                    staff_relations.c.external_userid == relation_tags.c.external_userid,
                    staff_relations.c.staff_userid == relation_tags.c.staff_userid,
                ),
            )
            .where(relation_tags.c.tag_id == tag.id)
        )
    ]
    return persons, rels


def move_person_tags(conn: Connection, merged_into: Mapping[str, str], at: Mapping[str, datetime]) -> int:
    """Person merges: person-level tags of merged persons move to their survivors.

    A survivor gains each tag it did not hold, with a ``tag_added`` change (``by`` = ``merge``,
    the reason naming the merged person, the original row's source); rows of tags it already
    held are dropped. Relation tags need nothing: they follow their relation. Returns the gains.
    """
    if not merged_into:
        return 0
    sources = list(merged_into)
    rows: list[Any] = []
    for part in _chunks(sources):
        rows += conn.execute(
            select(person_tags, tags.c.name, tags.c.group_name, tags.c.kind)
            .join(tags, tags.c.id == person_tags.c.tag_id)
            .where(person_tags.c.person_id.in_(part))
            .order_by(person_tags.c.person_id, person_tags.c.tag_id)
        ).all()
    if not rows:
        return 0
    roots = sorted(set(merged_into.values()))
    held: set[tuple[str, str]] = set()
    for part in _chunks(roots):
        held.update(
            (p, t)
            for p, t in conn.execute(
                select(person_tags.c.person_id, person_tags.c.tag_id).where(person_tags.c.person_id.in_(part))
            )
        )
    gained: list[tuple[str, str, str, TagRef, Why]] = []
    for row in rows:
        root = merged_into[row.person_id]
        if (root, row.tag_id) not in held:
            held.add((root, row.tag_id))
            why = Why("merge", f"merged from {row.person_id}", row.source or "manual", at[row.person_id])
            gained.append(
                (row.person_id, root, row.tag_id, TagRef(row.tag_id, row.name, row.group_name, row.kind), why)
            )
    for part in _chunks(sources):
        conn.execute(delete(person_tags).where(person_tags.c.person_id.in_(part)))
    if gained:
        bulk_insert(
            conn,
            person_tags,
            ("person_id", "tag_id", "tagged_at", "tagged_by", "reason", "source"),
            [(root, tag_id, why.at, why.by, why.reason, why.source) for _, root, tag_id, _, why in gained],
        )
    return write_changes(conn, [("tag_added", root, ref, None, why) for _, root, _, ref, why in gained])
