"""Current traits of a person: per-trait merge strategies and the trait-change feed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, tuple_

from siyu.ids import derived_id
from siyu.store.feed import Change, insert_changes
from siyu.store.ops.schema import traits
from siyu.store.ops.upsert import json_text, sqlite_insert_many, sqlite_texts
from siyu.timeutil import as_utc

TraitUpdate = tuple[str, str, Any, datetime, str]  # person_id, key, value, ts, message_id

# Built once so SQLAlchemy's statement cache serves every batch; the IN list expands at execution.
_TRAITS_OF = select(traits.c.person_id, traits.c.key, traits.c.value, traits.c.updated_at).where(
    traits.c.person_id.in_(bindparam("pids", expanding=True))
)


def upsert_traits(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or replace trait rows (``person_id, key, value, updated_at``) with one raw statement,
    in primary-key order (:func:`write_trait_rows`)."""
    if rows:
        ordered = sorted(rows, key=lambda r: (r["person_id"], r["key"]))
        write_trait_rows(conn, [(r["person_id"], r["key"], r["value"], r["updated_at"]) for r in ordered])


_SCALARS = (str, int)  # not float: 0.0 and -0.0 are equal keys with different texts


def write_trait_rows(
    conn: Connection, rows: Sequence[tuple[str, str, Any, datetime | str]], *, stamps_as_text: bool = False
) -> None:
    """Insert or replace trait rows ``(person_id, key, value, updated_at)``, given in primary-key order.

    SQLAlchemy's per-row JSON and date processing dominated large identify batches; values are
    serialised here as its JSON type stores them (``json.dumps``: :func:`json_text`; each distinct
    scalar once), dates as SQLite stores them. Primary-key order is several times faster than a
    random one on a large table (B-tree pages shared). ``stamps_as_text``: on SQLite, the times
    are given as that text already (:func:`~siyu.store.ops.upsert.micros_texts`).
    """
    if not rows:
        return
    pg = conn.dialect.name == "postgresql"
    stamps = [r[3] for r in rows]
    if not pg and not stamps_as_text:  # as text, each distinct time converted once (a profile's traits share theirs)
        stamps = sqlite_texts(stamps)
    texts: dict[tuple[type, Any], str] = {}

    def text(value: Any) -> str:
        if not isinstance(value, _SCALARS):
            return json_text(value)
        memo = (value.__class__, value)
        found = texts.get(memo)
        if found is None:
            found = texts[memo] = json_text(value)
        return found

    values = [(p, k, text(v), at) for (p, k, v, _), at in zip(rows, stamps, strict=True)]
    head = "INSERT INTO traits (person_id, key, value, updated_at) VALUES "
    upsert = " ON CONFLICT (person_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
    if pg:
        conn.exec_driver_sql(f"{head}(%s, %s, CAST(%s AS JSON), %s){upsert}", values)
    else:  # 50 rows a statement, applied in order as one a statement would be (SQLite's
        # CAST(… AS JSON) is NUMERIC: the text goes in as it is)
        sqlite_insert_many(conn, head, "(?, ?, ?, ?)", 4, values, upsert)


def wins(strategy: str, new: Any, new_at: datetime, old: Any, old_at: datetime) -> bool:
    """Whether ``new`` (seen at ``new_at``) replaces ``old`` under ``strategy``."""
    if strategy == "first":
        return new_at < old_at
    if strategy in ("max", "min"):
        try:
            return bool(new > old) if strategy == "max" else bool(new < old)
        except TypeError:
            return new_at >= old_at
    return new_at >= old_at  # latest


def apply_trait_updates(conn: Connection, updates: Iterable[TraitUpdate], strategies: Mapping[str, str]) -> int:
    """Apply trait values from identify messages; writes a ``trait_changed`` change per real change.

    A ``None`` value removes the trait. Returns the number of traits changed.
    """
    pending = list(updates)
    if not pending:
        return 0
    wanted = {(p, k) for p, k, *_ in pending}
    current: dict[tuple[str, str], tuple[Any, datetime]] = {}
    keys = list(wanted)
    people = list({p for p, _ in keys})
    for i in range(0, len(people), 2000):
        rows = conn.execute(_TRAITS_OF, {"pids": people[i : i + 2000]})
        for p, k, v, at in rows:
            if (p, k) in wanted:
                current[(p, k)] = (v, as_utc(at))
    before = dict(current)
    last_message: dict[tuple[str, str], tuple[str, datetime]] = {}
    for person_id, key, value, at, message_id in pending:
        old = current.get((person_id, key))
        if old is None or wins(strategies.get(key, "latest"), value, at, old[0], old[1]):
            current[(person_id, key)] = (value, at)
            last_message[(person_id, key)] = (message_id, at)
    changed = [k for k in last_message if k not in before or before[k][0] != current[k][0]]
    upserts = [
        {"person_id": p, "key": k, "value": current[(p, k)][0], "updated_at": current[(p, k)][1]}
        for p, k in last_message
        if current[(p, k)][0] is not None
    ]
    removals = [(p, k) for p, k in last_message if current[(p, k)][0] is None]
    upsert_traits(conn, upserts)
    if removals:
        conn.execute(delete(traits).where(tuple_(traits.c.person_id, traits.c.key).in_(removals)))
    feed: list[Change] = []
    for p, k in changed:
        old_value = before.get((p, k), (None, None))[0]
        new_value = current[(p, k)][0]
        if old_value is None and new_value is None:
            continue
        message_id, at = last_message[(p, k)]
        payload = {"key": k, "old": old_value, "new": new_value, "message_id": message_id}
        feed.append(("trait_changed", p, derived_id("trait", message_id, p, k), at, payload))
    insert_changes(conn, feed)
    return len(feed)


def merge_traits(conn: Connection, merged_into: Mapping[str, str], strategies: Mapping[str, str]) -> None:
    """Fold the traits of merged persons into their survivors (per-trait strategy).

    ``merged_into`` maps each merged person to its final survivor. The strategies decide by
    timestamp or value, so the order of the merges does not matter. Every value a survivor
    gains is written to the change feed as a ``trait_changed`` (with ``merged_from``).
    """
    if not merged_into:
        return
    everyone = [*merged_into, *set(merged_into.values())]
    rows: list[Any] = []
    for i in range(0, len(everyone), 2000):
        rows += conn.execute(
            select(traits.c.person_id, traits.c.key, traits.c.value, traits.c.updated_at).where(
                traits.c.person_id.in_(everyone[i : i + 2000])
            )
        ).all()
    before = {(p, k): (v, as_utc(at)) for p, k, v, at in rows if p not in merged_into}
    current = dict(before)
    winner: dict[tuple[str, str], str] = {}
    for p, k, v, at in rows:
        root = merged_into.get(p)
        if root is None:
            continue
        old = current.get((root, k))
        if old is None or wins(strategies.get(k, "latest"), v, as_utc(at), old[0], old[1]):
            current[(root, k)] = (v, as_utc(at))
            winner[(root, k)] = p
    changed = [key for key in winner if before.get(key, (None, None))[0] != current[key][0] or key not in before]
    sources = list(merged_into)
    for i in range(0, len(sources), 2000):
        conn.execute(delete(traits).where(traits.c.person_id.in_(sources[i : i + 2000])))
    upsert_traits(
        conn,
        [{"person_id": r, "key": k, "value": current[(r, k)][0], "updated_at": current[(r, k)][1]} for r, k in winner],
    )
    feed: list[Change] = [
        (
            "trait_changed",
            root,
            derived_id("trait-merge", winner[(root, k)], root, k),
            current[(root, k)][1],
            {
                "key": k,
                "old": before[(root, k)][0] if (root, k) in before else None,
                "new": current[(root, k)][0],
                "merged_from": winner[(root, k)],
            },
        )
        for root, k in changed
    ]
    insert_changes(conn, feed)
