"""Tags and the definitions that use them: renames carried through, deletes refused while in use,
loops refused, refresh in dependency order, event-tag rules checked against the catalogue, the
catalogue cache dropped on tag changes, tag groups renamed and deleted — through the API on SQLite
and PostgreSQL ops stores (the graph itself: tests/test_tag_graph.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from helpers import ADMIN, Api, identify, order, track
from siyu.store.ops.schema import changes, segments


def post(api: Api, path: str, body: Any = None) -> Any:
    return api.client.post(path, json=body, headers=ADMIN)


def create_segment(api: Api, name: str, expression: str, kind: str = "dynamic") -> None:
    r = post(api, "/v1/segments", {"name": name, "expression": expression, "kind": kind})
    assert r.status_code == 201, r.text


def create_tag(api: Api, name: str, rule: str | None = None, group: str = "客户属性") -> None:
    body: dict[str, Any] = {"name": name, "group": group}
    if rule is not None:
        body |= {"kind": "rule", "rule": rule}
    r = post(api, "/v1/tags", body)
    assert r.status_code == 201, r.text


def pid(api: Api, user: str) -> str:
    return api.person_id(f"user_id:{user}")


def members(api: Api, name: str) -> set[str]:
    r = api.client.get(f"/v1/segments/{name}/members", headers=ADMIN)
    assert r.status_code == 200, r.text
    return set(r.json()["person_ids"])


def holders(api: Api, tag: str) -> set[str]:
    return {p for (p,) in api.duck("SELECT person_id FROM tag_state WHERE tag = ?", [tag])}


def expressions(api: Api) -> dict[str, str]:
    return {s["name"]: s["expression"] for s in api.client.get("/v1/segments", headers=ADMIN).json()}


def rules(api: Api) -> dict[str, str]:
    return {t["name"]: t["rule"] for t in api.client.get("/v1/tags", headers=ADMIN).json() if t["kind"] == "rule"}


def change_rows(api: Api) -> int:
    with api.runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(changes)).scalar_one())


def exits(api: Api) -> int:
    return int(api.duck("SELECT count(*) FROM events WHERE name = 'segment_exited'")[0][0])


# -- 1. rename ----------------------------------------------------------------------------------------
def test_a_rename_rewrites_the_definitions_that_use_the_tag_and_keeps_their_members(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京" if i < 2 else "上海"}) for i in range(4)])
    create_tag(api, "高意向", group="跟进状态")
    for user in ("u0", "u2"):
        assert api.client.put(f"/v1/persons/user_id:{user}/tags/高意向", headers=ADMIN).status_code == 200
    create_segment(api, "V", 'has tag "高意向"')
    create_segment(api, "北京未跟进", 'city = "北京" and has no tag in ("高意向")')
    create_segment(api, "V快照", 'has tag "高意向"', kind="static")
    create_tag(api, "意向或北京", rule='has tag "高意向" or city = "北京"')
    before = {name: members(api, name) for name in expressions(api)}
    held = holders(api, "意向或北京")
    assert before["V"] == {pid(api, "u0"), pid(api, "u2")} and held == {pid(api, u) for u in ("u0", "u1", "u2")}

    r = api.client.patch("/v1/tags/高意向", json={"name": "强意向"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["rewritten"] == ['segment "V"', 'segment "V快照"', 'segment "北京未跟进"', 'rule tag "意向或北京"']
    assert expressions(api) == {
        "V": 'has tag "强意向"',
        "V快照": 'has tag "强意向"',
        "北京未跟进": 'city = "北京" and has no tag in ("强意向")',
    }
    assert rules(api) == {"意向或北京": 'has tag "强意向" or city = "北京"'}

    # A refresh after the rename changes nothing: nobody enters or exits, the rule tag keeps its holders.
    exited = exits(api)
    refreshed = post(api, "/v1/segments/refresh").json()
    assert [(s["segment"], s["entered"], s["exited"]) for s in refreshed["segments"]] == [
        ("V", 0, 0),
        ("北京未跟进", 0, 0),
    ]
    assert [(t["tag"], t["added"], t["removed"]) for t in refreshed["rule_tags"]] == [("意向或北京", 0, 0)]
    assert {name: members(api, name) for name in before} == before
    assert holders(api, "意向或北京") == held and exits(api) == exited


def test_a_rename_that_cannot_be_carried_through_is_refused_and_changes_nothing(api: Api) -> None:
    api.batch([identify(userId="u0")])
    create_tag(api, "高意向")
    assert api.client.put("/v1/persons/user_id:u0/tags/高意向", headers=ADMIN).status_code == 200
    # The history names the old tag; the rename itself is written as a removal and an addition.
    create_segment(api, "新近意向", 'did $tag_added where tag = "高意向" in last 7d')
    create_segment(api, "V", 'has tag "高意向"')
    feed = change_rows(api)
    r = api.client.patch("/v1/tags/高意向", json={"name": "强意向"}, headers=ADMIN)
    assert r.status_code == 409 and 'segment "新近意向"' in r.json()["error"]["message"]
    assert [t["name"] for t in api.client.get("/v1/tags", headers=ADMIN).json()] == ["高意向"]
    assert expressions(api)["V"] == 'has tag "高意向"' and change_rows(api) == feed


# -- 2. delete ------------------------------------------------------------------------------------------
def test_a_tag_in_use_cannot_be_deleted(api: Api) -> None:
    api.batch([identify(userId="u0", traits={"city": "北京"})])
    create_tag(api, "R")
    assert api.client.put("/v1/persons/user_id:u0/tags/R", headers=ADMIN).status_code == 200
    create_segment(api, "S", 'has tag "R"')
    create_tag(api, "非R", rule='not has tag "R"')
    feed = change_rows(api)
    r = api.client.delete("/v1/tags/R", headers=ADMIN)
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    assert 'segment "S"' in message and 'rule tag "非R"' in message
    assert {t["name"] for t in api.client.get("/v1/tags", headers=ADMIN).json()} == {"R", "非R"}
    assert holders(api, "R") == {pid(api, "u0")} and change_rows(api) == feed
    assert api.client.delete("/v1/segments/S", headers=ADMIN).status_code == 200
    assert api.client.delete("/v1/tags/非R", headers=ADMIN).status_code == 200
    assert api.client.delete("/v1/tags/R", headers=ADMIN).status_code == 200


# -- 3 and 5. loops -------------------------------------------------------------------------------------
def test_definitions_referring_to_themselves_are_refused(api: Api) -> None:
    api.batch([identify(userId="u0", traits={"city": "北京"})])
    r = post(api, "/v1/tags", {"name": "R", "group": "客户属性", "kind": "rule", "rule": 'has tag "R"'})
    assert r.status_code == 422 and "refers to itself: R → R" in r.json()["error"]["message"], r.text
    r = post(api, "/v1/segments", {"name": "自指", "expression": 'in segment "自指"'})
    assert r.status_code == 422 and "refers to itself: 自指 → 自指" in r.json()["error"]["message"], r.text
    # A definition saved before its tag existed (as an older version allowed): the loop closes
    # through a segment and two rule tags.
    at = datetime.now(UTC)
    with api.runtime.engine.begin() as conn:
        conn.execute(
            segments.insert().values(
                id="legacy", name="S1", kind="dynamic", expression='has tag "R2"', created_at=at, updated_at=at
            )
        )
    create_tag(api, "R1", rule='in segment "S1"')
    r = post(api, "/v1/tags", {"name": "R2", "group": "客户属性", "kind": "rule", "rule": 'has tag "R1"'})
    assert r.status_code == 422 and "refers to itself: R2 → R1 → S1 → R2" in r.json()["error"]["message"], r.text
    r = post(api, "/v1/segments", {"name": "S2", "expression": 'has tag "R1" and in segment "S2"'})
    assert r.status_code == 422 and "S2 → S2" in r.json()["error"]["message"]
    assert set(rules(api)) == {"R1"} and set(expressions(api)) == {"S1"}


# -- 4. refresh order -------------------------------------------------------------------------------------
def test_one_refresh_brings_segments_and_rule_tags_current(api: Api) -> None:
    api.batch([identify(userId=f"u{i}", traits={"city": "北京"}) for i in range(3)])
    # A级 reads B级, and sorts before it; HV reads A级.
    create_tag(api, "B级", rule="orders count >= 1")
    create_tag(api, "A级", rule='has tag "B级"')
    create_segment(api, "HV", 'has tag "A级"')
    create_segment(api, "北京", 'city = "北京"')
    api.orders([order("o1", userId="u0")])
    refreshed = post(api, "/v1/segments/refresh").json()
    assert members(api, "HV") == {pid(api, "u0")} and holders(api, "A级") == {pid(api, "u0")}
    assert [(s["segment"], s["entered"]) for s in refreshed["segments"]] == [("HV", 1), ("北京", 0)]

    # refresh_all reports every step of the same pass.
    from siyu.segments.tagging import refresh_all

    api.orders([order("o2", userId="u1")])
    found, tagged = refresh_all(api.runtime.segments())
    assert [(r.name, r.entered) for r in found] == [("HV", 1), ("北京", 0)]
    assert [(t.tag, t.added) for t in tagged] == [("A级", 1), ("B级", 1)]
    assert members(api, "HV") == {pid(api, "u0"), pid(api, "u1")}


# -- 6. event-tag rules -------------------------------------------------------------------------------------
def test_event_rules_name_known_events_and_properties_with_fitting_values(api: Api) -> None:
    create_tag(api, "奶粉用户", group="产品类型")

    def rule(event: str, prop: str, op: str, value: Any) -> Any:
        body = {"event": event, "property": prop, "op": op, "value": value, "tag": "奶粉用户"}
        return post(api, "/v1/tag-rules", body)

    def refused(r: Any, *words: str) -> None:
        assert r.status_code == 422, r.text
        for word in words:
            assert word in r.json()["error"]["message"], r.json()

    refused(rule("order_payd", "categories", "contains", "奶粉"), 'unknown event "order_payd"', '"order_paid"')
    refused(rule("order_paid", "catgories", "contains", "奶粉"), '"catgories"', 'did you mean "categories"')
    refused(rule("order_paid", "amount_fen", ">=", "abc"), "amount_fen", "never fire")
    refused(rule("order_paid", "categories", "=", "奶粉"), "is a list")
    refused(rule("order_paid", "channel", "contains", 3), "channel")
    refused(rule("page_viewed", "page", "=", "home"), 'unknown event "page_viewed"')
    assert api.client.get("/v1/tag-rules", headers=ADMIN).json() == []

    # A count fills the server's catalogue cache; an event that arrives later is still found.
    assert post(api, "/v1/segments/count", {"expression": "did any ever"}).status_code == 200
    api.batch([track("page_viewed", userId="u0", properties={"page": "home", "n": 2})])
    assert rule("page_viewed", "page", "=", "campaign").status_code == 201
    assert rule("page_viewed", "n", "in", [1, 2]).status_code == 201
    refused(rule("page_viewed", "n", "in", [1, "2"]), '"2"')
    refused(rule("page_viewed", "n", "=", 1.5), "1.5", "never fire")  # an integer property never equals 1.5
    refused(rule("page_viewed", "page", ">", "a"), "page", "never fire")  # text is not ordered, as in segments
    assert rule("order_paid", "categories", "contains", "奶粉").status_code == 201
    assert rule("order_paid", "amount_fen", "is set", None).status_code == 201
    assert len(api.client.get("/v1/tag-rules", headers=ADMIN).json()) == 4


# -- 7. the catalogue cache -------------------------------------------------------------------------------------
def test_tag_changes_reach_segment_validation_at_once(api: Api) -> None:
    api.batch([identify(userId="u0")])
    create_tag(api, "T")
    create_tag(api, "U")

    def count(expression: str) -> Any:
        return post(api, "/v1/segments/count", {"expression": expression})

    assert count('has tag "T" or has tag "U"').json() == {"count": 0}  # the catalogue is now cached
    assert api.client.delete("/v1/tags/T", headers=ADMIN).status_code == 200
    r = count('has tag "T"')
    assert r.status_code == 422 and 'unknown tag "T"' in r.json()["error"]["message"]
    assert api.client.patch("/v1/tags/U", json={"name": "U2"}, headers=ADMIN).status_code == 200
    assert count('has tag "U"').status_code == 422
    assert count('has tag "U2"').json() == {"count": 0}


# -- 8. tag groups -------------------------------------------------------------------------------------------------
def test_tag_groups_are_renamed_and_deleted_through_the_api(api: Api) -> None:
    create_tag(api, "宝妈")
    c = api.client
    r = c.patch("/v1/tag-groups/客户属性", json={"name": "客户画像"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["name"] == "客户画像" and r.json()["tags"] == 1, r.text
    groups = [g["name"] for g in c.get("/v1/tag-groups", headers=ADMIN).json()]
    assert groups[:3] == ["跟进状态", "客户来源", "客户画像"]  # the same place in the display order
    assert [t["group"] for t in c.get("/v1/tags", headers=ADMIN).json()] == ["客户画像"]
    assert c.patch("/v1/tag-groups/客户画像", json={"name": "客户来源"}, headers=ADMIN).status_code == 409
    assert c.patch("/v1/tag-groups/没有", json={"name": "新组"}, headers=ADMIN).status_code == 404
    assert c.patch("/v1/tag-groups/客户画像", json={"name": "x" * 31}, headers=ADMIN).status_code == 422
    r = c.delete("/v1/tag-groups/客户画像", headers=ADMIN)
    assert (
        r.status_code == 409 and "宝妈" in r.json()["error"]["message"] and "move them" in r.json()["error"]["message"]
    )
    assert c.patch("/v1/tags/宝妈", json={"group": "跟进状态"}, headers=ADMIN).status_code == 200
    assert c.delete("/v1/tag-groups/客户画像", headers=ADMIN).status_code == 200
    assert "客户画像" not in [g["name"] for g in c.get("/v1/tag-groups", headers=ADMIN).json()]
