"""Tags: the library, tagging persons and relations, the change feed, merges, erasure, CSV, event rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from helpers import ADMIN, Api, order, track
from siyu.ingest.validate import Validator
from siyu.profiles.service import erase_person, get_profile
from siyu.relations.service import RelationService
from siyu.runtime import Runtime
from siyu.store.ops.schema import changes, person_tags, relation_tags, tags
from siyu.tags.csvfile import parse_targets
from siyu.tags.errors import TagConflict, TagError, TagNotFound
from siyu.tags.service import TagService
from siyu.tags.targets import Target

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def tag_events(rt: Runtime, person: str | None = None) -> list[tuple[str, dict[str, object]]]:
    sql = "SELECT name, properties FROM events WHERE name IN ('$tag_added', '$tag_removed')"
    params: list[object] = []
    if person is not None:
        sql += " AND person_id = ?"
        params.append(person)
    rows = rt.events.cursor().execute(sql + " ORDER BY ts, event_id", params).fetchall()
    return [(n, json.loads(p)) for n, p in rows]


def ingest(rt: Runtime, messages: list[dict[str, object]]) -> None:
    checked = Validator(rt.settings).messages(messages)
    assert not checked.errors, checked.errors
    rt.ingestor.ingest_messages(checked.messages)


def person(rt: Runtime, user_id: str) -> str:
    ingest(rt, [{"type": "identify", "messageId": f"id-{user_id}", "userId": user_id}])
    with rt.engine.connect() as conn:
        from siyu.store.ops.schema import identities

        return str(
            conn.execute(
                select(identities.c.person_id).where(identities.c.type == "user_id", identities.c.value == user_id)
            ).scalar_one()
        )


def count(rt: Runtime, table: object) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_default_groups_and_unique_names(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    assert [g["name"] for g in svc.groups()] == ["跟进状态", "客户来源", "客户属性", "产品类型", "内容类型", "营销活动"]
    svc.create_tag("高意向", "跟进状态")
    with pytest.raises(TagConflict, match="unique across groups"):
        svc.create_tag("高意向", "客户属性")
    with pytest.raises(TagConflict):
        svc.create_tag(" 高意向 ", "跟进状态")  # stripped: the same name
    with pytest.raises(TagNotFound, match="unknown group"):
        svc.create_tag("新标签", "没有这个组")
    svc.create_group("会员等级")
    svc.create_tag("金卡", "会员等级")
    assert [t["name"] for t in svc.list_tags("会员等级")] == ["金卡"]
    with pytest.raises(TagConflict, match="still has"):
        svc.delete_group("会员等级")


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 31, "坏\x00名", "tab\there", "mid\u0085dle", "x\u007fy"],
)
def test_hostile_names_are_refused_and_nothing_is_written(runtime: Runtime, name: str) -> None:
    svc = TagService(runtime.ingestor)
    with pytest.raises(TagError):
        svc.create_tag(name, "跟进状态")
    with pytest.raises(TagError):
        svc.create_group(name)
    assert count(runtime, tags) == 0


def test_person_and_relation_tags_with_their_changes(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    rel = RelationService(runtime.ingestor)
    rel.upsert_staff("alice", "Alice")
    pid = rel.add_relation("wm_1", "alice", add_time=T0)
    svc.create_tag("高意向", "跟进状态")

    assert svc.add("高意向", pid, by="op:wang", reason="asked for a quote").changed == 1
    feed_before = count(runtime, changes)
    assert svc.add("高意向", pid, by="op:wang").changed == 0  # already held: no-op, nothing written
    assert count(runtime, changes) == feed_before
    assert svc.add("高意向", "wecom_external_userid:wm_1", staff="alice", by="op:wang").changed == 1
    assert svc.remove("高意向", pid, by="op:li").changed == 1
    assert svc.remove("高意向", pid, by="op:li").changed == 0  # not held: no-op
    assert count(runtime, changes) == feed_before + 2

    events = tag_events(runtime, pid)
    assert [n for n, _ in events] == ["$tag_added", "$tag_added", "$tag_removed"]
    tag_id = svc.list_tags()[0]["id"]
    assert events[0][1] == {
        "tag": "高意向",
        "tag_id": tag_id,
        "group": "跟进状态",
        "staff_userid": None,
        "by": "op:wang",
        "reason": "asked for a quote",
        "source": "manual",
    }
    assert events[1][1]["staff_userid"] == "alice"

    view = get_profile(runtime.engine, runtime.events, pid)["tags"]
    assert [(t["tag"], [h["staff_userid"] for h in t["holders"]]) for t in view] == [("高意向", ["alice"])]


def test_unknown_tag_person_staff_or_relation_writes_nothing(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    rel = RelationService(runtime.ingestor)
    rel.upsert_staff("alice", "Alice")
    rel.upsert_staff("bob", "Bob")
    pid = rel.add_relation("wm_1", "alice", add_time=T0)
    svc.create_tag("高意向", "跟进状态")
    before = count(runtime, changes)
    with pytest.raises(TagNotFound, match="unknown tag"):
        svc.add("没有", pid, by="t")
    with pytest.raises(TagError, match="unknown person"):
        svc.add("高意向", "no-such-person", by="t")
    with pytest.raises(TagError) as info:
        svc.add("高意向", pid, staff="carol", by="t")
    assert info.value.errors == [
        {"index": 0, "column": "staff_userid", "reason": "未知员工 unknown staff member 'carol'"}
    ]
    with pytest.raises(TagError, match="no active relation"):
        svc.add("高意向", pid, staff="bob", by="t")
    with pytest.raises(TagError, match="control"):
        svc.add("高意向", pid, by="bad\x07actor")
    with pytest.raises(TagError, match="256"):
        svc.add("高意向", pid, by="t", reason="x" * 257)
    # A bulk call with one bad item writes nothing at all.
    with pytest.raises(TagError) as info:
        svc.tag("高意向", [Target(person=pid), Target(person="nobody")], by="t")
    assert info.value.errors is not None and info.value.errors[0]["index"] == 1
    assert count(runtime, changes) == before
    assert count(runtime, person_tags) == 0 and count(runtime, relation_tags) == 0


def test_rename_and_delete_write_changes_for_every_holder(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    svc.create_tag("宝妈", "客户属性")
    a, b = person(runtime, "u-a"), person(runtime, "u-b")
    assert svc.tag("宝妈", [Target(person=a), Target(person=b)], by="t").changed == 2
    svc.rename_tag("宝妈", "新手妈妈", by="t")
    svc.delete_tag("新手妈妈", by="t")
    names = [(n, p["tag"]) for n, p in tag_events(runtime, a)]
    assert names == [
        ("$tag_added", "宝妈"),
        ("$tag_removed", "宝妈"),
        ("$tag_added", "新手妈妈"),
        ("$tag_removed", "新手妈妈"),
    ]
    assert count(runtime, tags) == 0 and count(runtime, person_tags) == 0


def test_add_remove_add_at_one_explicit_time_gets_distinct_event_ids(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    svc.create_tag("复购", "客户属性")
    pid = person(runtime, "u-1")
    for add in (True, False, True):
        svc.tag("复购", [Target(person=pid)], add=add, by="t", at=T0)
    # One instant: the feed keeps their order (seq); the three events exist with distinct ids.
    assert sorted(n for n, _ in tag_events(runtime, pid)) == ["$tag_added", "$tag_added", "$tag_removed"]
    with runtime.engine.connect() as conn:
        kinds = conn.execute(select(changes.c.kind).where(changes.c.kind.like("tag_%")).order_by(changes.c.seq)).all()
    assert [k for (k,) in kinds] == ["tag_added", "tag_removed", "tag_added"]


def test_merge_moves_person_tags_to_the_survivor(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    svc.create_tag("高意向", "跟进状态")
    svc.create_tag("宝妈", "客户属性")
    anon = person(runtime, "u-merge-src")
    ingest(runtime, [{"type": "identify", "messageId": "m-phone", "identities": {"phone": "13800138000"}}])
    with runtime.engine.connect() as conn:
        from siyu.store.ops.schema import identities

        phone_person = conn.execute(select(identities.c.person_id).where(identities.c.type == "phone")).scalar_one()
    svc.add("高意向", anon, by="t")
    svc.add("宝妈", anon, by="t")
    svc.add("宝妈", phone_person, by="t")
    svc.create_tag("电话客户", "客户来源")
    svc.add("电话客户", phone_person, by="t")
    # One message links both persons: one of them survives.
    ingest(
        runtime,
        [{"type": "identify", "messageId": "m-link", "userId": "u-merge-src", "identities": {"phone": "13800138000"}}],
    )
    survivor = get_profile(runtime.engine, runtime.events, person(runtime, "u-merge-src"))
    assert {t["tag"] for t in survivor["tags"]} == {"高意向", "宝妈", "电话客户"}
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(person_tags.c.person_id)).scalars().all()
    assert set(rows) == {survivor["id"]} and len(rows) == 3
    merged = anon if survivor["id"] != anon else phone_person
    gained = [p for n, p in tag_events(runtime, survivor["id"]) if n == "$tag_added" and p["by"] == "merge"]
    assert [p["tag"] for p in gained] == ["高意向" if merged == anon else "电话客户"]  # only what it gained
    assert gained[0]["reason"] == f"merged from {merged}" and gained[0]["staff_userid"] is None


def test_erasure_deletes_the_persons_tags(runtime: Runtime) -> None:
    svc = TagService(runtime.ingestor)
    rel = RelationService(runtime.ingestor)
    rel.upsert_staff("alice", "Alice")
    pid = rel.add_relation("wm_9", "alice", add_time=T0)
    svc.create_tag("高意向", "跟进状态")
    svc.add("高意向", pid, by="t")
    svc.add("高意向", pid, staff="alice", by="t")
    counts = erase_person(runtime.engine, runtime.events, pid, requested_by="test")
    assert counts["person_tags"] == 1 and counts["relation_tags"] == 1
    assert count(runtime, person_tags) == 0 and count(runtime, relation_tags) == 0
    assert tag_events(runtime) == []
    assert svc.list_tags()[0]["persons"] == 0  # the tag itself stays


def test_csv_bulk_is_all_or_nothing_with_line_errors(runtime: Runtime, tmp_path: Path) -> None:
    svc = TagService(runtime.ingestor)
    svc.create_tag("活动A", "营销活动")
    a, b = person(runtime, "u-a"), person(runtime, "u-b")
    targets, lines = parse_targets(f"person_id\n{a}\n\nuser_id:u-b\n")
    assert lines == [2, 4]
    result = svc.tag("活动A", targets, by="t", source="import", positions=lines)
    assert result.changed == 2 and set(result.persons) == {a, b}
    assert {p["source"] for _, p in tag_events(runtime)} == {"import"}

    bad, bad_lines = parse_targets(f"person_id\n{a}\nnobody\n{b}\n")
    with pytest.raises(TagError) as info:
        svc.tag("活动A", bad, add=False, by="t", positions=bad_lines)
    assert info.value.errors == [{"line": 3, "column": "person", "reason": "未知客户 unknown person 'nobody'"}]
    assert svc.list_tags()[0]["persons"] == 2  # nothing was removed

    with pytest.raises(TagError, match="line 1"):
        parse_targets("phone\n138\n")
    with pytest.raises(TagError) as info:
        parse_targets("external_userid,staff_userid\nwm_1,alice\nwm_2\n,bob\n")
    assert [(e["line"], e["column"]) for e in info.value.errors or []] == [(3, "*"), (4, "external_userid")]
    with pytest.raises(TagError, match="empty"):
        parse_targets("")


def test_event_tag_rules_on_ingest_orders_and_bulk(runtime: Runtime, tmp_path: Path) -> None:
    svc = TagService(runtime.ingestor)
    svc.create_tag("奶粉用户", "产品类型", kind="event")
    svc.create_tag("大单", "客户属性")
    svc.create_tag("看过活动页", "内容类型")
    # A rule names an event (and property) the stores know: one page view (not of the campaign) first.
    ingest(runtime, [track("page_viewed", userId="u-home", properties={"page": "home"}, timestamp=T0.isoformat())])
    svc.add_rule("order_paid", "categories", "contains", "奶粉", "奶粉用户", by="t")
    assert svc.add_rule("order_paid", "categories", "contains", "奶粉", "奶粉用户", by="t")["tag"] == "奶粉用户"
    svc.add_rule("order_paid", "amount_fen", ">=", 50_000, "大单", by="t")
    svc.add_rule("page_viewed", "page", "=", "campaign", "看过活动页", by="t")
    assert len(svc.list_rules()) == 3
    with pytest.raises(TagError, match="op"):
        svc.add_rule("order_paid", "x", "like", "a", "大单", by="t")
    with pytest.raises(TagNotFound):
        svc.add_rule("order_paid", "channel", "=", "a", "没有", by="t")

    from siyu.ingest.validate import Validator as V

    checked = V(runtime.settings).orders(
        [
            order(
                "o1",
                userId="u-milk",
                amount_fen=9_900,
                items=[{"sku": "s1", "category": "奶粉", "quantity": 1, "price_fen": 100}],
            ),
            order(
                "o2",
                userId="u-toy",
                amount_fen=60_000,
                items=[{"sku": "s2", "category": "玩具", "quantity": 1, "price_fen": 100}],
            ),
        ]
    )
    assert not checked.errors, checked.errors
    runtime.ingestor.ingest_orders(checked.orders)
    ingest(runtime, [track("page_viewed", userId="u-page", properties={"page": "campaign"}, timestamp=T0.isoformat())])
    got = {(p["tag"], p["source"]) for _, p in tag_events(runtime)}
    assert got == {("奶粉用户", "event"), ("大单", "event"), ("看过活动页", "event")}
    milk = get_profile(runtime.engine, runtime.events, person(runtime, "u-milk"))
    assert [t["tag"] for t in milk["tags"]] == ["奶粉用户"]
    assert milk["tags"][0]["holders"][0]["by"].startswith("event_rule:")

    # The bulk Parquet importer runs the rules too.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from siyu.ingest.files import import_file

    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "message_id": ["b1", "b2"],
                "event": ["page_viewed", "page_viewed"],
                "timestamp": pa.array([T0, T0 + timedelta(minutes=1)], pa.timestamp("us", tz="UTC")),
                "user_id": ["u-bulk-1", "u-bulk-2"],
                "page": ["campaign", "home"],
            }
        ),
        path,
    )
    import_file(runtime.ingestor, path, "events", source="file")
    tagged = [p for p in svc.list_tags() if p["name"] == "看过活动页"]
    assert [t["persons"] for t in tagged] == [2]

    rule_id = next(r["id"] for r in svc.list_rules() if r["event"] == "page_viewed")
    svc.remove_rule(rule_id)
    ingest(runtime, [track("page_viewed", userId="u-after", properties={"page": "campaign"})])
    assert [t["persons"] for t in svc.list_tags() if t["name"] == "看过活动页"] == [2]


def test_rule_matching() -> None:
    from siyu.tags.rules import matches

    p = {"categories": ["奶粉", "纸尿裤"], "amount_fen": 100, "city": "北京", "vip": True}
    assert matches(p, "categories", "contains", "奶粉")
    assert not matches(p, "categories", "not contains", "奶粉")
    assert matches(p, "city", "contains", "北")
    assert matches(p, "amount_fen", ">=", 100) and not matches(p, "amount_fen", ">", 100)
    assert not matches(p, "amount_fen", ">", "50")  # a number is not compared with text
    assert matches(p, "vip", "=", True) and not matches(p, "amount_fen", "=", True)
    assert matches(p, "city", "in", ["上海", "北京"])
    assert matches(p, "vip", "in", [True]) and not matches(p, "vip", "in", [False, 1])  # true is not 1
    assert matches(p, "city", "is set", True) and not matches(p, "missing", "is set", True)
    assert not matches(p, "missing", "!=", "x")


def test_rest_endpoints(api: Api, runtime: Runtime) -> None:
    c = api.client
    assert [g["name"] for g in c.get("/v1/tag-groups", headers=ADMIN).json()][:2] == ["跟进状态", "客户来源"]
    r = c.post("/v1/tags", json={"name": "高意向", "group": "跟进状态"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert c.post("/v1/tags", json={"name": "高意向", "group": "客户属性"}, headers=ADMIN).status_code == 409
    r = c.post("/v1/tags", json={"name": "x" * 31, "group": "跟进状态"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["errors"][0]["field"] == "body.name"
    assert c.post("/v1/tags", json={"name": "a\x00", "group": "跟进状态"}, headers=ADMIN).status_code == 422
    assert c.get("/v1/tags", headers={"Authorization": "Bearer test-write"}).status_code == 403

    api.batch([{"type": "identify", "userId": "u-api", "messageId": "m-api"}])
    pid = api.person_id("user_id:u-api")
    r = c.put("/v1/persons/user_id:u-api/tags/高意向", json={"by": "op:wang", "reason": "called"}, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"changed": 1, "persons": [pid]}
    r = c.put("/v1/persons/user_id:u-api/tags/高意向", headers=ADMIN)  # retry: no-op
    assert r.json()["changed"] == 0
    assert c.put("/v1/persons/user_id:u-api/tags/没有", headers=ADMIN).status_code == 404
    assert c.put("/v1/persons/nobody/tags/高意向", headers=ADMIN).status_code == 404
    assert [t["tag"] for t in c.get(f"/v1/persons/{pid}/tags", headers=ADMIN).json()] == ["高意向"]
    assert [t["tag"] for t in api.person(pid)["tags"]] == ["高意向"]

    svc = RelationService(runtime.ingestor)
    svc.upsert_staff("alice", "Alice")
    svc.add_relation("wm_api", "alice", add_time=T0)
    assert c.put("/v1/relations/wm_api/alice/tags/高意向", headers=ADMIN).json()["changed"] == 1
    r = c.put("/v1/relations/wm_api/bob/tags/高意向", headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["errors"][0]["column"] == "staff_userid"
    assert c.delete("/v1/relations/wm_api/alice/tags/高意向", headers=ADMIN).json()["changed"] == 1

    r = c.post(
        "/v1/tags/高意向/bulk",
        json={"action": "remove", "items": [{"person": pid}, {"person": "nobody"}]},
        headers=ADMIN,
    )
    assert r.status_code == 422 and r.json()["error"]["errors"][0]["index"] == 1
    r = c.post("/v1/tags/高意向/bulk", json={"action": "remove", "items": [{"person": pid}]}, headers=ADMIN)
    assert r.json()["changed"] == 1
    assert c.post("/v1/tags/高意向/bulk", json={"items": []}, headers=ADMIN).status_code == 422

    r = c.post(
        "/v1/tag-rules",
        json={"event": "order_paid", "property": "categories", "op": "contains", "value": "奶粉", "tag": "高意向"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    api.orders(
        [order("o-api", userId="u-api", items=[{"sku": "s", "category": "奶粉", "quantity": 1, "price_fen": 100}])]
    )
    assert [t["tag"] for t in c.get(f"/v1/persons/{pid}/tags", headers=ADMIN).json()] == ["高意向"]
    rule_id = r.json()["id"]
    assert c.delete(f"/v1/tag-rules/{rule_id}", headers=ADMIN).status_code == 200
    assert c.delete(f"/v1/tag-rules/{rule_id}", headers=ADMIN).status_code == 404
    assert c.delete("/v1/tags/高意向", headers=ADMIN).json()["removed_from"] == 1
