"""Segments through the real ingest path, the REST API and the CLI, on SQLite and PostgreSQL ops stores.

Persons, traits, events, orders, relations, groups and tags are written through the services; the
counts are checked against plain Python over the messages that were sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers import ADMIN, Api, identify, order, track
from siyu.cli.main import app
from siyu.config import Settings
from siyu.relations.service import RelationService
from siyu.runtime import Runtime
from siyu.tags.service import TagService

NOW = datetime.now(UTC)
CITIES = ["北京", "上海", "杭州"]


def _people() -> list[dict[str, Any]]:
    return [
        {"user": f"u{i}", "city": CITIES[i % 3], "gender": "女" if i % 2 else "男", "orders": i % 4, "fav": i % 5 == 0}
        for i in range(30)
    ]


def _load(api: Api) -> list[dict[str, Any]]:
    people = _people()
    msgs: list[dict[str, Any]] = []
    for i, p in enumerate(people):
        at = (NOW - timedelta(days=400 - i)).isoformat()
        msgs.append(identify(userId=p["user"], traits={"city": p["city"], "gender": p["gender"]}, timestamp=at))
        if p["fav"]:
            msgs.append(track("favorite", userId=p["user"], timestamp=(NOW - timedelta(days=3)).isoformat()))
    api.batch(msgs)
    orders = [
        order(
            f"o-{p['user']}-{k}",
            userId=p["user"],
            amount_fen=20_000,
            paid_at=(NOW - timedelta(days=10 + k)).isoformat(),
        )
        for p in people
        for k in range(p["orders"])
    ]
    r = api.post_orders(orders)
    assert r.status_code == 200, r.text
    relations = RelationService(api.runtime.ingestor)
    relations.upsert_staff("zhangsan", "张三")
    api.batch([identify(userId="u1", identities={"wecom_external_userid": "wm1"})])
    relations.add_relation("wm1", "zhangsan")
    relations.join_group("chat-1", "wm1")
    tagger = TagService(api.runtime.ingestor)
    tagger.create_tag("高意向", "跟进状态")
    for user in ("u2", "u3"):
        tagger.add("高意向", f"user_id:{user}", by="test")
    return people


def count(api: Api, **body: Any) -> Any:
    return api.client.post("/v1/segments/count", json=body, headers=ADMIN)


def test_counts_match_the_messages_sent(api: Api) -> None:
    people = _load(api)
    expect = {
        'city = "北京" and gender = "女"': sum(p["city"] == "北京" and p["gender"] == "女" for p in people),
        "did order_paid >= 2 in last 90d where amount_fen >= 10000": sum(p["orders"] >= 2 for p in people),
        "orders count = 0": sum(p["orders"] == 0 for p in people),
        "did favorite in last 7d and first_seen <= 365d ago": sum(
            p["fav"] and 400 - i >= 365 for i, p in enumerate(people)
        ),
        'has tag "高意向"': 2,
        'owner = "zhangsan" and in group "chat-1"': 1,
        "total_spend_fen >= 60000": sum(p["orders"] >= 3 for p in people),
    }
    for text, n in expect.items():
        r = count(api, expression=text)
        assert r.status_code == 200, r.text
        assert r.json() == {"count": n}, text
    tree = {"type": "compare", "field": {"trait": "city"}, "op": "=", "value": "上海"}
    assert count(api, tree=tree).json() == {"count": sum(p["city"] == "上海" for p in people)}
    members = api.client.post("/v1/segments/members", json={"expression": 'city = "杭州"'}, headers=ADMIN).json()
    assert members["count"] == 10 and len(members["person_ids"]) == 10


def test_bad_expressions_say_what_and_where(api: Api) -> None:
    _load(api)
    r = count(api, expression='gender = "女" and city "北京"')
    assert r.status_code == 422
    detail = r.json()["error"]["errors"][0]
    assert detail["kind"] == "SegmentSyntaxError" and detail["column"] == 23
    r = count(api, expression='citi = "北京"')
    assert r.status_code == 422 and "city" in r.json()["error"]["errors"][0]["problems"][0]["suggestions"]
    r = count(api, expression="did favourite ever")
    assert r.status_code == 422 and "favorite" in r.json()["error"]["message"]
    r = count(api, expression="city = 5")
    assert r.status_code == 422 and r.json()["error"]["errors"][0]["problems"][0]["code"] == "type_mismatch"
    assert count(api, expression="x", tree={"type": "ever"}).status_code == 422  # both forms
    assert count(api).status_code == 422  # neither
    assert count(api, expression="a" * 30_000).status_code == 422  # oversized
    assert api.client.post("/v1/segments/count", json={"expression": 'city = "北京"'}).status_code == 401
    # Hostile values are values: nothing reaches SQL as text, the tables are intact.
    r = count(api, expression='city = "\'; DROP TABLE events; --"')
    assert r.status_code == 200 and r.json() == {"count": 0}
    assert count(api, expression='city = "北京"').json()["count"] == 10


def test_segment_cli_count_and_members(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Runtime.open(Settings(home=home)) as rt:
        from siyu.ingest.validate import Validator

        checked = Validator(rt.settings).messages(
            [
                {"type": "identify", "messageId": f"m{i}", "userId": f"u{i}", "traits": {"city": CITIES[i % 3]}}
                for i in range(9)
            ]
        )
        rt.ingestor.ingest_messages(checked.messages)
    runner = CliRunner()
    env = {"SIYU_HOME": str(home)}
    result = runner.invoke(app, ["segment", "count", 'city = "北京"', "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"count": 3}
    result = runner.invoke(app, ["segment", "count", 'citi = "北京"'], env=env)
    assert result.exit_code == 1 and 'did you mean "city"' in result.stderr
    out = tmp_path / "members.parquet"
    result = runner.invoke(
        app, ["segment", "members", 'city = "上海"', "--format", "parquet", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.stderr
    assert pq.read_table(out).num_rows == 3
    result = runner.invoke(app, ["segment", "members", 'city = "上海"'], env=env)
    assert (
        result.exit_code == 0 and result.stdout.splitlines()[0] == "person_id" and len(result.stdout.splitlines()) == 4
    )


def test_a_new_event_name_can_be_used_at_once(api: Api) -> None:
    """The catalogue is cached; a name it does not know yet makes it read the stores again."""
    _load(api)
    assert count(api, expression='city = "北京"').status_code == 200  # the catalogue is now cached
    api.batch([track("直播间下单", userId="u1")])
    r = count(api, expression="did 直播间下单 ever")
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 1}
    still_unknown = count(api, expression="did 没有这个事件 ever")
    assert still_unknown.status_code == 422 and "没有这个事件" in still_unknown.json()["error"]["message"]
