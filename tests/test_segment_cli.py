"""``siyu segment …`` through the Typer app: the tree (JSON form) and back, every error shown (and as
the API's JSON error object with ``--json``), and CSV that pipes into ``siyu tag add``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from siyu.api.app import create_app
from siyu.cli.main import app
from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.segments import parse, to_json, to_text
from test_segment_compile import ISSUE_EXAMPLES

ADMIN = {"Authorization": "Bearer test-admin"}


def run(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"SIYU_HOME": str(home)}, input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Six persons with city, gender and age; favorite and add_contact events; the tags 高意向 and
    已流失; the saved segment 超级用户."""
    from siyu.ingest.validate import Validator
    from siyu.tags.service import TagService

    home = tmp_path / "home"
    at = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    messages: list[dict[str, Any]] = [
        {
            "type": "identify",
            "messageId": f"i{i}",
            "userId": f"u{i}",
            "traits": {"city": "北京" if i % 2 else "上海", "gender": "女", "age": 20 + i},
        }
        for i in range(6)
    ]
    messages += [
        {"type": "track", "messageId": "t1", "userId": "u1", "event": "favorite", "timestamp": at},
        {"type": "track", "messageId": "t2", "userId": "u2", "event": "add_contact", "timestamp": at},
    ]
    with Runtime.open(Settings(home=home)) as rt:
        rt.ingestor.ingest_messages(Validator(rt.settings).messages(messages).messages)
        tags = TagService(rt.ingestor)
        tags.create_tag("高意向", "跟进状态")
        tags.create_tag("已流失", "跟进状态")
    code, _, err = run(home, "segment", "create", "超级用户", "age >= 24")
    assert code == 0, err
    return home


def test_parse_and_render_round_trip_the_issue_examples(home: Path) -> None:
    """text → tree → text → tree with the CLI: ``parse --json`` and ``render`` (argument and stdin)."""
    for text in ISSUE_EXAMPLES:
        code, out, err = run(home, "segment", "parse", text, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data == {"tree": to_json(parse(text)), "expression": to_text(parse(text))}
        code, out, err = run(home, "segment", "render", json.dumps(data["tree"], ensure_ascii=False))
        assert code == 0, err
        assert out == data["expression"] + "\n"
        code, out, _ = run(home, "segment", "render", "-", "--json", stdin=json.dumps(data["tree"]))
        assert code == 0 and json.loads(out) == {"expression": data["expression"]}
        rendered = json.loads(out)["expression"]
        again = json.loads(run(home, "segment", "parse", rendered, "--json")[1])
        assert again["tree"] == data["tree"], text
    # Without --json: the canonical text, then the tree.
    code, out, _ = run(home, "segment", "parse", "city='北京'  and  age>=21")
    first, rest = out.split("\n", 1)
    assert code == 0 and first == 'city = "北京" and age >= 21'
    assert json.loads(rest) == to_json(parse('city = "北京" and age >= 21'))
    code, out, _ = run(home, "segment", "list", "--json")
    assert code == 0 and json.loads(out)[0]["tree"] == to_json(parse("age >= 24"))


def test_every_error_is_shown_with_its_position_and_suggestion(home: Path) -> None:
    text = 'citi = "北京" and age = "x" and 性别 = "女"'
    code, out, err = run(home, "segment", "count", text)
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, err
    assert 'line 1, column 1: unknown trait "citi"; did you mean "city"?' in errors[0]
    assert "第 1 行第 1 列" in errors[0]
    assert "line 1, column 17: trait age is an integer" in errors[1]
    assert f'line 1, column {text.index("性别") + 1}: unknown trait "性别"' in errors[2]
    assert "more" not in err and "另有" not in err
    # A caret under each place: under "citi", under age = "x", under 性别; a Chinese character is
    # two cells wide, so the carets after "北京" move two cells right.
    lines = err.splitlines()
    assert lines[1] == lines[4] == lines[7] == f"  {text}"
    assert lines[2] == "  ^^^^"
    assert lines[5] == "  " + " " * (16 + 2) + "^" * len('age = "x"')
    assert lines[8] == "  " + " " * (text.index("性别") + 2) + "^^^^"
    # A tree has no position: each problem names its path.
    tree = {"type": "or", "items": [{"type": "compare", "field": {"trait": "citi"}, "op": "=", "value": 1}] * 2}
    code, _, err = run(home, "segment", "render", json.dumps(tree))
    assert code == 1
    assert [line.split(" / ")[1] for line in err.splitlines()] == [
        '$.items[0].field: unknown trait "citi"; did you mean "city"?',
        '$.items[1].field: unknown trait "citi"; did you mean "city"?',
    ]


def test_json_errors_are_the_apis_error_object(home: Path) -> None:
    cases = [
        ['citi = "北京" and age = "x"', 'gender = "女" and city "北京"', "x" * 10_001, "did favourite ever"],
        [json.dumps({"type": "compare", "field": {"trait": "citi"}, "op": "=", "value": 1}), "[1]"],
    ]
    printed: dict[tuple[str, str], Any] = {}
    for text in cases[0]:
        for command in ("count", "parse"):
            code, out, err = run(home, "segment", command, text, "--json")
            assert code == 1 and err.startswith("error: "), (command, text)
            printed[(command, text)] = json.loads(out)
    for tree in cases[1]:
        code, out, _ = run(home, "segment", "render", tree, "--json")
        assert code == 1
        printed[("render", tree)] = json.loads(out)
    # The API's request model refuses a tree that is not an object before reading it; the CLI says why.
    not_an_object = printed.pop(("render", "[1]"))["error"]
    assert not_an_object["code"] == "invalid_segment" and not_an_object["errors"][0]["path"] == "$"
    code, out, _ = run(home, "segment", "history", "没有这个人群", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"
    code, out, _ = run(home, "segment", "render", "{not json", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid_segment"

    found = printed[("count", cases[0][0])]["error"]["errors"][0]["problems"]
    assert [(p["code"], p["line"], p["column"]) for p in found] == [("unknown_trait", 1, 1), ("type_mismatch", 1, 17)]
    assert found[0]["suggestions"] == ["city"]
    # The very objects the API answers.
    settings = Settings(home=home, admin_keys=["test-admin"])
    with Runtime.open(settings) as rt, TestClient(create_app(settings, rt)) as client:
        for (command, text), body in printed.items():
            if command == "render":
                r = client.post("/v1/segments/render", json={"tree": json.loads(text)}, headers=ADMIN)
            else:
                r = client.post(f"/v1/segments/{command}", json={"expression": text}, headers=ADMIN)
            assert r.status_code == 422 and r.json() == body, (command, text)


def test_members_csv_has_unix_line_endings_and_pipes_into_tag_add(home: Path, tmp_path: Path) -> None:
    code, out, err = run(home, "segment", "members", 'city = "北京"')
    assert code == 0, err
    assert "\r" not in out and out.endswith("\n")
    rows = out.split("\n")
    assert rows[0] == "person_id" and len(rows) == 5 and rows[-1] == ""
    saved = tmp_path / "members.csv"
    code, _, err = run(home, "segment", "members", "超级用户", "--out", str(saved))
    assert code == 0, err
    data = saved.read_bytes()
    assert b"\r" not in data and data.endswith(b"\n")
    ids = data.decode().split("\n")[1:-1]
    assert len(ids) == 2
    # What `... | tail -n +2 | while read id; do siyu tag add 高意向 "$id"; done` does.
    for line in [rows[1], *ids]:
        code, out, err = run(home, "tag", "add", "高意向", line)
        assert code == 0, err
    code, out, _ = run(home, "segment", "count", 'has tag "高意向"', "--json")
    assert json.loads(out) == {"count": len({rows[1], *ids})}
