"""File import: formats, rejects, idempotency, and the vectorised Parquet path against the row path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from siyu.cli.main import app
from siyu.config import Settings
from siyu.ingest.files import ImportFileError, import_file
from siyu.runtime import Runtime

runner = CliRunner()


def cli(home: Path, *args: str) -> str:
    result = runner.invoke(app, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_csv_customers_import_rejects_and_reimport(tmp_path: Path) -> None:
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "member_id,phone,city,gender,age\n"
        "M1,13800138000,北京,女,32\n"
        "M2,+86 139-0000-0000,上海,男,41\n"
        "M3,notaphone,上海,男,41\n"
        "null,,杭州,女,20\n",
        encoding="utf-8",
    )
    home = tmp_path / "home"
    first = json.loads(cli(home, "import", "customers", str(csv_file), "--json"))
    assert first == {"accepted": 2, "rejected": 2, "duplicates": 0}
    rejects = [json.loads(line) for line in (tmp_path / "customers.csv.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [4, 5]
    assert rejects[0]["errors"][0]["field"] == "identities.phone"
    assert "no usable identity" in rejects[1]["errors"][0]["reason"]
    second = json.loads(cli(home, "import", "customers", str(csv_file), "--json"))
    assert second == {"accepted": 0, "rejected": 2, "duplicates": 2}
    stats = json.loads(cli(home, "stats", "--json"))
    assert stats["persons"] == 2
    profile = json.loads(cli(home, "person", "show", "phone:+8613900000000", "--json"))
    assert profile["traits"] == {"city": "上海", "gender": "男", "age": 41}


def test_jsonl_invalid_lines_are_rejected_with_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    good = {"type": "track", "messageId": "a", "event": "favorite", "userId": "u1"}
    f.write_bytes(
        orjson.dumps(good)
        + b"\n"
        + b"{not json\n"
        + b'{"type":"track","messageId":"b","event":"x"}\n'
        + b'\xff\xfe{"bad": "utf8"}\n'
    )
    out = json.loads(cli(tmp_path / "home", "import", "events", str(f), "--json"))
    assert out == {"accepted": 1, "rejected": 3, "duplicates": 0}
    lines = [json.loads(x)["line"] for x in (tmp_path / "events.jsonl.rejects.jsonl").read_text().splitlines()]
    assert sorted(lines) == [2, 3, 4]


def test_unknown_kind_and_missing_file_fail_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path / "h"), "import", "widgets", "x.csv"])
    assert result.exit_code != 0 and "unknown kind" in result.output
    result = runner.invoke(app, ["--home", str(tmp_path / "h"), "import", "events", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0 and "no such file" in result.output


@pytest.mark.parametrize("kind", ["events", "orders", "customers"])
def test_a_file_that_is_not_parquet_fails_cleanly_and_stores_nothing(tmp_path: Path, kind: str) -> None:
    """Another format named .parquet, and a real Parquet file cut short: one clear error naming the
    file (no traceback), through the CLI and import_file, and nothing stored."""
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"message_id": ["a", "b"], "event": ["view", "view"], "userId": ["u1", "u2"]}), whole)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    other = tmp_path / "other.parquet"
    other.write_text("message_id,event\na,view\n")
    home = tmp_path / "home"
    for file in (cut, other):
        result = runner.invoke(app, ["--home", str(home), "import", kind, str(file)])
        assert result.exit_code == 1, result.output
        assert f"{file.name}: not a readable Parquet file" in result.output
        assert "Traceback" not in result.output
        with Runtime.open(Settings(home=home)) as rt, pytest.raises(ImportFileError, match="not a readable Parquet"):
            import_file(rt.ingestor, file, kind)  # type: ignore[arg-type]
        assert not file.with_name(file.name + ".rejects.jsonl").exists()
    assert json.loads(cli(home, "stats", "--json")) == {"persons": 0, "identities": 0, "events": 0, "orders": 0}


def _hostile_table(now: datetime) -> pa.Table:
    rows = [
        # message_id, event, ts, member_id, anonymous_id, phone, sku, note
        ("m1", "view", now - timedelta(days=3), "M1", "A1", None, "s1", "ok"),
        ("m2", "view", now - timedelta(days=2), None, "A1", "13800138000", "s2", None),
        ("m3", "favorite", now - timedelta(days=1), "M2", "A2", "+86 139 0000 0000", None, "ok"),
        ("m1", "view", now - timedelta(days=1), "M1", "A1", None, "s1", "duplicate in file"),
        ("m4", "$secret", now, "M1", None, None, None, None),
        ("m5", "view", now + timedelta(days=30), "M1", None, None, None, None),
        ("m6", "view", datetime(1999, 1, 1, tzinfo=UTC), "M1", None, None, None, None),
        ("m7", "view", now, "null", "undefined", "", None, None),
        ("m8", "view", now, "M3", None, "12345", None, None),
        ("m9", "view", now, "M3", None, None, "x" * 5000, None),
        ("m10", "view", now, "M3", None, None, "a\x00b", None),
        ("", "view", now, "M3", None, None, None, None),
        ("m11", "'; DROP TABLE persons; --", now, "M3", "A3", None, "' OR 1=1 --", "ok"),
        ("m12", "view", now, "M4", "A2", None, None, "anonymous A2 joins M4: M2 and M4 conflict (limit 1)"),
        ("m13", "view", None, "M5", None, None, None, "no timestamp: now"),
    ]
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "message_id": pa.array(cols[0], pa.string()),
            "event": pa.array(cols[1], pa.string()),
            "timestamp": pa.array(cols[2], pa.timestamp("us", tz="UTC")),
            "member_id": pa.array(cols[3], pa.string()),
            "anonymous_id": pa.array(cols[4], pa.string()),
            "phone": pa.array(cols[5], pa.string()),
            "sku": pa.array(cols[6], pa.string()),
            "note": pa.array(cols[7], pa.string()),
        }
    )


def _snapshot(rt: Runtime) -> dict[str, object]:
    cur = rt.events.cursor()
    events = cur.execute(
        "SELECT event_id, name, ts, properties, identity_type, identity_value, identities "
        "FROM events_with_identities WHERE message_type = 'track' ORDER BY event_id"
    ).fetchall()
    persons = cur.execute(
        "SELECT list(event_id ORDER BY event_id) FROM events_resolved WHERE message_type = 'track' GROUP BY person_id"
    ).fetchall()
    with rt.engine.connect() as conn:
        from sqlalchemy import text

        ids = conn.execute(text("SELECT type, value FROM identities ORDER BY type, value")).all()
        refused = conn.execute(text("SELECT count(*) FROM identity_merges WHERE status = 'refused'")).scalar()
    return {
        "events": [(e[0], e[1], e[2], json.loads(e[3]), e[4], e[5], json.loads(e[6])) for e in events],
        "partition": sorted(tuple(p[0]) for p in persons),
        "identities": [tuple(r) for r in ids],
        "refused": refused,
    }


def test_vectorised_parquet_path_matches_row_path(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    file = tmp_path / "events.parquet"
    pq.write_table(_hostile_table(now), file)
    fixed_now = datetime.now(UTC)
    results = {}
    for vectorised in (True, False):
        home = tmp_path / f"home-{vectorised}"
        with Runtime.open(Settings(home=home)) as rt:
            rt.ingestor.now = lambda: fixed_now  # type: ignore[method-assign]
            rt.ingestor.validator.now = lambda: fixed_now
            report = import_file(rt.ingestor, file, "events", vectorised=vectorised)
            rejects = [json.loads(x) for x in (tmp_path / "events.parquet.rejects.jsonl").read_text().splitlines()]
            results[vectorised] = (
                report.as_dict(),
                report.result.refused_merges,
                sorted((r["line"], sorted(e["field"] for e in r["errors"])) for r in rejects),
                _snapshot(rt),
            )
    fast, slow = results[True], results[False]
    assert fast[0] == slow[0]
    assert fast[0] == {"accepted": 6, "rejected": 8, "duplicates": 1}
    assert fast[2] == slow[2]
    assert fast[3] == slow[3]
    assert fast[1] == slow[1] == 1
    snap = fast[3]
    sql_event = next(e for e in snap["events"] if e[0] == "m11")  # type: ignore[union-attr]
    assert sql_event[1] == "'; DROP TABLE persons; --" and sql_event[3] == {"sku": "' OR 1=1 --", "note": "ok"}


def test_reimporting_parquet_changes_nothing(tmp_path: Path) -> None:
    file = tmp_path / "e.parquet"
    now = datetime.now(UTC) - timedelta(days=1)
    n = 500
    pq.write_table(
        pa.table(
            {
                "messageId": [f"id-{i}" for i in range(n)],
                "event": ["view"] * n,
                "timestamp": pa.array([now - timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
                "userId": [f"u{i % 50}" for i in range(n)],
                "price_fen": list(range(n)),
            }
        ),
        file,
    )
    home = tmp_path / "home"
    assert json.loads(cli(home, "import", "events", str(file), "--json")) == {
        "accepted": n,
        "rejected": 0,
        "duplicates": 0,
    }
    before = json.loads(cli(home, "stats", "--json"))
    assert before == {"persons": 50, "identities": 50, "events": n, "orders": 0}
    assert json.loads(cli(home, "import", "events", str(file), "--json")) == {
        "accepted": 0,
        "rejected": 0,
        "duplicates": n,
    }
    assert json.loads(cli(home, "stats", "--json")) == before


@pytest.mark.parametrize("naive", [True])
def test_naive_parquet_timestamps_are_brand_local(tmp_path: Path, naive: bool) -> None:
    file = tmp_path / "e.parquet"
    local = datetime(2026, 3, 1, 8, 0, 0)  # 08:00 in Shanghai = 00:00 UTC
    pq.write_table(
        pa.table(
            {
                "message_id": ["a"],
                "event": ["view"],
                "userId": ["u"],
                "timestamp": pa.array([local], pa.timestamp("us")),
            }
        ),
        file,
    )
    with Runtime.open(Settings(home=tmp_path / "h")) as rt:
        import_file(rt.ingestor, file, "events")
        ts = rt.events.cursor().execute("SELECT ts FROM events WHERE event_id = 'a'").fetchone()[0]
    assert ts.astimezone(UTC) == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def test_orders_csv_unknown_column_is_named_in_the_rejects(tmp_path: Path) -> None:
    f = tmp_path / "orders.csv"
    f.write_text(
        "order_id,status,paid_at,amount_fen,member_id,coupon_code\nO1,paid,2026-01-02T10:00:00+08:00,1990,M1,NEW10\n",
        encoding="utf-8",
    )
    out = json.loads(cli(tmp_path / "home", "import", "orders", str(f), "--json"))
    assert out == {"accepted": 0, "rejected": 1, "duplicates": 0}
    reject = json.loads((tmp_path / "orders.csv.rejects.jsonl").read_text())
    assert [e["field"] for e in reject["errors"]] == ["coupon_code"]


def test_bulk_import_leaves_no_temporary_tables_behind(tmp_path: Path) -> None:
    file = tmp_path / "e.parquet"
    pq.write_table(pa.table({"message_id": ["a", "b"], "event": ["view", "view"], "userId": ["u1", "u2"]}), file)
    with Runtime.open(Settings(home=tmp_path / "h")) as rt:
        for expected_accepted in (2, 0):  # the second run returns early: everything is a duplicate
            assert import_file(rt.ingestor, file, "events").result.accepted == expected_accepted
            leftovers = rt.events.con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE temporary "
                "UNION ALL SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
            ).fetchall()
            assert leftovers == []


def _both_paths(tmp_path: Path, files: list[Path]) -> dict[bool, list[object]]:
    """Import ``files`` in order into a fresh home per path; per path, each report, rejects and the final store."""
    fixed_now = datetime.now(UTC)
    out: dict[bool, list[object]] = {}
    for vectorised in (True, False):
        with Runtime.open(Settings(home=tmp_path / f"home-{vectorised}")) as rt:
            rt.ingestor.now = lambda: fixed_now  # type: ignore[method-assign]
            rt.ingestor.validator.now = lambda: fixed_now
            steps: list[object] = []
            for file in files:
                report = import_file(rt.ingestor, file, "events", vectorised=vectorised)
                rejects_file = file.with_name(file.name + ".rejects.jsonl")
                lines = rejects_file.read_text().splitlines() if rejects_file.exists() else []
                rejects = [json.loads(x) for x in lines]
                steps.append(
                    (
                        report.as_dict(),
                        sorted((r["line"], sorted((e["field"], e["reason"]) for e in r["errors"])) for r in rejects),
                    )
                )
            steps.append(_snapshot(rt))
            out[vectorised] = steps
    return out


def test_vectorised_path_checks_numeric_properties_like_the_row_path(tmp_path: Path) -> None:
    now = datetime.now(UTC) - timedelta(hours=1)
    n = 6
    file = tmp_path / "numbers.parquet"
    pq.write_table(
        pa.table(
            {
                "message_id": [f"n{i}" for i in range(n)],
                "event": ["view"] * n,
                "timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                "userId": ["u1", "u2", "u1", "u3", "u2", "u4"],
                "ratio": pa.array([1.5, float("nan"), None, float("inf"), -0.25, 2.0], pa.float64()),
                "big": pa.array([1, 2, 3, 4, 2**63 + 5, None], pa.uint64()),
                "flag": pa.array([True, False, None, True, False, True]),
                "count": pa.array([0, -1, 2**40, None, 7, 8], pa.int64()),
            }
        ),
        file,
    )
    fast, slow = (v for _, v in sorted(_both_paths(tmp_path, [file]).items(), reverse=True))
    assert fast == slow
    report, rejects = fast[0]  # type: ignore[misc]
    assert report == {"accepted": 3, "rejected": 3, "duplicates": 0}
    assert rejects == [
        (2, [("properties.ratio", "not a finite number")]),
        (4, [("properties.ratio", "not a finite number")]),
        (5, [("properties.big", "integer out of the 64-bit range")]),
    ]
    events = {e[0]: e[3] for e in fast[1]["events"]}  # type: ignore[index]
    assert events["n2"] == {"big": 3, "count": 2**40}  # NULLs are left out
    assert events["n0"] == {"ratio": 1.5, "big": 1, "flag": True, "count": 0}


def test_vectorised_and_row_paths_agree_on_partly_stored_files(tmp_path: Path) -> None:
    """A second file repeating stored ids and itself: both paths keep the same rows, counts and store."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def write(name: str, ids: list[int]) -> Path:
        path = tmp_path / name
        pq.write_table(
            pa.table(
                {
                    "message_id": [f"id-{i}" for i in ids],
                    "event": ["view"] * len(ids),
                    "timestamp": pa.array([now + timedelta(minutes=i) for i in ids], pa.timestamp("us", tz="UTC")),
                    "anonymous_id": [f"a{i % 7}" for i in ids],
                    "member_id": [f"m{i % 5}" if i % 3 else None for i in ids],
                    "sku": [f"s{i}" if i % 4 else None for i in ids],
                }
            ),
            path,
        )
        return path

    first = write("first.parquet", list(range(0, 40)))
    second = write("second.parquet", [*range(30, 60), 45, 50, 31])  # 30–39 stored, 45/50/31 twice in the file
    results = _both_paths(tmp_path, [first, second])
    assert results[True] == results[False]
    assert [step[0] for step in results[True][:2]] == [  # type: ignore[index]
        {"accepted": 40, "rejected": 0, "duplicates": 0},
        {"accepted": 20, "rejected": 0, "duplicates": 13},
    ]


def test_column_join_stores_what_the_hash_join_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The column join (taken when two combinations share a 64-bit hash) stores what the hash join stores."""
    import siyu.ingest.bulk as bulk

    file = tmp_path / "events.parquet"
    pq.write_table(_hostile_table(datetime.now(UTC) - timedelta(hours=1)), file)
    fixed_now = datetime.now(UTC)
    snapshots = []
    calls: list[int] = []
    for shortcut in (True, False):
        if not shortcut:
            monkeypatch.setattr(bulk, "_distinct_keys", lambda combos: calls.append(combos.num_rows) or False)
        with Runtime.open(Settings(home=tmp_path / f"home-{shortcut}")) as rt:
            rt.ingestor.now = lambda: fixed_now  # type: ignore[method-assign]
            rt.ingestor.validator.now = lambda: fixed_now
            report = import_file(rt.ingestor, file, "events")
            snapshots.append((report.as_dict(), _snapshot(rt)))
    assert calls  # the second import did take the column join
    assert snapshots[0] == snapshots[1]
    assert snapshots[0][0]["accepted"] == 6


def test_a_failing_ops_write_rolls_the_events_back_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ops store is written in a thread beside the events insert: its failure leaves both stores as they were."""
    from siyu.identity.vectorised import Decision

    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    now = datetime.now(UTC) - timedelta(days=1)
    for path, start in ((first, 0), (second, 100)):
        ids = range(start, start + 60)
        pq.write_table(
            pa.table(
                {
                    "message_id": [f"id-{i}" for i in ids],
                    "event": ["view"] * 60,
                    "timestamp": pa.array([now + timedelta(minutes=i) for i in ids], pa.timestamp("us", tz="UTC")),
                    "member_id": [f"m{i % 20}" for i in ids],
                }
            ),
            path,
        )
    home = tmp_path / "home"
    with Runtime.open(Settings(home=home)) as rt:
        import_file(rt.ingestor, first, "events")
        before = _snapshot(rt), rt.events.counts()
    real_write = Decision.write

    def failing_write(self: Decision, conn: object, **kwargs: object) -> None:
        real_write(self, conn, **kwargs)  # type: ignore[arg-type]
        raise OSError("disk full (injected after the rows were written, before the commit)")

    monkeypatch.setattr(Decision, "write", failing_write)
    with Runtime.open(Settings(home=home)) as rt:
        with pytest.raises(OSError, match="disk full"):
            import_file(rt.ingestor, second, "events")
        assert (_snapshot(rt), rt.events.counts()) == before
    monkeypatch.setattr(Decision, "write", real_write)
    with Runtime.open(Settings(home=home)) as rt:  # and a retry then stores it all
        assert import_file(rt.ingestor, second, "events").result.accepted == 60
        assert rt.events.counts()["events"] == before[1]["events"] + 60


@pytest.mark.parametrize("max_shapes", [64, 3])
def test_sparse_properties_give_the_row_paths_json_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_shapes: int
) -> None:
    """Rows of a few shapes (which optional properties they hold) get their JSON built per shape;
    with fewer shapes allowed than the file has, the rest take the general path. Either way the
    stored text is the row path's, byte for byte, NULLs left out, in column order."""
    import random

    from siyu.ingest import bulk

    monkeypatch.setattr(bulk, "_MAX_SHAPES", max_shapes)
    rng = random.Random(5)
    now = datetime.now(UTC) - timedelta(hours=1)
    shapes = [(1, 1, 0, 0, 1), (0, 0, 1, 1, 0), (0, 0, 0, 0, 0), (1, 0, 1, 0, 1), (1, 1, 1, 1, 1)]
    rows = [
        shapes[rng.randrange(len(shapes))] if rng.random() < 0.9 else [rng.random() < 0.5 for _ in range(5)]
        for _ in range(300)
    ]
    values = [
        [f'SKU-{i}"\\' if r[0] else None for i, r in enumerate(rows)],
        ["奶粉" if r[1] else None for r in rows],
        [i * 10 if r[2] else None for i, r in enumerate(rows)],
        [bool(i % 2) if r[3] else None for i, r in enumerate(rows)],
        [-i if r[4] else None for i, r in enumerate(rows)],
    ]
    file = tmp_path / "sparse.parquet"
    pq.write_table(
        pa.table(
            {
                "message_id": [f"s{i}" for i in range(len(rows))],
                "event": ["view"] * len(rows),
                "timestamp": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
                "userId": [f"u{i % 7}" for i in range(len(rows))],
                "sku": pa.array(values[0], pa.string()),
                "category": pa.array(values[1], pa.string()),
                "price_fen": pa.array(values[2], pa.int64()),
                "flag": pa.array(values[3], pa.bool_()),
                "delta": pa.array(values[4], pa.int64()),
            }
        ),
        file,
    )
    texts = {}
    for vectorised in (True, False):
        with Runtime.open(Settings(home=tmp_path / f"home-{vectorised}")) as rt:
            assert import_file(rt.ingestor, file, "events", vectorised=vectorised).result.accepted == len(rows)
            texts[vectorised] = (
                rt.events.cursor()
                .execute("SELECT event_id, properties FROM events WHERE message_type = 'track' ORDER BY event_id")
                .fetchall()
            )
    assert texts[True] == texts[False]
    assert (
        dict(texts[True])["s0"]
        == orjson.dumps(
            {
                k: v[0]
                for k, v in zip(("sku", "category", "price_fen", "flag", "delta"), values, strict=True)
                if v[0] is not None
            }
        ).decode()
    )
    assert "{}" in {p for _, p in texts[True]}  # rows holding no property


def test_a_csv_with_a_byte_order_mark_keeps_its_first_column(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark: it is not part of the first column's name
    (the messageId stays the idempotency key, not a property named "\\ufeffmessage_id")."""
    f = tmp_path / "events.csv"
    f.write_bytes("\ufeffmessage_id,event,userId,城市\nb1,view,u1,北京\n".encode())
    home = tmp_path / "home"
    first = json.loads(cli(home, "import", "events", str(f), "--json"))
    assert first == {"accepted": 1, "rejected": 0, "duplicates": 0}
    assert json.loads(cli(home, "import", "events", str(f), "--json"))["duplicates"] == 1
    with Runtime.open(Settings(home=home)) as rt:
        stored = rt.events.cursor().execute("SELECT event_id, properties FROM events WHERE name = 'view'").fetchall()
    assert [(event_id, json.loads(props)) for event_id, props in stored] == [("b1", {"城市": "北京"})]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("message_id,event,userId,userId", "the column 'userId' appears twice"),
        ("messageId,event,userId,message_id", "the columns 'messageId' and 'message_id' both mean 'messageId'"),
        ("message_id,event,user_id,userId", "the columns 'user_id' and 'userId' both mean 'userId'"),
    ],
)
def test_a_column_named_twice_fails_the_file_and_stores_nothing(tmp_path: Path, header: str, message: str) -> None:
    """Which of two columns for one field a row means cannot be known: the file is refused (CSV
    header or Parquet schema), naming the columns, before any row is stored."""
    csv_file = tmp_path / "events.csv"
    csv_file.write_text(header + "\n" + "\n".join(f"m{i},view,u{i},u{i + 100}" for i in range(30)) + "\n")
    parquet_file = tmp_path / "events.parquet"
    names = header.split(",")
    columns = [pa.array([f"{n}-{i}" for i in range(30)], pa.string()) for n in names]
    pq.write_table(pa.Table.from_arrays(columns, names=names), parquet_file)
    home = tmp_path / "home"
    for file in (csv_file, parquet_file):
        result = runner.invoke(app, ["--home", str(home), "import", "events", str(file)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert not file.with_name(file.name + ".rejects.jsonl").exists()
    assert json.loads(cli(home, "stats", "--json"))["events"] == 0


def test_jsonl_lines_with_integers_past_64_bits_are_rejected_not_rounded(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    good = {"type": "track", "messageId": "a", "event": "paid", "userId": "u1", "properties": {"no": 2**63 - 1}}
    huge = {"type": "track", "messageId": "b", "event": "paid", "userId": "u1", "properties": {"no": 10**30}}
    f.write_bytes(orjson.dumps(good) + b"\n" + json.dumps(huge).encode() + b"\n")
    out = json.loads(cli(tmp_path / "home", "import", "events", str(f), "--json"))
    assert out == {"accepted": 1, "rejected": 1, "duplicates": 0}
    (reject,) = [json.loads(x) for x in (tmp_path / "events.jsonl.rejects.jsonl").read_text().splitlines()]
    assert reject["line"] == 2 and "integer out of the 64-bit range: 1000000000000000000000000000000" in str(reject)


def test_a_jsonl_object_naming_one_field_twice_is_rejected_by_line(tmp_path: Path) -> None:
    """JSONL lines are messages; one holding both spellings of a field (messageId and message_id)
    is rejected with the keys named, the other lines stored."""
    f = tmp_path / "events.jsonl"
    good = {"type": "track", "messageId": "a", "event": "view", "userId": "u1"}
    both = {"type": "track", "messageId": "b", "message_id": "c", "event": "view", "userId": "u1"}
    users = {"type": "track", "messageId": "d", "event": "view", "userId": "u1", "user_id": "u2"}
    f.write_bytes(b"\n".join(orjson.dumps(m) for m in (good, both, users)) + b"\n")
    out = json.loads(cli(tmp_path / "home", "import", "events", str(f), "--json"))
    assert out == {"accepted": 1, "rejected": 2, "duplicates": 0}
    rejects = [json.loads(x) for x in (tmp_path / "events.jsonl.rejects.jsonl").read_text().splitlines()]
    reasons = {r["line"]: r["errors"][0]["reason"] for r in rejects}
    assert reasons == {
        2: "the keys 'messageId' and 'message_id' both mean 'messageId'; keep one",
        3: "the keys 'userId' and 'user_id' both mean 'userId'; keep one",
    }
