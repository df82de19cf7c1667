"""Writing an :class:`~siyu.identity.graph.IdentityGraph`'s outcome to the ops store."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, bindparam, select, update

from siyu.identity.graph import IdentityGraph
from siyu.identity.traits import merge_traits
from siyu.ids import derived_id
from siyu.store.feed import Change, insert_changes
from siyu.store.ops.schema import (
    group_members,
    identities,
    identity_merges,
    persons,
    staff_relations,
)
from siyu.store.ops.upsert import (
    bulk_insert,
    bulk_load,
    micros_texts,
    remember_sqlite_texts,
    sqlite_text,
    sqlite_texts,
    sqlite_value,
)
from siyu.tags.holders import move_person_tags
from siyu.timeutil import as_utc


@dataclass(frozen=True)
class NewRows:
    """New persons and identities decided without the graph (:mod:`siyu.identity.vectorised`).

    Persons: ids with their first / last seen (µs since the epoch, UTC). Identities, per type:
    the values, their persons' ids (an object array) and when each was first seen (µs).
    """

    person_ids: list[str]
    person_first: np.ndarray
    person_last: np.ndarray
    identities: list[tuple[str, pa.Array, np.ndarray, np.ndarray]]


def write_graph(
    conn: Connection,
    graph: IdentityGraph,
    seen: Mapping[str, tuple[datetime, datetime]],
    *,
    trait_strategies: Mapping[str, str],
    now: datetime,
    new_rows: NewRows | None = None,
) -> None:
    """Persist new persons and identities, applied and refused merges, and first/last seen.

    ``seen`` maps each (surviving) person to the (earliest, latest) timestamp of its messages.
    ``new_rows`` adds persons and identities resolved outside the graph.
    """
    # On SQLite the rows are built as stored (timestamps as text), converting each distinct
    # timestamp once: a message's time recurs in its identities and its person's first/last seen.
    texts: dict[Any, Any] | None = None
    if conn.dialect.name == "sqlite":
        texts = {now: sqlite_value(now)}
        remember_sqlite_texts(itertools.chain(_stamps(graph), (t for span in seen.values() for t in span)), texts)
    person_rows = _person_rows(graph, seen, now, texts)
    identity_rows = _identity_rows(graph, texts)
    if new_rows is not None:
        person_rows, identity_rows = _with_new_rows(conn, new_rows, now, texts, person_rows, identity_rows)
    bulk_load(conn, persons, _PERSON_COLUMNS, person_rows, prepared=True)
    bulk_load(conn, identities, _IDENTITY_COLUMNS, identity_rows, prepared=True)
    _apply_merges(conn, graph, trait_strategies, now)
    _log_merges(conn, graph, now)
    existing = [(pid, span) for pid, span in seen.items() if pid not in graph.new_persons]
    widen_spans(conn, existing)


_PERSON_COLUMNS = ("id", "created_at", "first_seen", "last_seen", "merged_into")
_IDENTITY_COLUMNS = ("type", "value", "person_id", "first_seen")


def _stamps(graph: IdentityGraph) -> Iterator[datetime]:
    """When the new identities were first seen (persons' own times are their sightings' spans)."""
    for _, at in graph.new_identities.values():
        yield at


def _person_rows(
    graph: IdentityGraph,
    seen: Mapping[str, tuple[datetime, datetime]],
    now: datetime,
    texts: dict[Any, Any] | None,
) -> list[tuple[Any, ...]]:
    """Rows of the new persons; timestamps as their SQLite text in ``texts`` when given."""
    parent, find = graph.parent, graph.find
    rows: list[tuple[Any, ...]] = []
    for pid, at in graph.new_persons.items():
        root = find(pid) if pid in parent else pid
        first, last = seen.get(root) or (at, at)
        merged = root if root != pid else None
        if texts is None:
            rows.append((pid, now, first, last, merged))
        else:
            rows.append((pid, sqlite_text(now, texts), sqlite_text(first, texts), sqlite_text(last, texts), merged))
    # In id order the primary key grows at its end. Ids from IdSource are nearly sorted already,
    # which Python's sort detects in one linear pass.
    rows.sort(key=itemgetter(0))
    return rows


def _identity_rows(graph: IdentityGraph, texts: dict[Any, Any] | None) -> list[tuple[Any, ...]]:
    """New identity rows with their final person, in primary-key order.

    In key order the primary-key B-tree grows at its end instead of at random pages. Sorting each
    type's rows by value alone compares plain strings (Python's fast path), several times faster
    than sorting (type, value) tuples; code-point order is also SQLite's BINARY order of UTF-8.
    Timestamps as their SQLite text in ``texts`` when given.
    """
    parent, find = graph.parent, graph.find
    by_type: dict[str, list[tuple[Any, ...]]] = {}
    for (t, v), (pid, at) in graph.new_identities.items():
        if pid in parent:
            pid = find(pid)
        rows = by_type.get(t)
        if rows is None:
            rows = by_type[t] = []
        if texts is not None:
            text_ = texts.get(at)
            at = sqlite_value(at) if text_ is None else text_
        rows.append((t, v, pid, at))
    out: list[tuple[Any, ...]] = []
    for t in sorted(by_type):
        rows = by_type[t]
        rows.sort(key=itemgetter(1))
        out += rows
    return out


def _with_new_rows(
    conn: Connection,
    new: NewRows,
    now: datetime,
    texts: dict[Any, Any] | None,
    person_rows: list[tuple[Any, ...]],
    identity_rows: list[tuple[Any, ...]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The graph's rows with ``new``'s added, both still in primary-key order.

    ``new``'s rows are sorted with Arrow; appended to the graph's sorted rows they form two sorted
    runs, which Python's sort merges in one linear pass.
    """
    dialect = conn.dialect.name
    created = sqlite_text(now, texts) if texts is not None else now
    people = list(
        zip(
            new.person_ids,
            itertools.repeat(created),
            micros_texts(new.person_first, dialect),
            micros_texts(new.person_last, dialect),
            itertools.repeat(None),
            strict=False,
        )
    )
    if person_rows:
        people = person_rows + people
        people.sort(key=itemgetter(0))
    by_type: dict[str, list[tuple[Any, ...]]] = {}
    for row in identity_rows:
        by_type.setdefault(row[0], []).append(row)
    for t, values, owners, first in new.identities:
        order = pc.sort_indices(values)
        at = order.to_numpy()
        rows = list(
            zip(
                itertools.repeat(t),
                values.take(order).to_pylist(),
                owners[at].tolist(),
                micros_texts(first[at], dialect),
                strict=False,
            )
        )
        have = by_type.get(t)
        if have:
            rows = have + rows
            rows.sort(key=itemgetter(1))
        by_type[t] = rows
    out: list[tuple[Any, ...]] = []
    for t in sorted(by_type):
        out += by_type[t]
    return people, out


def widen_spans(conn: Connection, spans: Sequence[tuple[str, tuple[datetime, datetime]]]) -> None:
    """Widen persons' first_seen / last_seen to include the given (first, last) spans.

    Updated in primary-key order: neighbouring updates then share B-tree pages (about 3× faster
    than a random order on a large table)."""
    if not spans:
        return
    spans = sorted(spans, key=itemgetter(0))
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = (
        f"UPDATE persons SET first_seen = CASE WHEN first_seen IS NULL OR first_seen > {mark} THEN {mark} "
        f"ELSE first_seen END, last_seen = CASE WHEN last_seen IS NULL OR last_seen < {mark} THEN {mark} "
        f"ELSE last_seen END WHERE id = {mark}"
    )
    if conn.dialect.name == "postgresql":
        rows = [(first, first, last, last, pid) for pid, (first, last) in spans]
    else:  # raw SQLite statements take timestamps as text: converted in one vectorised pass
        stamps = sqlite_texts([t for _, span in spans for t in span])
        rows = [(a, a, b, b, pid) for (pid, _), a, b in zip(spans, stamps[0::2], stamps[1::2], strict=True)]
    conn.exec_driver_sql(sql, rows)


def _apply_merges(conn: Connection, graph: IdentityGraph, trait_strategies: Mapping[str, str], now: datetime) -> None:
    """Move everything of merged (pre-existing) persons to their survivors, in a few statements.

    Persons created and merged within this batch need nothing: their rows were written with the
    final survivor already.
    """
    merged_into = {
        m.from_person_id: graph.find(m.from_person_id)
        for m in graph.merges
        if m.from_person_id not in graph.new_persons
    }
    if not merged_into:
        return
    pairs = [{"b_src": src, "b_root": root} for src, root in merged_into.items()]
    src: Any = bindparam("b_src")
    root: Any = bindparam("b_root")
    for table in (identities, staff_relations, group_members):
        conn.execute(update(table).where(table.c.person_id == src).values(person_id=root), pairs)
    conn.execute(update(persons).where(persons.c.id == src).values(merged_into=root), pairs)
    conn.execute(update(persons).where(persons.c.merged_into == src).values(merged_into=root), pairs)
    # Survivors take the widest first/last seen, and an owner if they had none.
    involved = [*merged_into, *set(merged_into.values())]
    rows = {}
    for i in range(0, len(involved), 2000):
        for r in conn.execute(
            select(persons.c.id, persons.c.first_seen, persons.c.last_seen, persons.c.owner_staff_id).where(
                persons.c.id.in_(involved[i : i + 2000])
            )
        ):
            rows[r.id] = r
    survivors: dict[str, dict[str, Any]] = {}
    for src_id, root_id in merged_into.items():
        a, b = rows.get(src_id), rows.get(root_id)
        if a is None or b is None:
            continue
        s = survivors.setdefault(root_id, {"b_root": root_id, "first": None, "last": None, "owner": b.owner_staff_id})
        firsts = [t for t in (s["first"], as_utc(b.first_seen), as_utc(a.first_seen)) if t is not None]
        lasts = [t for t in (s["last"], as_utc(b.last_seen), as_utc(a.last_seen)) if t is not None]
        s["first"] = min(firsts, default=None)
        s["last"] = max(lasts, default=None)
        s["owner"] = s["owner"] or a.owner_staff_id
    if survivors:
        conn.execute(
            update(persons)
            .where(persons.c.id == root)
            .values(first_seen=bindparam("first"), last_seen=bindparam("last"), owner_staff_id=bindparam("owner")),
            list(survivors.values()),
        )
        # A survivor that takes a merged person's owner says so, like every other owner change.
        insert_changes(
            conn,
            [
                (
                    "owner_changed",
                    root_id,
                    derived_id(
                        "owner-merge",
                        root_id,
                        str(s["owner"]),
                        *sorted(k for k, v in merged_into.items() if v == root_id),
                    ),
                    now,
                    {"old": rows[root_id].owner_staff_id, "new": s["owner"], "reason": "merged"},
                )
                for root_id, s in survivors.items()
                if s["owner"] != rows[root_id].owner_staff_id
            ],
        )
    merge_traits(conn, merged_into, trait_strategies)
    # Person-level tags move to the survivor (a tag_added for each it gains), at the merge's time.
    merged_at = {m.from_person_id: m.at for m in graph.merges if m.from_person_id in merged_into}
    move_person_tags(conn, merged_into, merged_at)


def _log_merges(conn: Connection, graph: IdentityGraph, now: datetime) -> None:
    """Write applied and refused merges to the merge log, and applied ones to the change feed.

    Tens of thousands of rows in a large import: written with :func:`bulk_insert`, JSON values
    serialised here exactly as SQLAlchemy's JSON type does (``json.dumps``).
    """
    rows = []
    feed: list[Change] = []
    find = graph.find
    for merge in [*graph.merges, *graph.refusals]:
        rows.append(
            (
                merge.status,
                merge.from_person_id or None,
                merge.into_person_id,
                merge.reason,
                merge.message_id,
                json.dumps([list(k) for k in merge.identities]),
                now,
            )
        )
        if merge.status == "applied":
            payload = {
                "from_person_id": merge.from_person_id,
                "into_person_id": merge.into_person_id,
                "reason": merge.reason,
            }
            feed.append(
                (
                    "identities_merged",
                    find(merge.into_person_id),
                    derived_id("merge", merge.from_person_id, merge.into_person_id),
                    merge.at,
                    payload,
                )
            )
    bulk_insert(conn, identity_merges, _MERGE_COLUMNS, rows)
    insert_changes(conn, feed)


_MERGE_COLUMNS = ("status", "from_person_id", "into_person_id", "reason", "message_id", "identities", "created_at")
