"""Tag groups and tags (the tag library), connection-level: the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from siyu.ids import new_id
from siyu.store.ops.schema import event_tag_rules, person_tags, relation_tags, tag_groups, tags
from siyu.tags.errors import TagConflict, TagError, TagNotFound, check_name, check_text
from siyu.tags.holders import TagRef

KINDS = ("manual", "rule", "event")
RULE_LIMIT = 4000
#: WeCom's corp tag library holds at most 3,000 tags; siyu keeps the same ceiling.
MAX_TAGS = 3000


def _iso(value: datetime | None) -> str | None:
    from siyu.timeutil import as_utc

    value = as_utc(value)
    return value.isoformat() if value else None


def list_groups(conn: Connection) -> list[dict[str, Any]]:
    """Groups in display order, with how many tags each has."""
    counts: dict[str, int] = dict(
        conn.execute(select(tags.c.group_name, func.count()).group_by(tags.c.group_name)).all()
    )
    rows = conn.execute(select(tag_groups).order_by(tag_groups.c.position, tag_groups.c.name)).all()
    return [
        {"name": r.name, "position": r.position, "tags": int(counts.get(r.name, 0)), "created_at": _iso(r.created_at)}
        for r in rows
    ]


def group_exists(conn: Connection, name: str) -> bool:
    """Whether a group of that name exists."""
    return conn.execute(select(tag_groups.c.name).where(tag_groups.c.name == name)).first() is not None


def create_group(conn: Connection, name: str, at: datetime) -> dict[str, Any]:
    """Create a group at the end of the display order."""
    name = check_name("group", name)
    if group_exists(conn, name):
        raise TagConflict(f"标签组已存在 group {name!r} already exists")
    position = conn.execute(select(func.coalesce(func.max(tag_groups.c.position), -1))).scalar_one() + 1
    conn.execute(tag_groups.insert().values(name=name, position=position, created_at=at))
    return {"name": name, "position": position, "tags": 0, "created_at": _iso(at)}


def _group(conn: Connection, name: str) -> dict[str, Any]:
    return next(g for g in list_groups(conn) if g["name"] == name)


def rename_group(conn: Connection, old: str, new: str) -> dict[str, Any]:
    """Rename a group; its tags move with it (who holds them does not change, so no change is written)."""
    new = check_name("new name", new)
    if not isinstance(old, str) or not group_exists(conn, old):
        raise TagNotFound(f"未知标签组 unknown group {str(old)[:64]!r} (siyu tag groups lists them)")
    if new == old:
        return _group(conn, old)
    if group_exists(conn, new):
        raise TagConflict(f"标签组已存在 group {new!r} already exists")
    row = conn.execute(select(tag_groups).where(tag_groups.c.name == old)).one()
    conn.execute(tag_groups.insert().values(name=new, position=row.position, created_at=row.created_at))
    conn.execute(update(tags).where(tags.c.group_name == old).values(group_name=new))
    conn.execute(delete(tag_groups).where(tag_groups.c.name == old))
    return _group(conn, new)


def delete_group(conn: Connection, name: str) -> None:
    """Delete an empty group (delete its tags, or move them to another group, first)."""
    if not isinstance(name, str) or not group_exists(conn, name):
        raise TagNotFound(f"未知标签组 unknown group {str(name)[:64]!r} (siyu tag groups lists them)")
    held = conn.execute(select(tags.c.name).where(tags.c.group_name == name).order_by(tags.c.name)).scalars().all()
    if held:
        shown = ", ".join(held[:10]) + (f" … ({len(held)} in all)" if len(held) > 10 else "")
        raise TagConflict(
            f"标签组仍有 {len(held)} 个标签，请先删除或移到其他组 / group {name!r} still has {len(held)} tag(s): "
            f"{shown}; delete them or move them to another group first (siyu tag rename TAG TAG --group OTHER)"
        )
    conn.execute(delete(tag_groups).where(tag_groups.c.name == name))


def check_unused(conn: Connection, name: str) -> None:
    """Refuse (:class:`TagConflict`) a tag name already used in any group."""
    clash = conn.execute(select(tags.c.group_name).where(tags.c.name == name)).first()
    if clash is not None:
        raise TagConflict(
            f"标签名已被使用 tag name {name!r} is already used in group {clash.group_name!r}: "
            "names are unique across groups"
        )


def tag_named(conn: Connection, name: object) -> TagRef:
    """The tag of that name (names are unique across groups), or :class:`TagNotFound`."""
    if not isinstance(name, str) or not name.strip():
        raise TagError("tag: 须为非空文本 must be a non-empty text")
    row = conn.execute(
        select(tags.c.id, tags.c.name, tags.c.group_name, tags.c.kind).where(tags.c.name == name.strip())
    ).first()
    if row is None:
        raise TagNotFound(f"未知标签 unknown tag {name.strip()[:64]!r}: create it first (siyu tag create)")
    return TagRef(row.id, row.name, row.group_name, row.kind)


def list_tags(conn: Connection, group: str | None = None) -> list[dict[str, Any]]:
    """Tags (of one group, or all) in group display order then name, with holder counts."""
    if group is not None and not group_exists(conn, group):
        raise TagNotFound(f"未知标签组 unknown group {group!r}")
    persons: dict[str, int] = dict(
        conn.execute(select(person_tags.c.tag_id, func.count()).group_by(person_tags.c.tag_id)).all()
    )
    relations: dict[str, int] = dict(
        conn.execute(select(relation_tags.c.tag_id, func.count()).group_by(relation_tags.c.tag_id)).all()
    )
    query = (
        select(tags, tag_groups.c.position)
        .join(tag_groups, tag_groups.c.name == tags.c.group_name, isouter=True)
        .order_by(tag_groups.c.position, tags.c.group_name, tags.c.name)
    )
    if group is not None:
        query = query.where(tags.c.group_name == group)
    return [
        {
            "id": r.id,
            "name": r.name,
            "group": r.group_name,
            "kind": r.kind,
            "rule": r.rule,
            "persons": int(persons.get(r.id, 0)),
            "relations": int(relations.get(r.id, 0)),
            "created_at": _iso(r.created_at),
        }
        for r in conn.execute(query)
    ]


def create_tag(
    conn: Connection, name: str, group: str, at: datetime, *, kind: str = "manual", rule: str | None = None
) -> dict[str, Any]:
    """Create a tag in an existing group; names are unique across all groups."""
    name = check_name("tag", name)
    group = check_name("group", group)
    if kind not in KINDS:
        raise TagError(f"kind: 须为 must be one of {', '.join(KINDS)}, not {kind!r}")
    rule = check_text("rule", rule, RULE_LIMIT, required=False)
    if rule is not None and kind != "rule":
        raise TagError("rule: only a tag of kind `rule` has a rule expression")
    if not group_exists(conn, group):
        raise TagNotFound(f"未知标签组 unknown group {group!r} (siyu tag groups lists them)")
    check_unused(conn, name)
    if conn.execute(select(func.count()).select_from(tags)).scalar_one() >= MAX_TAGS:
        raise TagConflict(f"标签已达上限 the tag library is full ({MAX_TAGS} tags, as WeCom's)")
    tag_id = new_id()
    conn.execute(tags.insert().values(id=tag_id, group_name=group, name=name, created_at=at, kind=kind, rule=rule))
    return {
        "id": tag_id,
        "name": name,
        "group": group,
        "kind": kind,
        "rule": rule,
        "persons": 0,
        "relations": 0,
        "created_at": _iso(at),
    }


def set_tag_row(conn: Connection, tag: TagRef, *, name: str | None = None, group: str | None = None) -> None:
    """Rename a tag and / or move it to another group (the caller writes the changes)."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name
    if group is not None:
        values["group_name"] = group
    if values:
        conn.execute(update(tags).where(tags.c.id == tag.id).values(**values))


def delete_tag_row(conn: Connection, tag: TagRef) -> None:
    """Delete a tag's rows: holders, event rules, the tag (the caller writes the changes first)."""
    conn.execute(delete(person_tags).where(person_tags.c.tag_id == tag.id))
    conn.execute(delete(relation_tags).where(relation_tags.c.tag_id == tag.id))
    conn.execute(delete(event_tag_rules).where(event_tag_rules.c.tag_id == tag.id))
    conn.execute(delete(tags).where(tags.c.id == tag.id))
