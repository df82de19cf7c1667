"""Writing staff, relations, owners and group memberships — each change also an event.

WeCom's model (WECOM.md): a customer (``external_userid``) is added by one or more staff members;
each relation has its own add time, remark, channel-code ``state`` and tags. siyu resolves the
``external_userid`` to a person through the identity graph, keeps the relation rows in WeCom's
shape, and keeps one **owner** per person: the first active relation's staff member, handed on to
the next active relation when that one ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, select, update

from siyu.identity.resolve import Sighting, resolve_sightings
from siyu.ids import derived_id
from siyu.ingest.pipeline import Ingestor
from siyu.store.feed import apply_changes, insert_changes
from siyu.store.ops.schema import group_members, groups, persons, staff, staff_relations
from siyu.store.ops.upsert import upsert
from siyu.timeutil import as_utc


class RelationError(ValueError):
    """A relation or membership change that cannot be applied (unknown staff, bad id …)."""


def _utc(value: datetime | None) -> datetime:
    return datetime.now(UTC) if value is None else as_utc(value)


def _change(conn: Connection, kind: str, person_id: str, at: datetime, payload: dict[str, Any], *key: str) -> None:
    insert_changes(conn, [(kind, person_id, derived_id(kind, person_id, *key), at, payload)])


def _check_id(name: str, value: str, limit: int = 64) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or any(ord(c) < 32 for c in value):
        raise RelationError(f"{name}: must be 1–{limit} printable characters")


class RelationService:
    """Applies relation and group changes through the ingestor's single-writer path."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def _run(self, work: Any) -> Any:
        with self.ingestor.events.write_lock:
            with self.ingestor.engine.begin() as conn:
                result = work(conn)
            with self.ingestor.events.transaction() as con:
                apply_changes(self.ingestor.engine, self.ingestor.events, con)
        return result

    def _person_for(self, conn: Connection, external_userid: str, at: datetime) -> str:
        sighting = Sighting([("wecom_external_userid", external_userid)], at, at, f"wecom:{external_userid}")
        resolution = resolve_sightings(
            conn,
            self.ingestor.rules,
            [sighting],
            trait_strategies=self.ingestor.settings.trait_strategies,
            now=at,
            make_id=self.ingestor.make_id,
        )
        return resolution.people[0]

    def upsert_staff(self, userid: str, name: str, *, department: str | None = None) -> None:
        """Add or rename a staff member."""
        _check_id("userid", userid)
        _check_id("name", name, 128)
        now = datetime.now(UTC)

        def work(conn: Connection) -> None:
            upsert(
                conn,
                staff,
                [{"userid": userid, "name": name, "department": department, "status": "active", "created_at": now}],
                ["userid"],
                ["name", "department"],
            )

        self._run(work)

    def add_relation(
        self,
        external_userid: str,
        staff_userid: str,
        *,
        add_time: datetime | None = None,
        state: str | None = None,
        remark: str | None = None,
        add_way: int | None = None,
    ) -> str:
        """A staff member added a customer (WeCom ``add_external_contact``); returns the person id."""
        _check_id("external_userid", external_userid)
        _check_id("staff_userid", staff_userid)
        if state is not None and len(state) > 30:
            raise RelationError("state: WeCom channel-code states are at most 30 characters")
        at = _utc(add_time)

        def work(conn: Connection) -> str:
            if conn.execute(select(staff.c.userid).where(staff.c.userid == staff_userid)).first() is None:
                raise RelationError(f"unknown staff member {staff_userid!r}: add them first")
            person = self._person_for(conn, external_userid, at)
            existing = conn.execute(
                select(staff_relations.c.deleted_at).where(
                    staff_relations.c.external_userid == external_userid,
                    staff_relations.c.staff_userid == staff_userid,
                )
            ).first()
            if existing is not None and existing.deleted_at is None:
                return person  # already related: a repeated callback changes nothing
            row = {
                "external_userid": external_userid,
                "staff_userid": staff_userid,
                "person_id": person,
                "add_time": at,
                "remark": remark,
                "description": None,
                "state": state,
                "add_way": add_way,
                "deleted_at": None,
                "deleted_by": None,
            }
            upsert(
                conn,
                staff_relations,
                [row],
                ["external_userid", "staff_userid"],
                ["person_id", "add_time", "remark", "state", "add_way", "deleted_at", "deleted_by"],
            )
            payload = {"staff_userid": staff_userid, "external_userid": external_userid, "state": state}
            _change(conn, "relation_added", person, at, payload, staff_userid, at.isoformat())
            owner = conn.execute(select(persons.c.owner_staff_id).where(persons.c.id == person)).scalar()
            if owner is None:
                self._set_owner(conn, person, None, staff_userid, at, "first relation")
            return person

        return self._run(work)

    def remove_relation(
        self, external_userid: str, staff_userid: str, *, by: str = "customer", at: datetime | None = None
    ) -> None:
        """A relation ended: the customer deleted the staff member, or the staff member the customer."""
        if by not in ("customer", "staff"):
            raise RelationError("by: must be customer or staff")
        when = _utc(at)

        this = and_(
            staff_relations.c.external_userid == external_userid, staff_relations.c.staff_userid == staff_userid
        )

        def work(conn: Connection) -> None:
            rel = conn.execute(select(staff_relations).where(this)).first()
            if rel is None:
                raise RelationError(f"no relation between {external_userid!r} and {staff_userid!r}")
            if rel.deleted_at is not None:
                return
            conn.execute(update(staff_relations).where(this).values(deleted_at=when, deleted_by=by))
            payload = {"staff_userid": staff_userid, "external_userid": external_userid, "by": by}
            _change(conn, "relation_deleted", rel.person_id, when, payload, staff_userid, when.isoformat())
            owner = conn.execute(select(persons.c.owner_staff_id).where(persons.c.id == rel.person_id)).scalar()
            if owner == staff_userid:
                successor = conn.execute(
                    select(staff_relations.c.staff_userid)
                    .where(staff_relations.c.person_id == rel.person_id, staff_relations.c.deleted_at.is_(None))
                    .order_by(staff_relations.c.add_time)
                ).scalar()
                self._set_owner(conn, rel.person_id, owner, successor, when, "relation ended")

        self._run(work)

    @staticmethod
    def _set_owner(conn: Connection, person: str, old: str | None, new: str | None, at: datetime, why: str) -> None:
        conn.execute(update(persons).where(persons.c.id == person).values(owner_staff_id=new))
        payload = {"old": old, "new": new, "reason": why}
        _change(conn, "owner_changed", person, at, payload, str(old), str(new), at.isoformat())

    def join_group(
        self, chat_id: str, external_userid: str, *, at: datetime | None = None, join_scene: int | None = None
    ) -> str:
        """A customer joined a customer group (WeCom ``change_external_chat`` add_member)."""
        _check_id("chat_id", chat_id)
        _check_id("external_userid", external_userid)
        when = _utc(at)

        def work(conn: Connection) -> str:
            if conn.execute(select(groups.c.chat_id).where(groups.c.chat_id == chat_id)).first() is None:
                conn.execute(groups.insert().values(chat_id=chat_id, created_at=when))
            person = self._person_for(conn, external_userid, when)
            current = conn.execute(
                select(group_members.c.left_at).where(
                    group_members.c.chat_id == chat_id, group_members.c.member_id == external_userid
                )
            ).first()
            if current is not None and current.left_at is None:
                return person
            upsert(
                conn,
                group_members,
                [
                    {
                        "chat_id": chat_id,
                        "member_id": external_userid,
                        "member_type": "customer",
                        "person_id": person,
                        "join_time": when,
                        "join_scene": join_scene,
                        "left_at": None,
                    }
                ],
                ["chat_id", "member_id"],
                ["person_id", "join_time", "join_scene", "left_at"],
            )
            _change(conn, "group_joined", person, when, {"chat_id": chat_id}, chat_id, when.isoformat())
            return person

        return self._run(work)

    def leave_group(self, chat_id: str, external_userid: str, *, at: datetime | None = None) -> None:
        """A customer left (or was removed from) a group."""
        when = _utc(at)

        this = and_(group_members.c.chat_id == chat_id, group_members.c.member_id == external_userid)

        def work(conn: Connection) -> None:
            row = conn.execute(select(group_members.c.person_id, group_members.c.left_at).where(this)).first()
            if row is None:
                raise RelationError(f"{external_userid!r} is not a member of {chat_id!r}")
            if row.left_at is not None:
                return
            conn.execute(update(group_members).where(this).values(left_at=when))
            _change(conn, "group_left", row.person_id, when, {"chat_id": chat_id}, chat_id, when.isoformat())

        self._run(work)
