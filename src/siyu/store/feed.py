"""The change feed: ops-store state changes, applied to the event store exactly once, in order.

Each change is written in the same ops transaction as the state it describes. After commit,
:func:`apply_changes` turns changes past the event store's watermark into events (``$kind``) and
merges into ``person_aliases``, moving the watermark in the same DuckDB transaction, so a crash
between the two commits is repaired by the next call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from sqlalchemy import Connection, Engine, Text, bindparam, cast, select

from siyu.store.events import EVENTS_ARROW, EventStore
from siyu.store.ops.schema import changes
from siyu.store.ops.upsert import bulk_insert, json_text
from siyu.store.state import CHANGES_ARROW, fold_changes

WATERMARK = "ops_change_seq"

#: One change: kind, person_id, event_id (deterministic, see ``derived_id``), occurred_at, payload.
Change = tuple[str, str | None, str, datetime, dict[str, Any]]
_COLUMNS = ("kind", "person_id", "event_id", "occurred_at", "payload")


def insert_changes(conn: Connection, rows: Sequence[Change]) -> None:
    """Append changes to the feed, in the caller's ops transaction (every writer's one path).

    Written with :func:`bulk_insert`; the payload serialised as SQLAlchemy's JSON type stores it.
    """
    bulk_insert(conn, changes, _COLUMNS, [(k, p, e, at, json_text(payload)) for k, p, e, at, payload in rows])


# The payload as its JSON text: parsing it into Python only to dump it again was most of the work.
_PENDING = (
    select(
        changes.c.seq,
        changes.c.kind,
        changes.c.person_id,
        changes.c.event_id,
        changes.c.occurred_at,
        cast(changes.c.payload, Text).label("payload"),
    )
    .where(changes.c.seq > bindparam("last"))
    .order_by(changes.c.seq)
    .limit(bindparam("limit"))
)


def apply_changes(
    engine: Engine,
    store: EventStore,
    con: duckdb.DuckDBPyConnection,
    limit: int = 200_000,
    *,
    events: pa.Table | None = None,
    hashes: np.ndarray | None = None,
) -> int:
    """Apply pending changes inside the caller's DuckDB transaction; returns how many.

    ``events`` (:data:`~siyu.store.events.EVENTS_ARROW`; with their id ``hashes`` if known) are
    appended in the same statements as the first changes: an API batch then pays for one append
    and one fold, not two.
    """
    last = int(store.get_meta(WATERMARK, "0") or 0)
    applied = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(_PENDING, {"last": last, "limit": limit}).all()
        if not rows:
            if events is not None:
                store.append_events(con, events, hashes)
            return applied
        changed, fold, aliases = _change_tables(rows, datetime.now(UTC))
        store.add_aliases(con, aliases)
        if events is not None:
            store.append_events(con, pa.concat_tables([events, changed]), hashes)
            events = None
        else:
            store.append_events(con, changed)
        fold_changes(con, fold)
        last = rows[-1].seq
        store.set_meta(con, WATERMARK, str(last))
        applied += len(rows)


def _change_tables(rows: Sequence[Any], now: datetime) -> tuple[pa.Table, pa.Table, list[tuple[str, str]]]:
    """Feed rows (``_PENDING``) as events (:data:`EVENTS_ARROW`), as rows to fold
    (:data:`CHANGES_ARROW`), and the merges among them (alias → survivor), built column-wise."""
    seqs, kinds, persons, event_ids, occurred, texts = (list(column) for column in zip(*rows, strict=True))
    parsed = [orjson.loads(text) for text in texts]
    payloads = [orjson.dumps(value).decode() for value in parsed]  # one canonical form, whoever wrote it
    persons = [p or "" for p in persons]
    n = len(seqs)
    at = pa.array(occurred, pa.timestamp("us", tz="UTC"))  # naive (SQLite) values are UTC
    none = pa.nulls(n, pa.string())
    events = pa.table(
        {
            "event_id": pa.array(event_ids, pa.string()),
            "person_id": pa.array(persons, pa.string()),
            "identity_type": none,
            "identity_value": none,
            "identities": none,
            "message_type": pa.array(["change"] * n, pa.string()),
            "name": pa.array(["$" + k for k in kinds], pa.string()),
            "ts": at,
            "properties": pa.array(payloads, pa.string()),
            "source": pa.array(["siyu"] * n, pa.string()),
            "received_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=EVENTS_ARROW,
    )
    fold = pa.table(
        {
            "seq": pa.array(seqs, pa.int64()),
            "kind": pa.array(kinds, pa.string()),
            "person_id": events.column("person_id"),
            "payload": events.column("properties"),
            "changed_at": at,
        },
        schema=CHANGES_ARROW,
    )
    aliases = [
        (value["from_person_id"], value["into_person_id"])
        for kind, value in zip(kinds, parsed, strict=True)
        if kind == "identities_merged"
    ]
    return events, fold, aliases
