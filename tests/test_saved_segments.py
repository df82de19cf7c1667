"""Saved segments: create, refresh (incremental and full), membership history, events, static
snapshots, references, deletion, erasure — through the API on SQLite and PostgreSQL ops stores.

The honest check of incremental refresh: after random writes, the incrementally refreshed members
must equal a from-scratch evaluation of the same definition.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from helpers import ADMIN, Api, identify, order, track
from siyu.segments.compile import SegmentCompileError

NOW = datetime.now(UTC)


def post(api: Api, path: str, body: Any = None, **params: Any) -> Any:
    return api.client.post(path, json=body, headers=ADMIN, params=params)


def create(api: Api, name: str, expression: str, kind: str = "dynamic") -> dict[str, Any]:
    r = post(api, "/v1/segments", {"name": name, "expression": expression, "kind": kind})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def members(api: Api, name: str) -> set[str]:
    r = api.client.get(f"/v1/segments/{name}/members", headers=ADMIN)
    assert r.status_code == 200, r.text
    return set(r.json()["person_ids"])


def evaluated(api: Api, expression: str) -> set[str]:
    r = post(api, "/v1/segments/members", {"expression": expression})
    assert r.status_code == 200, r.text
    return set(r.json()["person_ids"])


def pid(api: Api, user: str) -> str:
    return api.person(f"user_id:{user}")["id"]  # type: ignore[no-any-return]


def test_refresh_records_who_entered_and_exited(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京" if i < 3 else "上海"}) for i in range(6)])
    seg = create(api, "北京客户", 'city = "北京"')
    assert seg["member_count"] == 3 and seg["refresh"]["mode"] == "full" and seg["refresh"]["entered"] == 3
    # u0 moves away, u4 moves in; u9 is new and in 北京.
    api.batch(
        [
            identify(userId="u0", traits={"city": "上海"}),
            identify(userId="u4", traits={"city": "北京"}),
            identify(userId="u9", traits={"city": "北京"}),
        ]
    )
    r = post(api, "/v1/segments/北京客户/refresh")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["mode"] == "incremental" and result["evaluated"] == 3
    assert (result["entered"], result["exited"], result["members"]) == (2, 1, 4)
    assert members(api, "北京客户") == {pid(api, u) for u in ("u1", "u2", "u4", "u9")}
    history = api.client.get("/v1/segments/北京客户/history", headers=ADMIN).json()
    assert {(h["person_id"], h["change"]) for h in history} >= {(pid(api, "u0"), "exited"), (pid(api, "u9"), "entered")}
    # The changes are events too, which `any` does not count.
    cur = api.runtime.events.cursor()
    names = dict(cur.execute("SELECT name, count(*) FROM events WHERE name LIKE 'segment_%' GROUP BY name").fetchall())
    assert names == {"segment_entered": 5, "segment_exited": 1}
    assert post(api, "/v1/segments/count", {"expression": "did segment_entered ever"}).json()["count"] == 5
    # A definition reading the segment events is always refreshed in full (refreshes write them).
    create(api, "进过人群", "did segment_entered ever")
    assert post(api, "/v1/segments/进过人群/refresh").json()["mode"] == "full"
    # A second refresh with nothing new changes nothing.
    again = post(api, "/v1/segments/北京客户/refresh").json()
    assert (again["entered"], again["exited"], again["evaluated"]) == (0, 0, 0)


def test_time_windows_stay_correct_as_time_passes(api: Api) -> None:
    api.batch([track("viewed", userId="old", timestamp=(NOW - timedelta(days=6, hours=23)).isoformat())])
    api.batch([track("viewed", userId="new", timestamp=(NOW - timedelta(hours=1)).isoformat())])
    seg = create(api, "近7天活跃", "did any in last 7d")
    assert seg["member_count"] == 2
    # No new events, but two hours later `old` has fallen out of the window: the refresh re-evaluates
    # exactly the persons with a timestamp in the span the window's start moved over.
    later = NOW + timedelta(hours=2)
    results = api.runtime.segments().saved.refresh("近7天活跃", now=later)
    assert results[0].mode == "incremental" and results[0].exited == 1
    assert members(api, "近7天活跃") == {pid(api, "new")}


def test_incremental_refresh_equals_a_full_evaluation_after_random_writes(api: Api) -> None:
    rng = random.Random(5)
    definitions = {
        "买过两单": "orders count >= 2",
        "北京女性": 'city = "北京" and gender = "女"',
        "收藏未购": "did favorite ever and not did order_paid ever",
        "高客单": 'orders aov >= 15000 or in segment "北京女性"',
    }
    api.batch([identify(userId=f"u{i}", traits={"city": "北京", "gender": "女"}) for i in range(3)])
    api.batch([track("favorite", userId="u0"), track("order_paid", userId="u9")])
    for name, text in definitions.items():
        create(api, name, text)
    n_order = 0
    watermarks: list[int] = []
    for _ in range(6):
        msgs: list[dict[str, Any]] = []
        for _ in range(8):
            user = f"u{rng.randrange(15)}"
            roll = rng.random()
            if roll < 0.4:
                traits = {"city": rng.choice(["北京", "上海"]), "gender": rng.choice(["女", "男"])}
                msgs.append(identify(userId=user, traits=traits))
            else:
                msgs.append(track(rng.choice(["favorite", "viewed"]), userId=user))
        api.batch(msgs)
        orders = []
        for _ in range(rng.randrange(0, 4)):
            n_order += 1
            orders.append(order(f"o{n_order}", userId=f"u{rng.randrange(15)}", amount_fen=rng.choice([5000, 20000])))
        if orders:
            assert api.post_orders(orders).status_code == 200
        # Now and then one segment alone, then more writes: the segments refreshed together below
        # then hold different watermarks, so the batch copies the touched persons per watermark.
        if rng.random() < 0.6:
            alone = rng.choice(list(definitions))
            assert post(api, f"/v1/segments/{alone}/refresh").json()["mode"] == "incremental"
            assert members(api, alone) == evaluated(api, definitions[alone]), alone
            api.batch(
                [
                    track("favorite", userId=f"u{rng.randrange(15)}"),
                    identify(userId=f"u{rng.randrange(15)}", traits={"city": rng.choice(["北京", "上海"])}),
                ]
            )
        watermarks.append(len(set(meta_values(api, "segment_watermark:"))))
        results = post(api, "/v1/segments/refresh").json()["segments"]
        assert {r["mode"] for r in results} == {"incremental"}
        for name, text in definitions.items():
            assert members(api, name) == evaluated(api, text), name
        assert {r["segment"]: r["members"] for r in results} == {n: len(members(api, n)) for n in definitions}
    assert max(watermarks) > 1  # the case above happened


def meta_values(api: Api, prefix: str) -> list[str]:
    cur = api.runtime.events.cursor()
    return [v for (v,) in cur.execute("SELECT value FROM store_meta WHERE starts_with(key, ?)", [prefix]).fetchall()]


def test_a_refresh_that_cannot_evaluate_one_segment_writes_nothing(api: Api) -> None:
    from siyu.segments import parse
    from siyu.segments.membership import RefreshItem

    api.batch([identify(userId=f"u{i}", traits={"city": "北京"}) for i in range(3)])
    create(api, "北京客户", 'city = "北京"')
    api.batch([identify(userId="u9", traits={"city": "北京"}), identify(userId="u0", traits={"city": "上海"})])
    svc = api.runtime.segments()
    saved = svc.saved
    good = RefreshItem(saved.get("北京客户"), parse('city = "北京"'), incremental=True)
    bad = RefreshItem({"id": "x", "name": "坏的"}, parse('in segment "不存在"'), incremental=False)
    cur = api.runtime.events.cursor()

    def state() -> Any:
        return (
            cur.execute("SELECT * FROM segment_membership ORDER BY ALL").fetchall(),
            cur.execute("SELECT count(*) FROM events WHERE name LIKE 'segment_%'").fetchall(),
            sorted(meta_values(api, "segment_")),
        )

    before = state()
    ctx = svc.engine(fresh=False).context(None)
    with pytest.raises(SegmentCompileError, match="不存在"):
        saved.membership.refresh_many([good, bad], ctx)
    assert state() == before
    # The same refresh without the bad one writes the good one's changes.
    (result,) = saved.membership.refresh_many([good], ctx)
    assert (result.entered, result.exited) == (1, 1) and state() != before


def test_static_segments_are_snapshots(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京", "gender": "男"}) for i in range(2)])
    create(api, "首批北京", 'city = "北京"', kind="static")
    create(api, "首批北京的女性", 'in segment "首批北京" and gender = "女"')
    api.batch(
        [identify(userId="u5", traits={"city": "北京", "gender": "女"}), identify(userId="u0", traits={"gender": "女"})]
    )
    assert post(api, "/v1/segments/首批北京/refresh").json()["mode"] == "static"
    assert members(api, "首批北京") == {pid(api, "u0"), pid(api, "u1")}
    post(api, "/v1/segments/refresh")
    assert members(api, "首批北京的女性") == {pid(api, "u0")}  # u5 is in 北京 but not in the snapshot


def test_bad_requests_change_nothing(api: Api) -> None:
    api.batch([identify(userId="u1", traits={"city": "北京"})])
    create(api, "A", 'city = "北京"')
    create(api, "B", 'in segment "A"')
    assert post(api, "/v1/segments", {"name": "A", "expression": 'city = "上海"'}).status_code == 409
    r = post(api, "/v1/segments", {"name": "C", "expression": 'in segment "C"'})
    assert r.status_code == 422 and "refers to itself: C → C" in r.json()["error"]["message"]
    assert post(api, "/v1/segments", {"name": "D", "expression": 'citi = "北京"'}).status_code == 422
    assert post(api, "/v1/segments", {"name": "", "expression": 'city = "北京"'}).status_code == 422
    assert (
        post(api, "/v1/segments", {"name": "E", "expression": 'city = "北京"', "kind": "sometimes"}).status_code == 422
    )
    rule = {"name": "R", "group": "客户属性", "kind": "rule", "rule": 'in segment "A"'}
    assert post(api, "/v1/tags", rule).status_code == 201
    r = api.client.delete("/v1/segments/A", headers=ADMIN)
    assert r.status_code == 409 and 'segment "B", rule tag "R"' in r.json()["error"]["message"]
    assert api.client.get("/v1/segments/nope", headers=ADMIN).status_code == 404
    assert [s["name"] for s in api.client.get("/v1/segments", headers=ADMIN).json()] == ["A", "B"]
    assert api.client.delete("/v1/segments/B", headers=ADMIN).status_code == 200
    r = api.client.delete("/v1/segments/A", headers=ADMIN)
    assert r.status_code == 409 and 'is used by: rule tag "R"' in r.json()["error"]["message"]
    assert api.client.delete("/v1/tags/R", headers=ADMIN).status_code == 200
    assert api.client.delete("/v1/segments/A", headers=ADMIN).status_code == 200
    assert api.client.get("/v1/segments", headers=ADMIN).json() == []


def test_members_export_and_erasure(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京"}) for i in range(3)])
    create(api, "北京", 'city = "北京"')
    csv_body = api.client.get("/v1/segments/北京/members", params={"format": "csv"}, headers=ADMIN).text
    assert csv_body.splitlines()[0] == "person_id" and len(csv_body.splitlines()) == 4
    parquet = api.client.get("/v1/segments/北京/members", params={"format": "parquet"}, headers=ADMIN)
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    gone = pid(api, "u0")
    exported = api.client.get(f"/v1/persons/{gone}/export", headers=ADMIN).json()
    assert [(m["segment"], m["exited_at"]) for m in exported["segment_memberships"]] == [("北京", None)]
    assert api.client.delete(f"/v1/persons/{gone}", headers=ADMIN).status_code == 200
    assert gone not in members(api, "北京")
    cur = api.runtime.events.cursor()
    assert cur.execute("SELECT count(*) FROM segment_membership WHERE person_id = ?", [gone]).fetchone() == (0,)


def tag_holders(api: Api, tag: str) -> set[str]:
    r = api.client.get("/v1/tags", headers=ADMIN)
    assert r.status_code == 200
    cur = api.runtime.events.cursor()
    return {p for (p,) in cur.execute("SELECT person_id FROM tag_state WHERE tag = ?", [tag]).fetchall()}


def test_rule_tags_follow_their_expression(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京" if i < 2 else "上海"}) for i in range(4)])
    r = post(api, "/v1/tags", {"name": "北京客户", "group": "客户属性", "kind": "rule", "rule": 'city = "北京"'})
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "rule" and r.json()["holders_added"] == 2
    assert tag_holders(api, "北京客户") == {pid(api, "u0"), pid(api, "u1")}
    # People cannot tag a rule tag by hand.
    manual = api.client.put(f"/v1/persons/{pid(api, 'u3')}/tags/北京客户", headers=ADMIN)
    assert manual.status_code in (409, 422), manual.text
    api.batch([identify(userId="u0", traits={"city": "上海"}), identify(userId="u3", traits={"city": "北京"})])
    refreshed = post(api, "/v1/segments/refresh").json()["rule_tags"]
    assert refreshed == [{"tag": "北京客户", "holders": 2, "added": 1, "removed": 1}]
    assert tag_holders(api, "北京客户") == {pid(api, "u1"), pid(api, "u3")}
    assert post(api, "/v1/segments/count", {"expression": 'has tag "北京客户"'}).json() == {"count": 2}
    # A bad rule is refused with the segment error, and no tag is created.
    bad = post(api, "/v1/tags", {"name": "坏规则", "group": "客户属性", "kind": "rule", "rule": 'citi = "北京"'})
    assert bad.status_code == 422 and "city" in bad.json()["error"]["message"]
    assert "坏规则" not in {t["name"] for t in api.client.get("/v1/tags", headers=ADMIN).json()}


def test_tagging_every_member_of_a_segment(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京" if i < 3 else "上海"}) for i in range(5)])
    assert post(api, "/v1/tags", {"name": "重点", "group": "跟进状态"}).status_code == 201
    create(api, "北京", 'city = "北京"')
    r = post(api, "/v1/segments/北京/tag", {"tag": "重点"})
    assert r.status_code == 200 and r.json() == {"changed": 3}
    assert post(api, "/v1/segments/北京/tag", {"tag": "重点"}).json() == {"changed": 0}  # a retry changes nothing
    assert tag_holders(api, "重点") == {pid(api, f"u{i}") for i in range(3)}
    assert post(api, "/v1/segments/北京/tag", {"tag": "重点", "remove": True}).json() == {"changed": 3}
    assert post(api, "/v1/segments/北京/tag", {"tag": "没有这个"}).status_code == 404


def test_incremental_refresh_of_time_windows_equals_a_full_evaluation_as_time_passes(api: Api) -> None:
    rng = random.Random(11)
    start = NOW - timedelta(days=40)

    def when() -> str:
        return (start + timedelta(hours=rng.randrange(0, 40 * 24 + 12))).isoformat()  # a few after NOW

    api.batch(
        [identify(userId=f"u{i}", traits={"city": "北京", "joined": when()}, timestamp=when()) for i in range(12)]
    )
    api.batch([track("favorite", userId="u0", timestamp=when()), track("order_paid", userId="u1", timestamp=when())])
    definitions = {
        "近7天活跃": "did any in last 7d",
        "近3天收藏两次": "did favorite >= 2 in last 3d",
        "14到7天前": "did any between 14d ago and 7d ago",
        "近30天首单": "first did order_paid in last 30d",
        "新客": "first_seen >= 10d ago",
        "近期加入": "joined >= 5d ago",
        "北京沉睡": 'city = "北京" and not did any in last 2d',
        "近1月购买": "orders count >= 1 in last 1m",
        "收藏后下单": "did favorite then order_paid within 10d in last 30d",
        "近5天未收藏": "never did favorite in last 5d",
    }
    svc = api.runtime.segments()
    for name, text in definitions.items():
        svc.saved.create(name, text, now=NOW)
    now = NOW
    n_order = 0
    for step in range(8):
        if step % 2 == 0:  # new data now and then; time passes every step
            api.batch(
                [
                    track(rng.choice(["favorite", "viewed"]), userId=f"u{rng.randrange(14)}", timestamp=when())
                    for _ in range(6)
                ]
            )
            n_order += 1
            r = api.post_orders([order(f"w{n_order}", userId=f"u{rng.randrange(14)}", paid_at=when())])
            assert r.status_code == 200, r.text
        now += timedelta(hours=rng.choice([1, 7, 30, 60]))
        results = svc.saved.refresh(now=now)
        assert {r.mode for r in results} == {"incremental"}
        for name, text in definitions.items():
            assert set(svc.saved.members(name)) == svc.members(text, now=now), (step, name)


def test_date_traits_crossing_a_relative_date_are_re_evaluated(api: Api) -> None:
    """Only the trait's value moves across `5d ago` as time passes: no event is in the span."""
    long_ago = (NOW - timedelta(days=40)).isoformat()
    joined = {"u1": NOW - timedelta(days=4), "u2": NOW - timedelta(days=20)}
    api.batch([identify(userId=u, traits={"joined": at.isoformat()}, timestamp=long_ago) for u, at in joined.items()])
    svc = api.runtime.segments()
    svc.saved.create("近期加入", "joined >= 5d ago", now=NOW)
    assert svc.saved.members("近期加入") == [pid(api, "u1")]
    result = svc.saved.refresh("近期加入", now=NOW + timedelta(days=2))[0]
    assert (result.mode, result.exited, result.members) == ("incremental", 1, 0)


def test_what_only_a_full_refresh_can_keep_correct() -> None:
    from siyu.segments import parse
    from siyu.segments.membership import needs_full_refresh, time_anchors

    none: dict[str, Any] = {}
    assert needs_full_refresh(parse("did segment_entered in last 7d"), none.get)
    assert needs_full_refresh(parse("did signup where at >= 30d ago ever"), none.get)
    assert not needs_full_refresh(parse('did signup where at >= "2026-01-01" ever'), none.get)
    assert not needs_full_refresh(parse("did any in last 7d and joined >= 5d ago"), none.get)
    anchors, traits = time_anchors(parse('did any in last 7d and joined >= 5d ago and city = "北京"'), none.get)
    assert anchors == {(7, "d"), (0, "h"), (5, "d")} and traits
    nested = {"近期": parse("first_seen >= 2w ago")}
    assert time_anchors(parse('in segment "近期"'), nested.get) == ({(2, "w")}, False)


def test_refresh_reads_dates_in_the_brand_time_zone(api: Api) -> None:
    """A date-time without an offset is in the brand zone: 23:30 on 1 March in Shanghai is that day
    (read in UTC it would be 2 March 07:30 in Shanghai)."""
    api.batch([identify(userId="u1", traits={"joined": "2026-03-01 23:30"})])
    assert post(api, "/v1/segments/count", {"expression": 'joined = "2026-03-01"'}).json() == {"count": 1}
    assert create(api, "三月一日加入", 'joined = "2026-03-01"')["member_count"] == 1


def test_the_touched_persons_copy_keeps_every_event_row_a_definition_reads(api: Api) -> None:
    """The incremental refresh copies a touched person's events only from the earliest time its
    definitions read (membership.events_since): a window's start, a sequence's window, and all
    time for a first occurrence. Persons touched by an unrelated event are judged on every row
    the definition reads, alone or refreshed together."""
    at = {d: (NOW - timedelta(days=d)).isoformat() for d in (40, 25, 12, 11, 5, 1)}
    api.batch(
        [
            track("order_paid", userId="u1", timestamp=at[40]),  # u1's first order: before the window
            track("order_paid", userId="u1", timestamp=at[5]),
            track("order_paid", userId="u2", timestamp=at[5]),
            track("viewed", userId="u3", timestamp=at[12]),  # viewed, then favorite a day later
            track("favorite", userId="u3", timestamp=at[11]),
            track("favorite", userId="u4", timestamp=at[25]),  # only before the 20-day window
            track("viewed", userId="u4", timestamp=at[1]),
        ]
    )
    definitions = {
        "近30天首单": "first did order_paid in last 30d",
        "看后收藏": "did viewed then favorite within 2d in last 20d",
        "近20天收藏": "did favorite in last 20d",
        "近10天未下单": "never did order_paid in last 10d",
    }
    expected = {"近30天首单": 1, "看后收藏": 1, "近20天收藏": 1, "近10天未下单": 2}  # u2; u3; u3; u3, u4
    svc = api.runtime.segments()
    for name, text in definitions.items():
        svc.saved.create(name, text, now=NOW)
    now = NOW
    for step, alone in enumerate([*definitions, None]):
        now += timedelta(hours=1)
        api.batch([track("search", userId=u, timestamp=now.isoformat()) for u in ("u1", "u2", "u3", "u4")])
        results = svc.saved.refresh(alone, now=now)
        assert {r.mode for r in results} == {"incremental"} and all(r.evaluated == 4 for r in results)
        for name, text in definitions.items():
            assert set(svc.saved.members(name)) == svc.members(text, now=now), (step, name)
            assert len(svc.saved.members(name)) == expected[name], (step, name)
