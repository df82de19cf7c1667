"""The columnar Parquet paths for customers and orders store what the row path stores.

Random files with bad rows, duplicates, merges across rows and chunks, updated, stale, refunded
and cancelled orders, imported in several files (the later ones partly stored already) through
both paths on both ops stores: equal reports, rejects (line, fields, reasons) and store
fingerprints. Small ``chunk_rows`` make the row path's chunk boundaries fall inside the files.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from siyu.config import Settings
from siyu.ids import derived_id
from siyu.ingest.columnar import _plan
from siyu.ingest.files import Kind, import_file
from siyu.runtime import Runtime
from siyu.store.fingerprint import store_fingerprint

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_ops_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Two empty ops stores of one kind: one for each path."""
    if request.param == "sqlite":
        yield [f"sqlite:///{(tmp_path / f'ops-{i}.sqlite').resolve()}" for i in range(2)]
        return
    from conftest import _fresh_pg_database

    base, template = request.getfixturevalue("pg_template")
    with ExitStack() as stack:
        yield [stack.enter_context(contextmanager(_fresh_pg_database)(base, template)) for _ in range(2)]


def _both_paths(
    tmp_path: Path,
    urls: list[str],
    kind: Kind,
    files: list[Path],
    chunk_rows: int,
    caplog: pytest.LogCaptureFixture,
    **settings: Any,
) -> list[Any]:
    """Import ``files`` by the columnar path and by the row path (both with ``settings``); each
    step's outcome and the store.

    The columnar path must really run — a file it does not take, or a fall-back to the row path,
    would make the comparison trivially equal."""
    for file in files:
        assert _plan(kind, pq.read_schema(file)) is not None, f"{file.name} would take the row path"
    fixed_now = datetime.now(UTC)
    out = []
    caplog.set_level(logging.INFO, logger="siyu.ingest.columnar")
    for vectorised, url in zip((True, False), urls, strict=True):
        with Runtime.open(Settings(home=tmp_path / f"home-{vectorised}", ops_url=url, **settings)) as rt:
            rt.ingestor.now = lambda: fixed_now  # type: ignore[method-assign]
            rt.ingestor.validator.now = lambda: fixed_now
            steps: list[Any] = []
            for file in files:
                report = import_file(rt.ingestor, file, kind, vectorised=vectorised, chunk_rows=chunk_rows)
                rejects_file = file.with_name(file.name + ".rejects.jsonl")
                lines = rejects_file.read_text().splitlines() if rejects_file.exists() else []
                steps.append(
                    (
                        report.as_dict(),
                        report.result.as_dict(),
                        [
                            (r["line"], sorted((e["field"], e["reason"]) for e in r["errors"]), r.get("record"))
                            for r in map(json.loads, lines)
                        ],
                    )
                )
            steps.append(store_fingerprint(rt.engine, rt.events))
            out.append(steps)
        if vectorised:
            assert not [r for r in caplog.records if "falls back" in r.getMessage()], caplog.text
    return out


_CUSTOMERS = pa.schema(
    [
        ("message_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("wecom_external_userid", pa.string()),
        ("unionid", pa.string()),
        ("member_id", pa.string()),
        ("phone", pa.string()),
        ("email", pa.string()),
        ("city", pa.string()),
        ("level", pa.string()),
        ("age", pa.int64()),
        ("score", pa.float64()),
        ("vip", pa.bool_()),
    ]
)


def _customers(rng: random.Random, n: int, start: int) -> pa.Table:
    def pick(pool: list[Any], none: float = 0.3) -> Any:
        return None if rng.random() < none else rng.choice(pool)

    rows = []
    for i in range(start, start + n):
        mid = rng.choice([f"c{i}", f"c{i}", f"c{i}", f"c{max(start, i - 3)}", "", "x" * 130, "bad\x01id"])
        ts = NOW - timedelta(days=rng.randint(0, 300), seconds=rng.randint(0, 86_400))
        ts = rng.choice([ts, ts, ts, ts, NOW + timedelta(days=30), datetime(1999, 5, 1, tzinfo=UTC), None])
        rows.append(
            {
                "message_id": mid,
                "timestamp": ts,
                "wecom_external_userid": pick([f"wm{k}" for k in range(12)]),
                "unionid": pick([f"un{k}" for k in range(8)] + ["null", " un1 "]),
                "member_id": pick([f"M{k}" for k in range(10)], 0.5),
                "phone": pick(["13800138000", "+86 139 0000 0001", "12345", "138-0013-8002", "0"], 0.6),
                "email": pick(["a@b.cn", "Bad-Mail", "X@Y.COM"], 0.8),
                "city": pick(["上海", "北京", "广州", "'; DROP TABLE traits; --", "x" * 5000, "a\x00b"]),
                "level": pick(["0123", "42", "7", "vip", "1234567890123456"]),
                "age": pick([18, 25, 31, -4, 2**40]),
                "score": pick([1.5, 0.1, float("nan"), 100.0, -2.25, float("inf")]),
                "vip": pick([True, False]),
            }
        )
    return pa.Table.from_pylist(rows, schema=_CUSTOMERS)


_ITEM = pa.struct(
    [("sku", pa.string()), ("category", pa.string()), ("quantity", pa.int64()), ("price_fen", pa.int64())]
)


_ORDERS = pa.schema(
    [
        ("order_id", pa.string()),
        ("status", pa.string()),
        ("member_id", pa.string()),
        ("phone", pa.string()),
        ("paid_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("amount_fen", pa.int64()),
        ("discount_fen", pa.int64()),
        ("refund_fen", pa.int64()),
        ("items", pa.list_(_ITEM)),
        ("channel", pa.string()),
    ]
)


def _orders(rng: random.Random, n: int) -> pa.Table:
    rows = []
    for _ in range(n):
        status = rng.choice(["created", "paid", "paid", "shipped", "completed", "refunded", "partially_refunded",
                             "cancelled", "paid", "lost"])  # fmt: skip
        paid = NOW - timedelta(days=rng.randint(10, 200), microseconds=rng.choice([0, 250_000, 7]))
        amount = rng.choice([0, 990, 12_000, 35_500])
        refund = (
            rng.choice([0, 0, 0, amount // 2, amount, amount + 1 if rng.random() < 0.2 else 0])
            if status != "created"
            else 0
        )
        items = [
            {
                "sku": rng.choice(["S1", "S2", 'S"3\\'] * 8 + ["", None]),
                "category": rng.choice(["辅食", "洗护", None, ""]),
                "quantity": rng.choice([1, 2, 3] * 8 + [0]),
                "price_fen": rng.choice([100, 4500] * 8 + [-1]),
            }
            for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))
        ]
        rows.append(
            {
                "order_id": rng.choice([f"O{k}" for k in range(14)] * 4 + ["", "bad\nid"]),
                "status": status,
                "member_id": rng.choice([f"M{k}" for k in range(6)] + [None, "null"]),
                "phone": rng.choice(["13800138000", "13900000001", None, None, "12345"]),
                "paid_at": rng.choice([paid, paid, paid, None]) if status != "created" else None,
                "updated_at": rng.choice(
                    [paid + timedelta(hours=rng.randint(0, 500))] * 8 + [None, NOW + timedelta(days=9)]
                ),
                "amount_fen": rng.choice([amount] * 12 + [None, -5]),
                "discount_fen": rng.choice([0, 100, None]),
                "refund_fen": refund,
                "items": rng.choice([items, items, None]),
                "channel": rng.choice(["小程序", "门店", None] * 5 + ["c" * 70]),
            }
        )
    return pa.Table.from_pylist(rows, schema=_ORDERS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_columnar_customers_match_the_row_path(
    tmp_path: Path, two_ops_urls: list[str], seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(seed)
    first, second = tmp_path / "c1.parquet", tmp_path / "c2.parquet"
    t1 = _customers(rng, 70, 0)
    pq.write_table(t1, first)
    pq.write_table(pa.concat_tables([t1.slice(40, 30), _customers(rng, 50, 70)]), second)  # partly stored
    fast, slow = _both_paths(tmp_path, two_ops_urls, "customers", [first, second, first], chunk_rows=9, caplog=caplog)
    assert fast == slow
    report, result, _ = fast[0]
    assert report["rejected"] > 0 and result["merges"] + result["refused_merges"] > 0
    assert fast[2][0]["accepted"] == 0  # re-import changes nothing


def test_columnar_customers_match_the_row_path_under_another_identity_priority(
    tmp_path: Path, two_ops_urls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The columnar path orders a row's identities by the configured priority (the original
    identity of each event, the survivor of each merge), as the row path does."""
    rng = random.Random(1)
    file = tmp_path / "c.parquet"
    pq.write_table(_customers(rng, 70, 0), file)
    priority = ["phone", "email", "wecom_external_userid"]
    fast, slow = _both_paths(
        tmp_path, two_ops_urls, "customers", [file], chunk_rows=9, caplog=caplog, identity_priority=priority
    )
    assert fast == slow
    assert fast[0][1]["merges"] + fast[0][1]["refused_merges"] > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_columnar_orders_match_the_row_path(
    tmp_path: Path, two_ops_urls: list[str], seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(seed)
    first, second = tmp_path / "o1.parquet", tmp_path / "o2.parquet"
    t1 = _orders(rng, 90)
    pq.write_table(t1, first)
    pq.write_table(pa.concat_tables([t1.slice(30, 40), _orders(rng, 60)]), second)
    fast, slow = _both_paths(tmp_path, two_ops_urls, "orders", [first, second, first], chunk_rows=11, caplog=caplog)
    assert fast == slow
    results = [step[1] for step in fast[:3]]
    assert results[0]["accepted"] > 0 and sum(r["stale"] for r in results) > 0
    assert sum(r["duplicates"] for r in results) > 0
    assert fast[2][0]["accepted"] == 0


def test_columnar_orders_whose_items_have_no_category_match_the_row_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Items without a ``category`` field (it is optional): checked, sized and stored as the row
    path does (the size check once named the missing field, a binder error)."""
    table = _orders(random.Random(8), 80)
    item = pa.struct([("sku", pa.string()), ("quantity", pa.int64()), ("price_fen", pa.int64())])
    items = [
        None if order is None else [{k: v for k, v in i.items() if k != "category"} for i in order]
        for order in table.column("items").to_pylist()
    ]
    table = table.set_column(table.schema.get_field_index("items"), "items", pa.array(items, pa.list_(item)))
    file = tmp_path / "o.parquet"
    pq.write_table(table, file)
    urls = [f"sqlite:///{(tmp_path / f'ops-{i}.sqlite').resolve()}" for i in range(2)]
    fast, slow = _both_paths(tmp_path, urls, "orders", [file], chunk_rows=11, caplog=caplog)
    assert fast == slow
    assert fast[0][0]["accepted"] > 0 and fast[0][0]["rejected"] > 0


def _profiles(rng: random.Random, persons: int, shared: int) -> pa.Table:
    """Customers as the simulator writes them: most persons hold identities of their own and send
    several identify rows (times out of order, traits changing, some rows repeating a value);
    ``shared`` phones are held by two persons each (merges and refusals among those)."""
    rows = []
    for p in range(persons):
        phone = f"1380000{p % shared:04d}" if p < 2 * shared else None
        for k in range(rng.choice([1, 1, 2, 3, 5])):
            ts = NOW - timedelta(days=rng.randint(0, 200), seconds=rng.randint(0, 86_400))
            rows.append(
                {
                    "message_id": f"p{p}-{k}",
                    "timestamp": rng.choice([ts, ts, ts, NOW - timedelta(days=5)]),  # equal times too
                    "wecom_external_userid": f"wm{p}" if k or rng.random() < 0.7 else None,
                    "unionid": f"un{p}" if rng.random() < 0.8 else None,
                    "member_id": (f"M{p}" if p % 9 else f"M{p // 2}") if rng.random() < 0.4 else None,
                    "phone": phone if rng.random() < 0.6 else None,
                    "city": rng.choice(["上海", "北京", "广州", None]),
                    "level": rng.choice(["1", "2", "vip", "007", None]),
                    "age": rng.choice([18, 25, None]),
                    "score": rng.choice([0.0, -0.0, 1.5, None]),
                    "vip": rng.choice([True, False, None]),
                }
            )
    rng.shuffle(rows)
    return pa.Table.from_pylist(rows, schema=_CUSTOMERS.remove(_CUSTOMERS.get_field_index("email")))


def _details(rt: Runtime) -> dict[str, Any]:
    """What the fingerprint leaves out, by person key: first / last seen, identities' first seen,
    and the content of the change events (trait changes: key, old, new, message)."""
    from sqlalchemy import text

    with rt.engine.connect() as conn:
        ids = conn.execute(text("SELECT person_id, type, value, first_seen FROM identities")).all()
        spans = dict(
            (p, (str(a), str(b))) for p, a, b in conn.execute(text("SELECT id, first_seen, last_seen FROM persons"))
        )
    key = {}
    for p, t, v, _ in ids:
        key[p] = min(key.get(p, f"{t}:{v}"), f"{t}:{v}")
    changes = (
        rt.events.cursor()
        .execute("SELECT person_id, name, ts, properties, event_id FROM events WHERE message_type = 'change'")
        .fetchall()
    )
    misnamed = [  # a trait change's id is derived from its message, person and key
        e
        for p, n, _, props, e in changes
        if n == "$trait_changed"
        and "message_id" in (body := json.loads(props))
        and e != derived_id("trait", body["message_id"], p, body["key"])
    ]
    return {
        "misnamed": misnamed,
        "ids": sorted((f"{t}:{v}", key[p], str(at)) for p, t, v, at in ids),
        "spans": sorted((key[p], span) for p, span in spans.items() if p in key),
        "changes": sorted(
            (key.get(p, ""), n, str(ts), json.dumps(_merged_from_marked(json.loads(props)), sort_keys=True))
            for p, n, ts, props, _ in changes
            if n == "$trait_changed"
        ),
    }


def _merged_from_marked(payload: dict[str, Any]) -> dict[str, Any]:
    """A change payload with the generated person id of ``merged_from`` replaced by a marker."""
    return {**payload, "merged_from": "*"} if "merged_from" in payload else payload


@pytest.mark.parametrize("seed", [4, 5])
def test_columnar_customers_resolve_simple_persons_in_one_go(
    tmp_path: Path, two_ops_urls: list[str], seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Most rows belong to persons no other row touches: their resolution and traits are computed
    over the whole file, the rest chunk by chunk. Both give what the row path gives chunk by chunk,
    including what the fingerprint does not see, under ``latest`` and under ``first``."""
    rng = random.Random(seed)
    first, second = tmp_path / "p1.parquet", tmp_path / "p2.parquet"
    pq.write_table(_profiles(rng, 90, 6), first)
    pq.write_table(_profiles(random.Random(seed + 100), 40, 3), second)  # the same persons again
    caplog.set_level(logging.INFO, logger="siyu.ingest.columnar")
    details = []
    for vectorised, url in zip((True, False), two_ops_urls, strict=True):
        settings = Settings(home=tmp_path / f"h-{vectorised}", ops_url=url, trait_strategies={"age": "first"})
        with Runtime.open(settings) as rt:
            steps: list[Any] = []
            for file in (first, second):
                report = import_file(rt.ingestor, file, "customers", vectorised=vectorised, chunk_rows=13)
                # The row path counts a refusal per message, the columnar one per identity
                # combination (the fingerprint's merges section holds the decisions themselves).
                counts = {k: v for k, v in report.result.as_dict().items() if k != "refused_merges"}
                steps.append((report.as_dict(), counts, report.result.refused_merges > 0))
            steps.append(store_fingerprint(rt.engine, rt.events))
            steps.append(_details(rt))
            details.append(steps)
    fast, slow = details
    assert fast == slow
    assert fast[0][1]["merges"] > 0 and fast[0][2]
    # The columnar path really took the whole-file route for most of the first file's rows.
    counts = [
        tuple(map(int, found.groups()))
        for r in caplog.records
        if (found := re.search(r"simple components \((\d+) of (\d+) rows\)", r.getMessage()))
    ]
    assert counts and counts[0][0] > counts[0][1] / 2, counts
    assert len(fast[-1]["changes"]) > 200


def _orders_of(rng: random.Random, members: int, n: int) -> pa.Table:
    """Orders of ``members`` members (several each, times out of order), flat as the simulator writes them."""
    rows = []
    for i in range(n):
        paid = NOW - timedelta(days=rng.randint(0, 200), seconds=rng.randint(0, 86_400))
        amount = rng.randint(100, 50_000)
        rows.append(
            {
                "order_id": f"O{i}",
                "status": "paid",
                "member_id": f"M{rng.randrange(members)}",
                "phone": None,
                "paid_at": paid,
                "updated_at": paid,
                "amount_fen": amount,
                "discount_fen": 0,
                "refund_fen": 0,
                "items": [{"sku": "S1", "category": "奶粉", "quantity": 1, "price_fen": amount}],
                "channel": "小程序",
            }
        )
    return pa.Table.from_pylist(rows, schema=_ORDERS)


def test_columnar_orders_of_known_customers_resolve_at_once(
    tmp_path: Path, two_ops_urls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Orders whose members are stored customers (or new persons no other order touches) are
    resolved in one go over the file; first / last seen come out as the row path's chunk by chunk."""
    rng = random.Random(21)
    customers, orders = tmp_path / "c.parquet", tmp_path / "o.parquet"
    pq.write_table(_profiles(rng, 60, 1), customers)  # members M0…M59, some persons without one
    pq.write_table(_orders_of(rng, 80, 300), orders)  # M60…M79 are new persons
    caplog.set_level(logging.INFO, logger="siyu.ingest.columnar")
    out = []
    for vectorised, url in zip((True, False), two_ops_urls, strict=True):
        with Runtime.open(Settings(home=tmp_path / f"h-{vectorised}", ops_url=url)) as rt:
            import_file(rt.ingestor, customers, "customers", vectorised=vectorised, chunk_rows=17)
            report = import_file(rt.ingestor, orders, "orders", vectorised=vectorised, chunk_rows=17)
            out.append((report.as_dict(), store_fingerprint(rt.engine, rt.events), _details(rt)))
    assert out[0] == out[1]
    assert out[0][0]["accepted"] == 300
    assert any("combos (resolved at once)" in r.getMessage() for r in caplog.records), caplog.text
