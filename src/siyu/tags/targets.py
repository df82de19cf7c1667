"""Who a tag request is about: a person (person-level tag) or a WeCom relation (relation tag).

Resolution happens inside the writing transaction, so a person merged a moment ago resolves to
its survivor. Every problem is collected with the item's position so a bulk request can report
all of them and write nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from siyu.config import IDENTITY_TYPES
from siyu.identity.normalize import IdentityScreen, IdentityValueError
from siyu.store.ops.schema import identities, persons, staff, staff_relations
from siyu.tags.errors import has_control
from siyu.tags.holders import Relation

REF_LIMIT = 300
ID_LIMIT = 64


@dataclass(frozen=True)
class Target:
    """One item of a tag request.

    ``person`` is a person id or ``type:value`` of an identity; ``external_userid`` names the
    contact directly. Without ``staff_userid`` the tag is person-level; with it, it is on the
    relation(s) between that staff member and the person (or exactly that contact).
    """

    person: str | None = None
    external_userid: str | None = None
    staff_userid: str | None = None


@dataclass
class Resolved:
    """Targets resolved: person-level persons and relations, or errors by item."""

    persons: list[str]
    relations: list[Relation]
    errors: list[dict[str, Any]]


def _bad_id(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if not value or len(value) > limit:
        return f"must be 1–{limit} characters"
    if has_control(value):
        return "must not contain control characters 不能包含控制字符"
    return None


def person_of(conn: Connection, ref: str, screen: IdentityScreen | None) -> str | None:
    """The surviving person id for a person id or ``type:value``; None when unknown."""
    if ":" in ref:
        id_type, _, value = ref.partition(":")
        if screen is not None and id_type in IDENTITY_TYPES:
            try:
                value = screen.clean(id_type, value) or value
            except IdentityValueError:
                return None
        row = conn.execute(
            select(identities.c.person_id).where(identities.c.type == id_type, identities.c.value == value)
        ).first()
        if row is None:
            return None
        ref = str(row[0])
    found = conn.execute(select(persons.c.id, persons.c.merged_into).where(persons.c.id == ref)).first()
    if found is None:
        return None
    return str(found.merged_into or found.id)


def resolve(
    conn: Connection,
    targets: Sequence[Target],
    screen: IdentityScreen | None,
    *,
    positions: Sequence[int] | None = None,
) -> Resolved:
    """Resolve every target; ``positions`` (e.g. CSV line numbers) name items in errors."""
    out = Resolved([], [], [])
    known_staff: dict[str, bool] = {}
    where = "line" if positions is not None else "index"

    def error(i: int, column: str, reason: str) -> None:
        pos = positions[i] if positions is not None else i
        out.errors.append({where: pos, "column": column, "reason": reason})

    for i, t in enumerate(targets):
        bad = False
        for column, value, limit in (
            ("person", t.person, REF_LIMIT),
            ("external_userid", t.external_userid, ID_LIMIT),
            ("staff_userid", t.staff_userid, ID_LIMIT),
        ):
            problem = _bad_id(value, limit)
            if problem:
                error(i, column, problem)
                bad = True
        if bad:
            continue
        if (t.person is None) == (t.external_userid is None):
            error(i, "person", "give a person or an external_userid (one of them) 须给出客户或外部联系人之一")
            continue
        if t.staff_userid is not None:
            s = t.staff_userid
            if s not in known_staff:
                known_staff[s] = conn.execute(select(staff.c.userid).where(staff.c.userid == s)).first() is not None
            if not known_staff[s]:
                error(i, "staff_userid", f"未知员工 unknown staff member {s!r}")
                continue
            query = select(staff_relations.c.external_userid, staff_relations.c.person_id).where(
                staff_relations.c.staff_userid == s, staff_relations.c.deleted_at.is_(None)
            )
            if t.external_userid is not None:
                query = query.where(staff_relations.c.external_userid == t.external_userid)
                column, label = "external_userid", t.external_userid
            else:
                assert t.person is not None
                pid = person_of(conn, t.person, screen)
                if pid is None:
                    error(i, "person", f"未知客户 unknown person {t.person!r}")
                    continue
                query = query.where(staff_relations.c.person_id == pid)
                column, label = "person", t.person
            rels = conn.execute(query).all()
            if not rels:
                error(i, column, f"无此好友关系 no active relation between {label!r} and staff {s!r}")
                continue
            out.relations += [Relation(e, s, p) for e, p in rels]
        else:
            ref = t.person if t.person is not None else f"wecom_external_userid:{t.external_userid}"
            pid = person_of(conn, ref, screen)
            if pid is None:
                column = "person" if t.person is not None else "external_userid"
                error(i, column, f"未知客户 unknown person {ref!r}")
                continue
            out.persons.append(pid)
    return out
