"""``siyu tag …`` end to end through the Typer app, honouring SIYU_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siyu.cli.main import app
from siyu.config import Settings
from siyu.runtime import Runtime


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"SIYU_HOME": str(home)})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    with Runtime.open(Settings(home=home)) as rt:
        from siyu.ingest.validate import Validator

        checked = Validator(rt.settings).messages(
            [{"type": "identify", "messageId": f"m{i}", "userId": f"u{i}"} for i in range(3)]
        )
        rt.ingestor.ingest_messages(checked.messages)
    return home


def test_tag_cli(home: Path, tmp_path: Path) -> None:
    code, out, _ = run(home, "tag", "groups", "--json")
    assert code == 0 and json.loads(out)[0]["name"] == "跟进状态"
    assert run(home, "tag", "create", "高意向", "--group", "跟进状态")[0] == 0
    code, _, err = run(home, "tag", "create", "高意向", "--group", "客户属性")
    assert code == 1 and "unique across groups" in err
    code, out, _ = run(home, "tag", "add", "高意向", "user_id:u0")
    assert code == 0 and json.loads(out)["changed"] == 1
    assert json.loads(run(home, "tag", "add", "高意向", "user_id:u0")[1])["changed"] == 0
    code, _, err = run(home, "tag", "add", "高意向", "user_id:u0", "--staff", "nobody")
    assert code == 1 and "unknown staff" in err

    csv = tmp_path / "t.csv"
    csv.write_text("person_id\nuser_id:u1\nuser_id:missing\n", encoding="utf-8")
    code, _, err = run(home, "tag", "import", str(csv), "--tag", "高意向")
    assert code == 1 and "line 3, person" in err
    csv.write_text("person_id\nuser_id:u1\nuser_id:u2\n", encoding="utf-8")
    code, out, _ = run(home, "tag", "import", str(csv), "--tag", "高意向")
    assert code == 0 and json.loads(out)["changed"] == 2
    code, out, _ = run(home, "tag", "list", "--json")
    assert [(t["name"], t["persons"]) for t in json.loads(out)] == [("高意向", 3)]
    code, out, _ = run(home, "tag", "import", str(csv), "--tag", "高意向", "--remove")
    assert json.loads(out)["changed"] == 2

    code, out, _ = run(home, "tag", "rule", "add", "order_paid", "categories", "contains", "奶粉", "--tag", "高意向")
    assert code == 0 and json.loads(out)["value"] == "奶粉"
    rules = json.loads(run(home, "tag", "rule", "list")[1])
    assert len(rules) == 1
    assert run(home, "tag", "rule", "remove", rules[0]["id"])[0] == 0
    assert run(home, "tag", "rule", "remove", rules[0]["id"])[0] == 1

    code, out, _ = run(home, "person", "show", "user_id:u0", "--json")
    assert [t["tag"] for t in json.loads(out)["tags"]] == ["高意向"]
    assert run(home, "tag", "remove", "高意向", "user_id:u0")[0] == 0
    assert run(home, "tag", "delete", "高意向", "--yes")[0] == 0


def test_tag_cli_keeps_segments_and_rule_tags_whole(home: Path) -> None:
    assert run(home, "tag", "create", "R", "--group", "客户属性")[0] == 0
    assert run(home, "tag", "add", "R", "user_id:u0")[0] == 0
    code, _, err = run(home, "segment", "create", "S", 'has tag "R"')
    assert code == 0, err
    # Deleting a tag a segment tests is refused, naming the segment; nothing changes.
    code, _, err = run(home, "tag", "delete", "R", "--yes")
    assert code == 1 and 'segment "S"' in err
    assert [(t["name"], t["persons"]) for t in json.loads(run(home, "tag", "list", "--json")[1])] == [("R", 1)]
    # A rename carries through to the segment.
    code, out, err = run(home, "tag", "rename", "R", "R2")
    assert code == 0 and 'rewritten: segment "S"' in out, err
    code, out, _ = run(home, "segment", "list")
    assert out.split("\t")[-1].strip() == 'has tag "R2"'
    # Loops and self-references are named.
    code, _, err = run(home, "tag", "create", "环", "--group", "客户属性", "--rule", 'has tag "环"')
    assert code == 1 and "refers to itself: 环 → 环" in err
    code, _, err = run(home, "segment", "create", "自指", 'in segment "自指"')
    assert code == 1 and "refers to itself: 自指 → 自指" in err
    assert [t["name"] for t in json.loads(run(home, "tag", "list", "--json")[1])] == ["R2"]


def test_refresh_from_the_cli_brings_segments_after_rule_tags_current(home: Path) -> None:
    assert run(home, "tag", "create", "高价值", "--group", "客户属性", "--rule", "orders count >= 1")[0] == 0
    assert run(home, "segment", "create", "HV", 'has tag "高价值"')[0] == 0
    with Runtime.open(Settings(home=home)) as rt:
        from siyu.ingest.validate import Validator

        checked = Validator(rt.settings).orders(
            [{"order_id": "o1", "userId": "u1", "status": "paid", "amount_fen": 100, "paid_at": "2026-01-02T00:00:00Z"}]
        )
        assert not checked.errors, checked.errors
        rt.ingestor.ingest_orders(checked.orders)
    code, out, err = run(home, "segment", "refresh", "--json")
    assert code == 0, err
    assert [(s["segment"], s["members"]) for s in json.loads(out)["segments"]] == [("HV", 1)]


def test_event_rules_must_name_what_the_stores_know(home: Path) -> None:
    assert run(home, "tag", "create", "奶粉用户", "--group", "产品类型")[0] == 0
    code, _, err = run(home, "tag", "rule", "add", "order_payd", "categories", "contains", "奶粉", "--tag", "奶粉用户")
    assert code == 1 and 'did you mean "order_paid"' in err
    code, _, err = run(home, "tag", "rule", "add", "order_paid", "catgories", "contains", "奶粉", "--tag", "奶粉用户")
    assert code == 1 and 'did you mean "categories"' in err
    code, _, err = run(home, "tag", "rule", "add", "order_paid", "amount_fen", ">=", "many", "--tag", "奶粉用户")
    assert code == 1 and "amount_fen" in err and "never fire" in err
    assert json.loads(run(home, "tag", "rule", "list")[1]) == []


def test_tag_group_rename_and_delete(home: Path) -> None:
    assert run(home, "tag", "group-create", "会员等级")[0] == 0
    assert run(home, "tag", "create", "金卡", "--group", "会员等级")[0] == 0
    code, out, err = run(home, "tag", "group-rename", "会员等级", "会员")
    assert code == 0 and "会员等级 → 会员" in out, err
    assert [t["group"] for t in json.loads(run(home, "tag", "list", "--json")[1])] == ["会员"]
    code, _, err = run(home, "tag", "group-rename", "会员", "客户来源")
    assert code == 1 and "already exists" in err
    code, _, err = run(home, "tag", "group-rename", "没有", "新组")
    assert code == 1 and "unknown group" in err
    code, _, err = run(home, "tag", "group-delete", "会员")
    assert code == 1 and "金卡" in err and "move them" in err
    code, _, err = run(home, "tag", "rename", "金卡", "--group", "客户属性")
    assert code == 0, err
    assert run(home, "tag", "group-delete", "会员")[0] == 0
    groups = [g["name"] for g in json.loads(run(home, "tag", "groups", "--json")[1])]
    assert "会员" not in groups and len(groups) == 6
