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

import functools
import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
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
            body: dict[str, list[Any]] = {
                "kind": kinds,
                "person_id": people,
                "event_id": event_ids,
                "at_us": micros.to_pylist(),
            }
            try:  # each payload already in the events' canonical form: applying it copies the text
                body["payload_text"] = [orjson.dumps(payload).decode() for payload in payloads]
            except TypeError:  # what orjson cannot encode (integers past 64 bits) takes the general path
                body["payload"] = payloads
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
    for seq, text in bundles:
        row = update(changes).where(changes.c.seq == seq)
        if seq <= applied_upto:
            conn.execute(row.values(_VOIDED))
            continue
        body = orjson.loads(text)
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
    _, kinds, persons, event_ids, occurred, texts = (list(column) for column in zip(*rows, strict=True))
    micros = pa.array(occurred, _UTC_US).cast(pa.int64())  # naive (SQLite) values are UTC
    kinds, persons, event_ids, stamps, payloads = _expanded(kinds, persons, event_ids, micros.to_pylist(), texts)
    micros = pa.array(stamps, pa.int64())
    persons = [p or "" for p in persons]
    n = len(kinds)
    seqs = np.arange(n, dtype=np.int64)
    at = micros.cast(_UTC_US)
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
    aliases = []
    for kind, text in zip(kinds, payloads, strict=True):
        if kind == "identities_merged":
            merge = orjson.loads(text)
            aliases.append((merge["from_person_id"], merge["into_person_id"]))
    return events, fold, aliases


def _expanded(
    kinds: list[str], persons: list[str | None], event_ids: list[str], micros: list[int], texts: list[str]
) -> tuple[list[str], list[str | None], list[str], list[int], list[str]]:
    """The feed rows with each bundle replaced by its changes, in order; each payload as the
    events' canonical JSON text (orjson's), whoever wrote it."""
    out: tuple[list[Any], ...] = ([], [], [], [], [])
    for kind, person, event_id, at_us, text in zip(kinds, persons, event_ids, micros, texts, strict=True):
        if kind != BUNDLE:
            for column, value in zip(out[:4], (kind, person, event_id, at_us), strict=True):
                column.append(value)
            out[4].append(orjson.dumps(orjson.loads(text)).decode())
            continue
        body = orjson.loads(text)
        for column, key in zip(out[:4], ("kind", "person_id", "event_id", "at_us"), strict=True):
            column += body[key]
        if "payload_text" in body:
            out[4].extend(body["payload_text"])
        else:
            out[4].extend(orjson.dumps(value).decode() for value in body["payload"])
    return out  # type: ignore[return-value]
