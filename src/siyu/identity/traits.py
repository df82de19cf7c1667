"""Current traits of a person: per-trait merge strategies and the trait-change feed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, tuple_

from siyu.ids import derived_id
from siyu.store.ops.schema import changes, traits
from siyu.store.ops.upsert import upsert

TraitUpdate = tuple[str, str, Any, datetime, str]  # person_id, key, value, ts, message_id


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


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
    for i in range(0, len(keys), 2000):
        rows = conn.execute(
            select(traits.c.person_id, traits.c.key, traits.c.value, traits.c.updated_at).where(
                tuple_(traits.c.person_id, traits.c.key).in_(keys[i : i + 2000])
            )
        )
        for p, k, v, at in rows:
            current[(p, k)] = (v, _utc(at))
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
    upsert(conn, traits, upserts, ["person_id", "key"], ["value", "updated_at"])
    if removals:
        conn.execute(delete(traits).where(tuple_(traits.c.person_id, traits.c.key).in_(removals)))
    feed = []
    for p, k in changed:
        old_value = before.get((p, k), (None, None))[0]
        new_value = current[(p, k)][0]
        if old_value is None and new_value is None:
            continue
        message_id, at = last_message[(p, k)]
        feed.append(
            {
                "kind": "trait_changed",
                "person_id": p,
                "event_id": derived_id("trait", message_id, p, k),
                "occurred_at": at,
                "payload": {"key": k, "old": old_value, "new": new_value, "message_id": message_id},
            }
        )
    if feed:
        conn.execute(changes.insert(), feed)
    return len(feed)


def merge_traits(conn: Connection, source: str, target: str, strategies: Mapping[str, str]) -> None:
    """Fold ``source``'s traits into ``target``'s (per-trait strategy), then drop ``source``'s."""
    rows = conn.execute(
        select(traits.c.person_id, traits.c.key, traits.c.value, traits.c.updated_at).where(
            traits.c.person_id.in_([source, target])
        )
    ).all()
    mine = {k: (v, _utc(at)) for p, k, v, at in rows if p == target}
    merged = []
    feed = []
    for p, k, v, at in rows:
        if p != source:
            continue
        old = mine.get(k)
        if old is None or wins(strategies.get(k, "latest"), v, _utc(at), old[0], old[1]):
            merged.append({"person_id": target, "key": k, "value": v, "updated_at": _utc(at)})
            if old is None or old[0] != v:
                feed.append(
                    {
                        "kind": "trait_changed",
                        "person_id": target,
                        "event_id": derived_id("trait-merge", source, target, k),
                        "occurred_at": _utc(at),
                        "payload": {"key": k, "old": None if old is None else old[0], "new": v, "merged_from": source},
                    }
                )
    conn.execute(delete(traits).where(traits.c.person_id == source))
    upsert(conn, traits, merged, ["person_id", "key"], ["value", "updated_at"])
    if feed:
        conn.execute(changes.insert(), feed)
