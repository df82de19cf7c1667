"""The change feed: ops-store state changes, applied to the event store exactly once, in order.

Each change is written in the same ops transaction as the state it describes. After commit,
:func:`apply_changes` turns changes past the event store's watermark into events (``$kind``) and
merges into ``person_aliases``, moving the watermark in the same DuckDB transaction, so a crash
between the two commits is repaired by the next call.
"""

from __future__ import annotations

import json
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
from siyu.store.ops.upsert import bulk_insert
from siyu.store.state import CHANGES_ARROW, fold_changes

WATERMARK = "ops_change_seq"

#: One change: kind, person_id, event_id (deterministic, see ``derived_id``), occurred_at, payload.
Change = tuple[str, str | None, str, datetime, dict[str, Any]]
_COLUMNS = ("kind", "person_id", "event_id", "occurred_at", "payload")


def insert_changes(conn: Connection, rows: Sequence[Change]) -> None:
    """Append changes to the feed, in the caller's ops transaction (every writer's one path).

    Written with :func:`bulk_insert`; the payload serialised as SQLAlchemy's JSON type stores it.
    """
    bulk_insert(conn, changes, _COLUMNS, [(k, p, e, at, json.dumps(payload)) for k, p, e, at, payload in rows])


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
        now = datetime.now(UTC)
        cols: dict[str, list[object]] = {name: [] for name in EVENTS_ARROW.names}
        aliases = []
        fold: dict[str, list[object]] = {name: [] for name in CHANGES_ARROW.names}
        for row in rows:
            at = row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=UTC)
            cols["event_id"].append(row.event_id)
            cols["person_id"].append(row.person_id or "")
            cols["identity_type"].append(None)
            cols["identity_value"].append(None)
            cols["identities"].append(None)
            cols["message_type"].append("change")
            cols["name"].append("$" + row.kind)
            cols["ts"].append(at)
            payload = orjson.loads(row.payload)
            cols["properties"].append(orjson.dumps(payload).decode())  # one canonical form, whoever wrote it
            cols["source"].append("siyu")
            cols["received_at"].append(now)
            fold["seq"].append(row.seq)
            fold["kind"].append(row.kind)
            fold["person_id"].append(row.person_id or "")
            fold["payload"].append(cols["properties"][-1])
            fold["changed_at"].append(at)
            if row.kind == "identities_merged":
                aliases.append((payload["from_person_id"], payload["into_person_id"]))
        store.add_aliases(con, aliases)
        changed = pa.table(cols, schema=EVENTS_ARROW)
        if events is not None:
            store.append_events(con, pa.concat_tables([events, changed]), hashes)
            events = None
        else:
            store.append_events(con, changed)
        fold_changes(con, pa.table(fold, schema=CHANGES_ARROW))
        last = rows[-1].seq
        store.set_meta(con, WATERMARK, str(last))
        applied += len(rows)
