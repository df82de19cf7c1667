"""The person-level tag view: what a profile shows of a person's tags."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select

from siyu.store.ops.schema import person_tags, relation_tags, staff_relations, tag_groups, tags
from siyu.timeutil import as_utc


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None


def person_tag_view(conn: Connection, person_id: str) -> list[dict[str, Any]]:
    """Tags of a (surviving) person, each with who holds it: ``staff_userid`` None = person-level."""
    held: dict[str, dict[str, Any]] = {}
    order = dict(conn.execute(select(tag_groups.c.name, tag_groups.c.position)).all())

    def entry(tag_id: str, name: str, group: str, kind: str) -> dict[str, Any]:
        return held.setdefault(tag_id, {"tag": name, "tag_id": tag_id, "group": group, "kind": kind, "holders": []})

    for r in conn.execute(
        select(person_tags, tags.c.name, tags.c.group_name, tags.c.kind)
        .join(tags, tags.c.id == person_tags.c.tag_id)
        .where(person_tags.c.person_id == person_id)
    ):
        entry(r.tag_id, r.name, r.group_name, r.kind)["holders"].append(
            {
                "staff_userid": None,
                "external_userid": None,
                "tagged_at": _iso(r.tagged_at),
                "by": r.tagged_by,
                "reason": r.reason,
                "source": r.source,
            }
        )
    for r in conn.execute(
        select(relation_tags, tags.c.name, tags.c.group_name, tags.c.kind, staff_relations.c.deleted_at)
        .join(tags, tags.c.id == relation_tags.c.tag_id)
        .join(
            staff_relations,
            and_(
                staff_relations.c.external_userid == relation_tags.c.external_userid,
                staff_relations.c.staff_userid == relation_tags.c.staff_userid,
            ),
        )
        .where(staff_relations.c.person_id == person_id)
    ):
        entry(r.tag_id, r.name, r.group_name, r.kind)["holders"].append(
            {
                "staff_userid": r.staff_userid,
                "external_userid": r.external_userid,
                "tagged_at": _iso(r.tagged_at),
                "by": r.tagged_by,
                "reason": r.reason,
                "source": r.source,
            }
        )
    out = sorted(held.values(), key=lambda t: (order.get(t["group"], 1 << 30), t["group"], t["tag"]))
    for t in out:
        t["holders"].sort(
            key=lambda h: (h["staff_userid"] is not None, h["staff_userid"] or "", h["external_userid"] or "")
        )
    return out
