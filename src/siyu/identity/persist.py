"""Writing an :class:`~siyu.identity.graph.IdentityGraph`'s outcome to the ops store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, or_, select, update

from siyu.identity.graph import IdentityGraph
from siyu.identity.traits import merge_traits
from siyu.ids import derived_id
from siyu.store.ops.schema import (
    changes,
    group_members,
    identities,
    identity_merges,
    persons,
    staff_relations,
)
from siyu.store.ops.upsert import bulk_insert, sqlite_value


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def write_graph(
    conn: Connection,
    graph: IdentityGraph,
    seen: Mapping[str, tuple[datetime, datetime]],
    *,
    trait_strategies: Mapping[str, str],
    now: datetime,
) -> None:
    """Persist new persons and identities, applied and refused merges, and first/last seen.

    ``seen`` maps each (surviving) person to the (earliest, latest) timestamp of its messages.
    """
    new_rows = []
    for pid, at in graph.new_persons.items():
        root = graph.find(pid)
        first, last = seen.get(root, (at, at))
        new_rows.append((pid, now, first, last, root if root != pid else None))
    bulk_insert(conn, persons, ("id", "created_at", "first_seen", "last_seen", "merged_into"), new_rows)
    bulk_insert(
        conn,
        identities,
        ("type", "value", "person_id", "first_seen"),
        [(t, v, graph.find(pid), at) for (t, v), (pid, at) in graph.new_identities.items()],
    )
    for merge in graph.merges:
        _apply_merge(conn, merge.from_person_id, merge.into_person_id, trait_strategies)
    _log_merges(conn, graph, now)
    existing = [(pid, span) for pid, span in seen.items() if pid not in graph.new_persons]
    widen_spans(conn, existing)


def widen_spans(conn: Connection, spans: Sequence[tuple[str, tuple[datetime, datetime]]]) -> None:
    """Widen persons' first_seen / last_seen to include the given (first, last) spans."""
    if not spans:
        return
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = (
        f"UPDATE persons SET first_seen = CASE WHEN first_seen IS NULL OR first_seen > {mark} THEN {mark} "
        f"ELSE first_seen END, last_seen = CASE WHEN last_seen IS NULL OR last_seen < {mark} THEN {mark} "
        f"ELSE last_seen END WHERE id = {mark}"
    )
    rows = [(a, a, b, b, pid) for pid, (a, b) in spans]
    if conn.dialect.name != "postgresql":
        rows = [tuple(sqlite_value(v) for v in row) for row in rows]
    conn.exec_driver_sql(sql, rows)


def _apply_merge(conn: Connection, source: str, target: str, trait_strategies: Mapping[str, str]) -> None:
    """Move everything of ``source`` to ``target`` (identities, traits, relations, groups)."""
    conn.execute(update(identities).where(identities.c.person_id == source).values(person_id=target))
    conn.execute(
        update(persons).where(or_(persons.c.id == source, persons.c.merged_into == source)).values(merged_into=target)
    )
    for table in (staff_relations, group_members):
        conn.execute(update(table).where(table.c.person_id == source).values(person_id=target))
    columns = (persons.c.first_seen, persons.c.last_seen, persons.c.owner_staff_id)
    src = conn.execute(select(*columns).where(persons.c.id == source)).first()
    dst = conn.execute(select(*columns).where(persons.c.id == target)).first()
    if src is not None and dst is not None:
        firsts = [as_utc(x) for x in (src.first_seen, dst.first_seen) if x is not None]
        lasts = [as_utc(x) for x in (src.last_seen, dst.last_seen) if x is not None]
        conn.execute(
            update(persons)
            .where(persons.c.id == target)
            .values(
                first_seen=min(firsts) if firsts else None,  # type: ignore[type-var]
                last_seen=max(lasts) if lasts else None,  # type: ignore[type-var]
                owner_staff_id=dst.owner_staff_id or src.owner_staff_id,
            )
        )
    merge_traits(conn, source, target, trait_strategies)


def _log_merges(conn: Connection, graph: IdentityGraph, now: datetime) -> None:
    rows = []
    feed = []
    for merge in [*graph.merges, *graph.refusals]:
        rows.append(
            {
                "status": merge.status,
                "from_person_id": merge.from_person_id or None,
                "into_person_id": merge.into_person_id,
                "reason": merge.reason,
                "message_id": merge.message_id,
                "identities": [list(k) for k in merge.identities],
                "created_at": now,
            }
        )
        if merge.status == "applied":
            feed.append(
                {
                    "kind": "identities_merged",
                    "person_id": graph.find(merge.into_person_id),
                    "event_id": derived_id("merge", merge.from_person_id, merge.into_person_id),
                    "occurred_at": merge.at,
                    "payload": {
                        "from_person_id": merge.from_person_id,
                        "into_person_id": merge.into_person_id,
                        "reason": merge.reason,
                    },
                }
            )
    if rows:
        conn.execute(identity_merges.insert(), rows)
    if feed:
        conn.execute(changes.insert(), feed)
