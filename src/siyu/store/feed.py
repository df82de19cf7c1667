"""The change feed: ops-store state changes, applied to the event store exactly once, in order.

Each change is written in the same ops transaction as the state it describes. After commit,
:func:`apply_changes` turns changes past the event store's watermark into events (``$kind``) and
merges into ``person_aliases``, moving the watermark in the same DuckDB transaction, so a crash
between the two commits is repaired by the next call.

A writer's call with more than :data:`BUNDLE_ABOVE` changes stores them as one **bundle** row
(decision 016): its payload holds the changes column-wise and :func:`apply_changes` expands it in
place, in order. A large import then writes a few hundred rows instead of millions, each with two
random-keyed index entries. Bundles are voided in the ops store once their application is
committed (:func:`void_bundles`): their changes live on as events, and no personal data stays
behind in them; :func:`void_changes_of` removes an erased person's changes, pending bundles included.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, Text, bindparam, cast, select, update
from sqlalchemy.exc import SQLAlchemyError

from siyu.ids import derived_id
from siyu.store.events import EVENTS_ARROW, EventStore
from siyu.store.ops.schema import changes
from siyu.store.ops.upsert import bulk_insert, json_text
from siyu.store.state import CHANGES_ARROW, fold_changes

WATERMARK = "ops_change_seq"
log = logging.getLogger(__name__)

#: One change: kind, person_id, event_id (deterministic, see ``derived_id``), occurred_at, payload.
Change = tuple[str, str | None, str, datetime, dict[str, Any]]
_COLUMNS = ("kind", "person_id", "event_id", "occurred_at", "payload")


BUNDLE = "bundle"
#: More changes than this in one call are stored as one bundle row.
BUNDLE_ABOVE = 500
#: At most this many changes go in one bundle: its text stays a few MB, far below SQLite's
#: 1 GB limit on a value (one bundle of a million-customer import would pass it).
BUNDLE_MOST = 20_000
#: A row whose content is gone (an applied bundle, an erased person's change); applying skips it.
#: Rows are voided, never deleted: SQLite hands a deleted last ``seq`` out again, below the watermark.
VOID = "void"
_VOIDED: dict[str, Any] = {"kind": VOID, "person_id": None, "payload": {}}
_UTC_US = pa.timestamp("us", tz="UTC")


def insert_changes(conn: Connection, rows: Sequence[Change], *, bundle_above: int | None = None) -> None:
    """Append changes to the feed, in the caller's ops transaction (every writer's one path).

    Written with :func:`bulk_insert`; the payload serialised as SQLAlchemy's JSON type stores it.
    More than ``bundle_above`` (default :data:`BUNDLE_ABOVE`) go in as one bundle row.
    """
    if len(rows) > (BUNDLE_ABOVE if bundle_above is None else bundle_above):
        bundles = []
        for start in range(0, len(rows), BUNDLE_MOST):
            part = rows[start : start + BUNDLE_MOST]
            kinds, people, event_ids, occurred, payloads = (list(column) for column in zip(*part, strict=True))
            micros = pa.array(occurred, _UTC_US).cast(pa.int64())
            try:  # each payload already in the events' canonical form: applying it copies the text
                texts = [orjson.dumps(payload).decode() for payload in payloads]
            except TypeError:  # what orjson cannot encode (integers past 64 bits): JSON lists, as before
                body: dict[str, Any] = {
                    "kind": kinds,
                    "person_id": people,
                    "event_id": event_ids,
                    "at_us": micros.to_pylist(),
                    "payload": payloads,
                }
            else:
                body = _bundle_body(
                    pa.table([kinds, pa.array(people, pa.string()), event_ids, micros, texts], schema=_BUNDLE_SCHEMA)
                )
            bundle_id = derived_id(BUNDLE, event_ids[0], event_ids[-1], str(len(part)))
            bundles.append((BUNDLE, None, bundle_id, min(occurred), _bundle_text(body)))
        bulk_insert(conn, changes, _COLUMNS, bundles)
        return
    bulk_insert(conn, changes, _COLUMNS, [(k, p, e, at, json_text(payload)) for k, p, e, at, payload in rows])


def _bundle_text(body: dict[str, Any]) -> str:
    """A bundle's JSON. Only :func:`apply_changes` reads it back (as JSON), so orjson's form serves
    and is several times faster than ``json.dumps``; what orjson cannot encode (integers past
    64 bits) falls back to the JSON type's own form."""
    try:
        return orjson.dumps(body).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json_text(body)


#: A bundle's changes as columns; ``payload_text`` is each payload's canonical JSON (orjson's).
_BUNDLE_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("person_id", pa.string()),
        ("event_id", pa.string()),
        ("at_us", pa.int64()),
        ("payload_text", pa.string()),
    ]
)


def _bundle_body(table: pa.Table) -> dict[str, str]:
    """A bundle's payload: its changes as an Arrow IPC stream (zstd), base64 in a JSON object.
    Applying it reads the columns back without a Python object per change."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return {"arrow": base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")}


def _bundle_table(body: dict[str, Any]) -> pa.Table:
    """A bundle's changes (:data:`_BUNDLE_SCHEMA`), whichever form it was written in: Arrow, or
    JSON lists (with canonical payload texts, or with payload objects) as earlier versions and the
    fallback for what orjson cannot encode write them."""
    if "arrow" in body:
        return pa.ipc.open_stream(base64.b64decode(body["arrow"])).read_all()
    texts = body.get("payload_text")
    if texts is None:
        texts = [orjson.dumps(value).decode() for value in body["payload"]]
    columns = [body["kind"], body["person_id"], body["event_id"], body["at_us"], texts]
    return pa.table(columns, schema=_BUNDLE_SCHEMA)


def void_bundles(conn: Connection, seqs: Collection[int]) -> None:
    """Void the bundle rows ``seqs`` (their application has committed)."""
    if seqs:
        conn.execute(update(changes).where(changes.c.kind == BUNDLE, changes.c.seq.in_(list(seqs))).values(_VOIDED))


def void_changes_of(conn: Connection, people: Collection[str], *, applied_upto: int) -> int:
    """Void ``people``'s changes (PIPL erasure); how many.

    Single rows are voided. Bundles up to ``applied_upto`` (the committed watermark) are applied
    ones a crash left unvoided: voided whole. Pending ones lose ``people``'s entries.
    """
    wanted = set(people)
    removed = int(
        conn.execute(update(changes).where(changes.c.person_id.in_(list(wanted))).values(_VOIDED)).rowcount or 0
    )
    bundles = conn.execute(select(changes.c.seq, cast(changes.c.payload, Text)).where(changes.c.kind == BUNDLE)).all()
    wanted_array = pa.array(sorted(wanted), pa.string())
    for seq, text in bundles:
        row = update(changes).where(changes.c.seq == seq)
        if seq <= applied_upto:
            conn.execute(row.values(_VOIDED))
            continue
        body = orjson.loads(text)
        if "arrow" in body:
            table = _bundle_table(body)
            kept = table.filter(pc.invert(pc.is_in(table.column("person_id"), wanted_array)))
            if kept.num_rows == table.num_rows:
                continue
            removed += table.num_rows - kept.num_rows
            conn.execute(row.values(payload=_bundle_body(kept)) if kept.num_rows else row.values(_VOIDED))
            continue
        keep = [i for i, p in enumerate(body["person_id"]) if p not in wanted]
        if len(keep) == len(body["person_id"]):
            continue
        removed += len(body["person_id"]) - len(keep)
        conn.execute(
            row.values(payload={key: [values[i] for i in keep] for key, values in body.items()})
            if keep
            else row.values(_VOIDED)
        )
    return removed


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
    """Apply pending changes inside the caller's DuckDB transaction; returns how many (bundles expanded).

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
        bundles = [row.seq for row in rows if row.kind == BUNDLE]
        if bundles:
            store.on_commit(functools.partial(_void_after_commit, engine, bundles))
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
        applied += changed.num_rows


def _void_after_commit(engine: Engine, seqs: list[int]) -> None:
    """Void applied bundles. Their changes are committed as events already: a failure here leaves
    a bundle the next erasure voids (and no reader applies again), so it is logged, not raised."""
    try:
        with engine.begin() as conn:
            void_bundles(conn, seqs)
    except SQLAlchemyError:
        log.warning("could not void applied change bundles %s; an erasure will", seqs, exc_info=True)


def _change_tables(rows: Sequence[Any], now: datetime) -> tuple[pa.Table, pa.Table, list[tuple[str, str]]]:
    """Feed rows (``_PENDING``) as events (:data:`EVENTS_ARROW`), as rows to fold
    (:data:`CHANGES_ARROW`), and the merges among them (alias → survivor), built column-wise.

    Bundles are expanded where they stand; the fold's ``seq`` is the position in feed order.
    """
    rows = [row for row in rows if row.kind != VOID]
    if not rows:
        return EVENTS_ARROW.empty_table(), CHANGES_ARROW.empty_table(), []
    parts: list[pa.Table] = []
    singles: list[tuple[Any, ...]] = []

    def flush() -> None:
        if singles:
            kinds, persons, event_ids, occurred, texts = (list(column) for column in zip(*singles, strict=True))
            micros = pa.array(occurred, _UTC_US).cast(pa.int64())  # naive (SQLite) values are UTC
            parts.append(pa.table([kinds, persons, event_ids, micros, texts], schema=_BUNDLE_SCHEMA))
            singles.clear()

    for row in rows:
        if row.kind == BUNDLE:
            flush()
            parts.append(_bundle_table(orjson.loads(row.payload)))
        else:  # one canonical form, whoever wrote it
            text = orjson.dumps(orjson.loads(row.payload)).decode()
            singles.append((row.kind, row.person_id, row.event_id, row.occurred_at, text))
    flush()
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    kinds = table.column("kind")
    n = table.num_rows
    seqs = np.arange(n, dtype=np.int64)
    at = table.column("at_us").cast(_UTC_US)
    none = pa.nulls(n, pa.string())
    events = pa.table(
        {
            "event_id": table.column("event_id"),
            "person_id": pc.fill_null(table.column("person_id"), ""),
            "identity_type": none,
            "identity_value": none,
            "identities": none,
            "message_type": pa.repeat("change", n),
            "name": pc.utf8_replace_slice(kinds, start=0, stop=0, replacement="$"),
            "ts": at,
            "properties": table.column("payload_text"),
            "source": pa.repeat("siyu", n),
            "received_at": pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), n),
        },
        schema=EVENTS_ARROW,
    )
    fold = pa.table(
        {
            "seq": pa.array(seqs, pa.int64()),
            "kind": kinds,
            "person_id": events.column("person_id"),
            "payload": events.column("properties"),
            "changed_at": at,
        },
        schema=CHANGES_ARROW,
    )
    merges = table.filter(pc.equal(kinds, "identities_merged")).column("payload_text").to_pylist()
    aliases = [(m["from_person_id"], m["into_person_id"]) for m in map(orjson.loads, merges)]
    return events, fold, aliases
