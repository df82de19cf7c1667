"""Staff relations, owners and group memberships: WeCom's shape, and every change an event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from siyu.relations.service import RelationError, RelationService
from siyu.runtime import Runtime
from siyu.store.ops.schema import group_members, persons, staff_relations

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def change_events(rt: Runtime, person: str) -> list[tuple[str, dict[str, object]]]:
    rows = (
        rt.events.cursor()
        .execute(
            "SELECT name, properties FROM events_resolved WHERE person_id = ? AND message_type = 'change' "
            "ORDER BY ts, name",
            [person],
        )
        .fetchall()
    )
    return [(name, json.loads(props)) for name, props in rows]


def test_relations_owner_handover_and_groups(runtime: Runtime) -> None:
    svc = RelationService(runtime.ingestor)
    svc.upsert_staff("alice", "Alice 王")
    svc.upsert_staff("bob", "Bob 李")
    person = svc.add_relation("wm_ext_1", "alice", add_time=T0, state="store-sh-01", remark="VIP")
    assert svc.add_relation("wm_ext_1", "alice", add_time=T0) == person  # repeated callback: no change
    assert svc.add_relation("wm_ext_1", "bob", add_time=T0 + timedelta(days=1)) == person
    with runtime.engine.connect() as conn:
        rels = conn.execute(select(staff_relations).order_by(staff_relations.c.staff_userid)).all()
        owner = conn.execute(select(persons.c.owner_staff_id).where(persons.c.id == person)).scalar()
    assert [(r.staff_userid, r.state, r.remark) for r in rels] == [("alice", "store-sh-01", "VIP"), ("bob", None, None)]
    assert owner == "alice"

    svc.remove_relation("wm_ext_1", "alice", by="customer", at=T0 + timedelta(days=2))
    svc.remove_relation("wm_ext_1", "alice", by="customer", at=T0 + timedelta(days=3))  # already gone
    with runtime.engine.connect() as conn:
        owner = conn.execute(select(persons.c.owner_staff_id).where(persons.c.id == person)).scalar()
    assert owner == "bob"

    svc.join_group("wr_chat_1", "wm_ext_1", at=T0 + timedelta(days=4), join_scene=3)
    svc.join_group("wr_chat_1", "wm_ext_1", at=T0 + timedelta(days=4))  # repeated: no change
    svc.leave_group("wr_chat_1", "wm_ext_1", at=T0 + timedelta(days=5))
    with runtime.engine.connect() as conn:
        member = conn.execute(select(group_members)).one()
    assert member.person_id == person and member.left_at is not None

    names = [name for name, _ in change_events(runtime, person)]
    assert names == [
        "$owner_changed",
        "$relation_added",
        "$relation_added",
        "$owner_changed",
        "$relation_deleted",
        "$group_joined",
        "$group_left",
    ]
    owner_changes = [p for n, p in change_events(runtime, person) if n == "$owner_changed"]
    assert [(c["old"], c["new"]) for c in owner_changes] == [(None, "alice"), ("alice", "bob")]


def test_relation_to_a_known_customer_joins_their_profile(runtime: Runtime) -> None:
    from siyu.ingest.validate import Validator

    checked = Validator(runtime.settings).messages(
        [{"type": "identify", "messageId": "m1", "userId": "u1", "identities": {"wecom_external_userid": "wm_2"}}]
    )
    runtime.ingestor.ingest_messages(checked.messages)
    svc = RelationService(runtime.ingestor)
    svc.upsert_staff("carol", "Carol")
    person = svc.add_relation("wm_2", "carol", add_time=T0)
    with runtime.engine.connect() as conn:
        assert conn.execute(select(persons.c.id).where(persons.c.merged_into.is_(None))).scalars().all() == [person]


def test_bad_relation_input_changes_nothing(runtime: Runtime) -> None:
    svc = RelationService(runtime.ingestor)
    with pytest.raises(RelationError, match="unknown staff"):
        svc.add_relation("wm_3", "nobody")
    with pytest.raises(RelationError, match="30 characters"):
        svc.upsert_staff("dave", "Dave")
        svc.add_relation("wm_3", "dave", state="x" * 31)
    with pytest.raises(RelationError, match="printable"):
        svc.add_relation("wm\x00bad", "dave")
    with pytest.raises(RelationError, match="not a member"):
        svc.leave_group("wr_x", "wm_3")
    with runtime.engine.connect() as conn:
        assert conn.execute(select(persons.c.id)).all() == []
        assert conn.execute(select(staff_relations.c.person_id)).all() == []
    assert runtime.events.counts()["events"] == 0
