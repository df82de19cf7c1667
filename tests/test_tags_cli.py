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
