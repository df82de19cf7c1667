"""Load an :class:`~segment_oracle.OracleData` set into a real event store, for the compiler.

The raw tables (events, order versions, aliases) are written as stored; the person-state tables
are written as the fold keeps them (resolved persons; first / last seen from the sightings; a
merged person's traits dropped when the survivor has the key). The fold itself is checked against
the ops store in tests/test_person_state.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from segment_oracle import OracleData
from siyu.store.events import EVENTS_ARROW, ORDERS_ARROW, EventStore
from siyu.store.state import SIGHTING, TYPED_VALUES

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT else value


def load(store: EventStore, data: OracleData) -> None:
    """Write ``data`` into ``store`` (an empty event store)."""
    resolve = dict(zip(data.aliases["alias_id"], data.aliases["person_id"], strict=True))
    current = set(data.persons["person_id"])

    # The real store holds rows of current persons only (merges resolve, erasure deletes every row
    # in one transaction): leftovers of erased persons planted in the data are left out here.
    def current_row(pid: str) -> bool:
        return resolve.get(pid, pid) in current

    events = data.events[[current_row(p) for p in data.events["person_id"]]]
    n = len(events)
    event_table = pa.table(
        {
            "event_id": list(events["event_id"]),
            "person_id": list(events["person_id"]),
            "identity_type": [None] * n,
            "identity_value": [None] * n,
            "identities": [None] * n,
            "message_type": list(events["message_type"]),
            "name": list(events["name"]),
            "ts": [t.to_pydatetime() for t in pd.to_datetime(events["ts"], utc=True)],
            "properties": [_none(p) for p in events["properties"]],
            "source": ["test"] * n,
            "received_at": [RECEIVED] * n,
        },
        schema=EVENTS_ARROW,
    )
    orders = data.orders[[current_row(p) for p in data.orders["person_id"]]]
    m = len(orders)
    order_table = pa.table(
        {
            "order_id": list(orders["order_id"]),
            "version": [int(v) for v in orders["version"]],
            "person_id": list(orders["person_id"]),
            "status": list(orders["status"]),
            "paid_at": [None if _none(t) is None else pd.Timestamp(t).to_pydatetime() for t in orders["paid_at"]],
            "amount_fen": [int(v) for v in orders["amount_fen"]],
            "discount_fen": [int(v) for v in orders["discount_fen"]],
            "refund_fen": [int(v) for v in orders["refund_fen"]],
            "items": [list(i) if i is not None else [] for i in orders["items"]],
            "channel": [_none(c) for c in orders["channel"]],
            "updated_at": [RECEIVED] * m,
            "content_hash": ["x"] * m,
            "source": ["test"] * m,
            "received_at": [RECEIVED] * m,
        },
        schema=ORDERS_ARROW,
    )
    traits: dict[tuple[str, str], tuple[bool, Any]] = {}
    for pid, key, value in zip(data.traits["person_id"], data.traits["key"], data.traits["value"], strict=True):
        person = resolve.get(pid, pid)
        own = person == pid
        if (person, key) not in traits or (own and not traits[(person, key)][0]):
            traits[(person, key)] = (own, value)
    con = store.con
    con.execute("BEGIN TRANSACTION")
    con.register("_ev", event_table)
    store.append_event_relation(con, "_ev")
    con.register("_or", order_table)
    con.execute("INSERT INTO orders BY NAME SELECT * FROM _or")
    con.register("_al", pa.table({"alias_id": list(resolve), "person_id": list(resolve.values())}))
    con.execute("INSERT INTO person_aliases SELECT * FROM _al")
    con.register(
        "_ps",
        pa.table({"person_id": list(data.persons["person_id"]), "owner": [_none(o) for o in data.persons["owner"]]}),
    )
    con.execute(f"""INSERT INTO person_state
        SELECT p.person_id, s.first, s.last, p.owner FROM _ps p LEFT JOIN (
            SELECT person_id, min(ts) FILTER (WHERE {SIGHTING}) AS first, max(ts) FILTER (WHERE {SIGHTING}) AS last
            FROM events_resolved GROUP BY person_id) s USING (person_id)""")
    trait_rows = [(p, k, json.dumps(v, ensure_ascii=False)) for (p, k), (_, v) in traits.items() if p in current]
    con.register(
        "_tr",
        pa.table(
            {
                "person_id": [r[0] for r in trait_rows],
                "key": [r[1] for r in trait_rows],
                "value": [r[2] for r in trait_rows],
            },
            schema=pa.schema([("person_id", pa.string()), ("key", pa.string()), ("value", pa.string())]),
        ),
    )
    con.execute(
        f"INSERT INTO trait_state SELECT person_id, key, value, {TYPED_VALUES}, TIMESTAMPTZ '2026-01-01' FROM _tr"
    )
    tag_rows = {
        (resolve.get(p, p), t, s or "")
        for p, t, s in data.tags[["person_id", "tag", "staff_userid"]].itertuples(index=False)
    }
    con.register(
        "_tg",
        pa.table(
            {"person_id": [r[0] for r in tag_rows], "tag": [r[1] for r in tag_rows], "staff": [r[2] for r in tag_rows]},
            schema=pa.schema([("person_id", pa.string()), ("tag", pa.string()), ("staff", pa.string())]),
        ),
    )
    con.execute("INSERT INTO tag_state SELECT person_id, tag, staff, TIMESTAMPTZ '2026-01-01' FROM _tg")
    group_rows = {(resolve.get(p, p), c) for p, c in data.groups[["person_id", "chat_id"]].itertuples(index=False)}
    con.register(
        "_gr",
        pa.table(
            {"person_id": [r[0] for r in group_rows], "chat_id": [r[1] for r in group_rows]},
            schema=pa.schema([("person_id", pa.string()), ("chat_id", pa.string())]),
        ),
    )
    con.execute("INSERT INTO group_state SELECT person_id, chat_id, TIMESTAMPTZ '2026-01-01' FROM _gr")
    con.execute("COMMIT")


def group_names(data: OracleData) -> dict[str, tuple[str, ...]]:
    """Group name → chat ids, from the memberships' names."""
    out: dict[str, set[str]] = {}
    for chat_id, name in data.groups[["chat_id", "name"]].itertuples(index=False):
        if _none(name) is not None:
            out.setdefault(name, set()).add(chat_id)
    return {name: tuple(sorted(ids)) for name, ids in out.items()}
