"""Reading, exporting and erasing one person."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, Text, cast, delete, func, or_, select, update

from siyu.config import IDENTITY_TYPES
from siyu.identity.normalize import IdentityScreen, IdentityValueError
from siyu.store.events import EventStore
from siyu.store.feed import WATERMARK, void_changes_of
from siyu.store.ops.schema import (
    erasures,
    group_members,
    identities,
    identity_merges,
    person_tags,
    persons,
    relation_tags,
    segments,
    staff_relations,
    traits,
)
from siyu.store.state import forget_persons
from siyu.tags.view import person_tag_view
from siyu.timeutil import as_utc


class PersonNotFound(LookupError):
    """No person with that id (or identity)."""


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None


def resolve_person_id(engine: Engine, ref: str, *, screen: IdentityScreen | None = None) -> str:
    """The surviving person id for ``ref``: a person id, or ``type:value`` of an identity.

    With ``screen`` the value is normalised as on ingest (``phone:138 0013 8000`` finds
    ``+8613800138000``; e-mail is case-insensitive).
    """
    with engine.connect() as conn:
        if ":" in ref:
            id_type, _, value = ref.partition(":")
            if screen is not None and id_type in IDENTITY_TYPES:
                try:
                    value = screen.clean(id_type, value) or value
                except IdentityValueError as exc:
                    raise PersonNotFound(f"no person has identity {ref}: {exc}") from exc
            row = conn.execute(
                select(identities.c.person_id).where(identities.c.type == id_type, identities.c.value == value)
            ).first()
            if row is None:
                raise PersonNotFound(f"no person has identity {ref}")
            return str(row[0])
        row = conn.execute(select(persons.c.id, persons.c.merged_into).where(persons.c.id == ref)).first()
        if row is None:
            raise PersonNotFound(f"no person {ref}")
        return str(row.merged_into or row.id)


def _row(row: Any) -> dict[str, Any]:
    # Mapping keys are SQLAlchemy quoted_name objects; plain str for JSON.
    return {str(k): v for k, v in row._mapping.items()}


def _dicts(cur: Any, sql: str, aliases: list[str]) -> list[dict[str, Any]]:
    rows = cur.execute(sql, [aliases]).fetchall()
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def get_profile(engine: Engine, store: EventStore, person_id: str) -> dict[str, Any]:
    """The profile of a (surviving) person: identities, traits, activity, orders, owner."""
    with engine.connect() as conn:
        person = conn.execute(select(persons).where(persons.c.id == person_id)).first()
        if person is None:
            raise PersonNotFound(f"no person {person_id}")
        ids = conn.execute(
            select(identities.c.type, identities.c.value, identities.c.first_seen)
            .where(identities.c.person_id == person_id)
            .order_by(identities.c.type, identities.c.value)
        ).all()
        trait_rows = conn.execute(
            select(traits.c.key, traits.c.value, traits.c.updated_at).where(traits.c.person_id == person_id)
        ).all()
        merged_from = [r[0] for r in conn.execute(select(persons.c.id).where(persons.c.merged_into == person_id))]
        tag_view = person_tag_view(conn, person_id)
    aliases = [person_id, *merged_from]
    cur = store.cursor()
    summary = cur.execute(
        """SELECT count(*) FILTER (WHERE paid_at IS NOT NULL AND status NOT IN ('created', 'cancelled')),
                  coalesce(sum(amount_fen - refund_fen)
                           FILTER (WHERE paid_at IS NOT NULL AND status NOT IN ('created', 'cancelled')), 0),
                  arg_max(order_id, paid_at), max(paid_at), arg_max(amount_fen, paid_at)
           FROM (SELECT * FROM orders WHERE person_id IN (SELECT unnest(?::VARCHAR[]))
                 QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY version DESC) = 1)""",
        [aliases],
    ).fetchone()
    order_count, spend, last_order_id, last_paid, last_amount = summary if summary else (0, 0, None, None, None)
    return {
        "id": person_id,
        "created_at": _iso(person.created_at),
        "first_seen": _iso(person.first_seen),
        "last_seen": _iso(person.last_seen),
        "owner_staff_id": person.owner_staff_id,
        "merged_from": merged_from,
        "identities": [{"type": t, "value": v, "first_seen": _iso(at)} for t, v, at in ids],
        "traits": {k: v for k, v, _ in trait_rows},
        "tags": tag_view,
        "order_count": int(order_count or 0),
        "total_spend_fen": int(spend or 0),
        "last_order": (
            {"order_id": last_order_id, "paid_at": _iso(last_paid), "amount_fen": int(last_amount)}
            if last_order_id
            else None
        ),
    }


class BadCursor(ValueError):
    """A timeline cursor that was not made by :func:`timeline`."""


def _encode_cursor(ts: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts.isoformat(), event_id])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, event_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(ts), str(event_id)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise BadCursor("cursor: not a cursor returned by this API") from exc


def timeline(store: EventStore, aliases: list[str], *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """Events of a person, newest first, ``limit`` at a time.

    ``cursor`` is the ``next_cursor`` of the previous page; paging is by (timestamp, event id),
    so events sharing a timestamp are neither skipped nor repeated.
    """
    limit = max(1, min(limit, 500))
    after = _decode_cursor(cursor) if cursor else None
    cur = store.cursor()
    rows = cur.execute(
        """SELECT event_id, name, message_type, ts, properties, source, s.identity_type, s.identity_value
           FROM events LEFT JOIN identity_sets s ON s.set_id = identity_set
           WHERE person_id IN (SELECT unnest(?::VARCHAR[]))
             AND (?::TIMESTAMPTZ IS NULL OR ts < ? OR (ts = ? AND event_id < ?))
           ORDER BY ts DESC, event_id DESC LIMIT ?""",
        [aliases, *(4 * [None] if after is None else [after[0], after[0], after[0], after[1]]), limit + 1],
    ).fetchall()
    items = [
        {
            "event_id": r[0],
            "name": r[1],
            "type": r[2],
            "timestamp": _iso(r[3]),
            "properties": _json(r[4]),
            "source": r[5],
            "identity": {"type": r[6], "value": r[7]} if r[6] else None,
        }
        for r in rows[:limit]
    ]
    last = rows[limit - 1] if len(rows) > limit else None
    return {"items": items, "next_cursor": _encode_cursor(last[3], last[0]) if last else None}


def export_person(engine: Engine, store: EventStore, person_id: str) -> dict[str, Any]:
    """Everything held about a person, as JSON-ready data (PIPL access request)."""
    profile = get_profile(engine, store, person_id)
    aliases = [person_id, *profile["merged_from"]]
    with engine.connect() as conn:
        relations = [
            _row(r) for r in conn.execute(select(staff_relations).where(staff_relations.c.person_id == person_id))
        ]
        ext_ids = [r["external_userid"] for r in relations]
        tag_rows = (
            [_row(r) for r in conn.execute(select(relation_tags).where(relation_tags.c.external_userid.in_(ext_ids)))]
            if ext_ids
            else []
        )
        own_tags = [_row(r) for r in conn.execute(select(person_tags).where(person_tags.c.person_id == person_id))]
        memberships = [
            _row(r) for r in conn.execute(select(group_members).where(group_members.c.person_id == person_id))
        ]
        merges = [
            _row(r)
            for r in conn.execute(
                select(identity_merges).where(
                    or_(identity_merges.c.from_person_id.in_(aliases), identity_merges.c.into_person_id.in_(aliases))
                )
            )
        ]
    cur = store.cursor()
    events = _dicts(
        cur,
        """SELECT e.* EXCLUDE (identity_set), s.identity_type, s.identity_value, s.identities
           FROM events e LEFT JOIN identity_sets s ON s.set_id = e.identity_set
           WHERE e.person_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY e.ts""",
        aliases,
    )
    orders = _dicts(
        cur, "SELECT * FROM orders WHERE person_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY order_id, version", aliases
    )
    stays = _dicts(
        cur,
        """SELECT segment_id, entered_at, exited_at FROM segment_membership
           WHERE person_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY entered_at""",
        aliases,
    )
    with engine.connect() as conn:
        names = dict(conn.execute(select(segments.c.id, segments.c.name)).all())
    for stay in stays:
        stay["segment"] = names.get(stay["segment_id"])
    for row in events:
        row["properties"] = _json(row["properties"])
        row["identities"] = _json(row["identities"])
    data = {
        "exported_at": datetime.now(UTC).isoformat(),
        "profile": profile,
        "relations": relations,
        "relation_tags": tag_rows,
        "person_tags": own_tags,
        "group_memberships": memberships,
        "segment_memberships": stays,
        "identity_merges": merges,
        "events": events,
        "orders": orders,
    }
    return orjson.loads(orjson.dumps(data, default=str))


def erase_person(
    engine: Engine, store: EventStore, person_id: str, *, requested_by: str, compact: bool = True
) -> dict[str, int]:
    """Erase a person from both stores (PIPL deletion). Leaves an audit row with no personal data.

    Identity values of the person are also removed from other persons' events and merge log.
    With ``compact`` (the default) the event-store file is rewritten so that no deleted bytes
    remain in it; erasing many persons at once can pass ``compact=False`` and compact once.
    """
    with store.write_lock:
        with engine.begin() as conn:
            row = conn.execute(select(persons.c.id).where(persons.c.id == person_id)).first()
            if row is None:
                raise PersonNotFound(f"no person {person_id}")
            aliases = [
                person_id,
                *(r[0] for r in conn.execute(select(persons.c.id).where(persons.c.merged_into == person_id))),
            ]
            ext_ids = [
                r[0]
                for r in conn.execute(
                    select(staff_relations.c.external_userid).where(staff_relations.c.person_id.in_(aliases))
                )
            ]
            values = [v for (v,) in conn.execute(select(identities.c.value).where(identities.c.person_id.in_(aliases)))]
            counts = {
                "identities": conn.execute(delete(identities).where(identities.c.person_id.in_(aliases))).rowcount,
                "traits": conn.execute(delete(traits).where(traits.c.person_id.in_(aliases))).rowcount,
                "relation_tags": conn.execute(
                    delete(relation_tags).where(relation_tags.c.external_userid.in_(ext_ids))
                ).rowcount
                if ext_ids
                else 0,
                "person_tags": conn.execute(delete(person_tags).where(person_tags.c.person_id.in_(aliases))).rowcount,
                "relations": conn.execute(
                    delete(staff_relations).where(staff_relations.c.person_id.in_(aliases))
                ).rowcount,
                "group_memberships": conn.execute(
                    delete(group_members).where(group_members.c.person_id.in_(aliases))
                ).rowcount,
                "identity_merges": conn.execute(
                    delete(identity_merges).where(
                        or_(
                            identity_merges.c.from_person_id.in_(aliases), identity_merges.c.into_person_id.in_(aliases)
                        )
                    )
                ).rowcount,
                "changes": void_changes_of(conn, aliases, applied_upto=int(store.get_meta(WATERMARK, "0") or 0)),
                "persons": conn.execute(delete(persons).where(persons.c.id.in_(aliases))).rowcount,
            }
            _scrub_merge_log(conn, values)
            with store.transaction() as con:
                params = [aliases]
                counts["events"] = _count(con, "events", params)
                con.execute("DELETE FROM events WHERE person_id IN (SELECT unnest(?::VARCHAR[]))", params)
                counts["orders"] = _count(con, "orders", params)
                con.execute("DELETE FROM orders WHERE person_id IN (SELECT unnest(?::VARCHAR[]))", params)
                con.execute(
                    "DELETE FROM person_aliases WHERE person_id IN (SELECT unnest(?::VARCHAR[])) "
                    "OR alias_id IN (SELECT unnest(?::VARCHAR[]))",
                    [aliases, aliases],
                )
                forget_persons(con, aliases)
                counts["other_events_scrubbed"] = _scrub_events(con, values)
                conn.execute(
                    erasures.insert().values(
                        person_ref=hashlib.sha256(("siyu-erasure:" + person_id).encode()).hexdigest()[:32],
                        requested_by=requested_by[:128],
                        erased_at=datetime.now(UTC),
                        counts=counts,
                    )
                )
        if conn.dialect.name == "sqlite":
            with engine.connect() as raw:
                raw.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        store.forget_set_index()  # sets were rewritten and removed
        if compact:
            store.compact()
        else:
            store.con.execute("CHECKPOINT")
    return counts


def _scrub_events(con: Any, values: list[str]) -> int:
    """Remove erased identity values from the identity sets of *other* persons' events (e.g. after a
    refused merge), and drop the sets no event names any more (the erased person's own).

    A scrubbed set is stored under the id of its new text; the events naming it follow. Returns
    how many events of other persons named a scrubbed set.
    """
    if not values:
        return 0
    pairs = "from_json(identities, '[[\"VARCHAR\"]]')"
    # A cheap text test first, then the exact one on the parsed pairs.
    match = "(" + " OR ".join("contains(identities, ?)" for _ in values) + ")"
    match += f" AND len(list_filter({pairs}, lambda p: list_contains(?::VARCHAR[], p[2]))) > 0"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _scrubbed AS
            SELECT set_id AS old_id, md5_number(kept) AS new_id, kept AS identities,
                   CASE WHEN list_contains(?::VARCHAR[], identity_value) THEN NULL ELSE identity_type END
                       AS identity_type,
                   CASE WHEN list_contains(?::VARCHAR[], identity_value) THEN NULL ELSE identity_value END
                       AS identity_value
            FROM (SELECT *, to_json(list_filter({pairs}, lambda p: NOT list_contains(?::VARCHAR[], p[2])))::VARCHAR
                            AS kept
                  FROM identity_sets WHERE {match})""",
        [values, values, values, *values, values],
    )
    try:
        row = con.execute("SELECT count(*) FROM events WHERE identity_set IN (SELECT old_id FROM _scrubbed)").fetchone()
        con.execute("DELETE FROM identity_sets WHERE set_id IN (SELECT old_id FROM _scrubbed)")
        con.execute("""INSERT INTO identity_sets
            SELECT new_id, any_value(identity_type), any_value(identity_value), identities FROM _scrubbed
            WHERE new_id NOT IN (SELECT set_id FROM identity_sets) GROUP BY new_id, identities""")
        con.execute("UPDATE events SET identity_set = s.new_id FROM _scrubbed s WHERE events.identity_set = s.old_id")
        con.execute("""DELETE FROM identity_sets
            WHERE set_id NOT IN (SELECT identity_set FROM events WHERE identity_set IS NOT NULL)""")
    finally:
        con.execute("DROP TABLE IF EXISTS _scrubbed")
    return int(row[0]) if row else 0


def _scrub_merge_log(conn: Any, values: list[str]) -> None:
    """Remove erased identity values from other persons' merge-log rows."""
    for value in values:
        pattern = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = conn.execute(
            select(identity_merges.c.id, identity_merges.c.identities).where(
                cast(identity_merges.c.identities, Text).like(pattern, escape="\\")
            )
        ).all()
        for merge_id, ids in rows:
            kept = [pair for pair in (ids or []) if pair[1] not in values]
            if kept != ids:
                conn.execute(update(identity_merges).where(identity_merges.c.id == merge_id).values(identities=kept))


def _count(con: Any, table: str, params: list[Any]) -> int:
    row = con.execute(
        f"SELECT count(*) FROM {table} WHERE person_id IN (SELECT unnest(?::VARCHAR[]))", params
    ).fetchone()
    return int(row[0]) if row else 0


def stats(engine: Engine, store: EventStore) -> dict[str, int]:
    """Counts: persons (surviving), identities, events, orders."""
    with engine.connect() as conn:
        n_persons = conn.execute(select(func.count()).select_from(persons).where(persons.c.merged_into.is_(None)))
        person_count = int(n_persons.scalar_one())
        identity_count = int(conn.execute(select(func.count()).select_from(identities)).scalar_one())
    return {"persons": person_count, "identities": identity_count, **store.counts()}
