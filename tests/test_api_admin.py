"""Keys, relations and groups through the API; timeline paging; lookups; settings validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from helpers import ADMIN, WRITE, Api, at, identify, track
from siyu.config import DEFAULT_IDENTITY_LIMITS, Settings


def test_keys_api_create_use_revoke(api: Api) -> None:
    r = api.client.post("/v1/keys", json={"kind": "write", "name": "mall"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    created = r.json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert api.post_batch([track("clicked", userId="U-1")], headers=headers).status_code == 200
    assert api.client.get("/v1/stats", headers=headers).status_code == 403
    listed = api.client.get("/v1/keys", headers=ADMIN).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert api.client.delete(f"/v1/keys/{created['id']}", headers=ADMIN).status_code == 200
    assert api.post_batch([track("clicked", userId="U-1")], headers=headers).status_code == 401
    assert api.client.delete(f"/v1/keys/{created['id']}", headers=ADMIN).status_code == 404
    assert api.client.post("/v1/keys", json={"kind": "root", "name": "x"}, headers=ADMIN).status_code == 422
    assert api.client.post("/v1/keys", json={"kind": "write", "name": "x"}, headers=WRITE).status_code == 403


def test_relations_and_groups_api(api: Api) -> None:
    assert api.client.put("/v1/staff/wangfang", json={"name": "王芳"}, headers=ADMIN).status_code == 200
    body = {"external_userid": "wmA", "staff_userid": "wangfang", "state": "store-01", "add_time": at(0)}
    r = api.client.post("/v1/relations", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    person = r.json()["person_id"]
    profile = api.person("wecom_external_userid:wmA")
    assert profile["id"] == person and profile["owner_staff_id"] == "wangfang"
    r = api.client.post("/v1/groups/wr1/members", json={"external_userid": "wmA", "join_time": at(5)}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["person_id"] == person
    assert api.client.delete("/v1/groups/wr1/members/wmA", headers=ADMIN).status_code == 200
    assert api.client.delete("/v1/relations/wmA/wangfang?by=staff", headers=ADMIN).status_code == 200
    names = [e["name"] for e in api.person("wecom_external_userid:wmA")["timeline"]["items"]]
    for name in ("$relation_added", "$owner_changed", "$group_joined", "$group_left", "$relation_deleted"):
        assert name in names
    assert api.person("wecom_external_userid:wmA")["owner_staff_id"] is None


def test_relation_api_rejects_bad_input_in_the_error_shape(api: Api) -> None:
    before = api.snapshot()
    r = api.client.post("/v1/relations", json={"external_userid": "wmA", "staff_userid": "ghost"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_relation"
    r = api.client.post(
        "/v1/relations", json={"external_userid": "wmA", "staff_userid": "x", "state": "s" * 31}, headers=ADMIN
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert any(e["field"].endswith("state") for e in r.json()["error"]["errors"])
    r = api.client.get("/v1/persons/user_id:x?limit=0", headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert api.snapshot() == before


def test_timeline_pages_cover_every_event_once_even_with_equal_timestamps(api: Api) -> None:
    same = at(10)
    messages = [track("clicked", userId="U-page", timestamp=same, properties={"n": i}) for i in range(7)]
    messages.append(identify(userId="U-page", timestamp=same, traits={"a": 1, "b": 2, "c": 3}))
    api.batch(messages)
    expected = {
        e[0]
        for e in api.duck("SELECT event_id FROM events_resolved WHERE person_id = ?", [api.person_id("user_id:U-page")])
    }
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        url = "/v1/persons/user_id:U-page?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.client.get(url, headers=ADMIN).json()["timeline"]
        seen += [item["event_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected
    bad = api.client.get("/v1/persons/user_id:U-page?cursor=garbage", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


def test_lookups_are_normalised_like_ingest(api: Api) -> None:
    api.batch([identify(userId="U-n", identities={"phone": "+86 138 0013 8000", "email": "Ann@Example.COM"})])
    pid = api.person_id("user_id:U-n")
    for ref in ("phone:13800138000", "phone:138-0013-8000", "email:ann@example.com", "email:ANN@example.com"):
        assert api.person(ref)["id"] == pid, ref
    assert api.get_person("phone:12345").status_code == 404


def test_landline_phones_are_identities(api: Api) -> None:
    api.batch([identify(userId="U-l", identities={"phone": "010-6552 9988"})])
    assert api.person("phone:+861065529988")["id"] == api.person_id("user_id:U-l")


def test_alias_previous_id_matches_a_known_user_id(api: Api) -> None:
    api.batch([identify(userId="old-user", identities={"member_id": "M-old"}, timestamp=at(0))])
    api.batch([track("clicked", anonymousId="dev-9", timestamp=at(1))])
    # previousId is a known user id here: the alias links dev-9's person to old-user's person.
    api.batch(
        [{"type": "alias", "messageId": "al-1", "anonymousId": "dev-9", "previousId": "old-user", "timestamp": at(2)}]
    )
    profile = api.person("user_id:old-user")
    assert ("anonymous_id", "dev-9") in {(i["type"], i["value"]) for i in profile["identities"]}
    assert ("anonymous_id", "old-user") not in {(i["type"], i["value"]) for i in profile["identities"]}


def test_merging_persons_moves_traits_and_says_so(api: Api) -> None:
    api.batch([identify(anonymousId="dev-t", traits={"city": "杭州"}, timestamp=at(0))])
    api.batch([identify(userId="U-t", traits={"gender": "女"}, timestamp=at(1))])
    api.batch([track("clicked", userId="U-t", anonymousId="dev-t", timestamp=at(2))])
    profile = api.person("user_id:U-t")
    assert profile["traits"] == {"city": "杭州", "gender": "女"}
    changes = [e for e in profile["timeline"]["items"] if e["name"] == "$trait_changed"]
    merged = [c["properties"] for c in changes if c["properties"].get("merged_from")]
    assert [(c["key"], c["new"]) for c in merged] == [("city", "杭州")]


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown identity types"):
        Settings(identity_limits={"passport": 1})
    with pytest.raises(ValidationError, match="at least 1"):
        Settings(identity_limits={"phone": 0})
    limits = Settings(identity_limits={"phone": 5}).identity_limits
    assert limits == {**DEFAULT_IDENTITY_LIMITS, "phone": 5}
