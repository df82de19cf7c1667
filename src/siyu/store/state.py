"""Person state in the event store, folded from events and the change feed (decision 009).

Segments filter on current traits, tags, group memberships, owner and first / last seen. That
state lives in the ops store, which the query layer cannot read; these tables mirror it inside the
event store, kept current in the same DuckDB transaction as the events they are folded from, so
the two can never disagree:

* ``person_state`` — one row per current person: ``first_seen`` / ``last_seen`` (earliest / latest
  sighting, :data:`SIGHTING`; NULL for a person known only from other changes) and
  ``owner`` (the owning staff member's userid).
* ``trait_state`` — current traits, ``value`` as JSON text.
* ``tag_state`` — tags per (person, tag, staff_userid); ``''`` is a person-level tag.
* ``group_state`` — current group memberships.

Rows are keyed by the surviving person: a merge moves (or, for traits, drops: the ops store writes
the survivor's new values as changes) the merged person's rows. :func:`rebuild_state` folds the
whole history again.

First / last seen of small writes (an API batch) are not upserted into ``person_state`` at once:
an upsert there costs a few milliseconds plus a scan that grows with the table, per batch. They
are appended to ``seen_pending`` and folded in by :func:`settle_seen` — by the writer every
``SETTLE_ROWS`` rows, and before anything reads ``person_state`` (:meth:`EventStore.settle`).
Merged persons' ``person_state`` rows are moved to their survivors there too (decision 015).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

STATE_TABLES: tuple[str, ...] = ("person_state", "trait_state", "tag_state", "group_state")

#: The writer settles ``seen_pending`` once it holds about this many rows.
SETTLE_ROWS = 100_000


def drop_state(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the state tables (before re-creating them in a new shape and folding again)."""
    for table in (*STATE_TABLES, "seen_pending"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


STATE_DDL = """
CREATE TABLE IF NOT EXISTS person_state (
    person_id VARCHAR PRIMARY KEY,
    first_seen TIMESTAMPTZ,
    last_seen TIMESTAMPTZ,
    owner VARCHAR
);
CREATE TABLE IF NOT EXISTS trait_state (
    person_id VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    value VARCHAR NOT NULL,  -- JSON text of the current value (never JSON null: a null removes the trait)
    value_str VARCHAR,       -- the value when it is a JSON string (read without parsing JSON)
    value_num DOUBLE,        -- the value when it is a JSON number
    updated_at TIMESTAMPTZ NOT NULL
    -- One row per (person_id, key), kept by the fold (it deletes before it inserts). No PRIMARY
    -- KEY: its index made a large fold 9× slower (5M rows: 9.3 s against 0.9 s, most of it in
    -- the COMMIT) and nothing reads through it. Stores made before keep theirs, harmlessly.
);
CREATE TABLE IF NOT EXISTS tag_state (
    person_id VARCHAR NOT NULL,
    tag VARCHAR NOT NULL,
    staff_userid VARCHAR NOT NULL,  -- '' for a person-level tag
    tagged_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (person_id, tag, staff_userid)
);
CREATE TABLE IF NOT EXISTS group_state (
    person_id VARCHAR NOT NULL,
    chat_id VARCHAR NOT NULL,
    joined_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (person_id, chat_id)
);
-- First / last seen not yet folded into person_state (settle_seen); person_id as written, which
-- may since have been merged. NULL spans only register the person.
CREATE TABLE IF NOT EXISTS seen_pending (
    person_id VARCHAR NOT NULL,
    first_seen TIMESTAMPTZ,
    last_seen TIMESTAMPTZ
);
"""

#: Change rows to fold: feed order (``seq``), kind (without ``$``), write-time person, JSON payload, time.
CHANGES_ARROW = pa.schema(
    [
        ("seq", pa.int64()),
        ("kind", pa.string()),
        ("person_id", pa.string()),
        ("payload", pa.string()),
        ("changed_at", pa.timestamp("us", tz="UTC")),
    ]
)

#: Events that widen first / last seen, as in the profile: every message and order event, and the
#: WeCom sightings (a contact added, a group joined); not siyu's other change events.
SIGHTING = "message_type <> 'change' OR name IN ('$relation_added', '$group_joined')"

#: ``value_str, value_num`` of a trait from its JSON text ``value``.
TYPED_VALUES = """CASE WHEN json_type(value::JSON) = 'VARCHAR' THEN value::JSON ->> '$' END,
    CASE WHEN json_type(value::JSON) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN value::DOUBLE END"""

_RESOLVED = "coalesce((SELECT min(a.person_id) FROM person_aliases a WHERE a.alias_id = {col}), {col})"


def fold_seen(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Widen ``person_state`` first / last seen from ``relation`` (columns ``person_id``, ``first``,
    ``last``; NULL spans only register the person), resolving merged persons to survivors."""
    con.execute(f"""
        INSERT INTO person_state (person_id, first_seen, last_seen)
        SELECT coalesce(a.person_id, r.person_id) AS pid, min(r.first), max(r.last)
        FROM {relation} r LEFT JOIN person_aliases a ON a.alias_id = r.person_id
        WHERE r.person_id IS NOT NULL AND r.person_id <> ''
        GROUP BY pid
        ON CONFLICT (person_id) DO UPDATE SET
            first_seen = least(person_state.first_seen, excluded.first_seen),
            last_seen = greatest(person_state.last_seen, excluded.last_seen)""")


def has_pending_seen(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``seen_pending`` holds rows to settle."""
    return bool(con.execute("SELECT EXISTS (SELECT 1 FROM seen_pending)").fetchone()[0])  # type: ignore[index]


def settle_seen(con: duckdb.DuckDBPyConnection) -> bool:
    """Fold ``seen_pending`` into ``person_state`` and move merged persons' rows to their survivors.

    Returns whether there was anything to settle. Runs inside the caller's transaction.
    """
    if not has_pending_seen(con):
        return False
    # Rows of persons merged since the last settle: their spans go to the survivors (with the
    # pending ones, which fold_seen resolves), the rows themselves go.
    con.execute("""INSERT INTO seen_pending SELECT a.person_id, p.first_seen, p.last_seen
        FROM person_state p JOIN person_aliases a ON a.alias_id = p.person_id""")
    con.execute("DELETE FROM person_state WHERE person_id IN (SELECT alias_id FROM person_aliases)")
    fold_seen(con, "(SELECT person_id, first_seen AS first, last_seen AS last FROM seen_pending)")
    con.execute("DELETE FROM seen_pending")
    return True


def _sighting_spans(events: str) -> str:
    """Per person of the relation ``events``, the first and last sighting (:data:`SIGHTING`)."""
    return f"""(SELECT person_id, min(ts) FILTER (WHERE {SIGHTING}) AS first,
                       max(ts) FILTER (WHERE {SIGHTING}) AS last
                FROM {events} GROUP BY person_id)"""


def fold_event_table(con: duckdb.DuckDBPyConnection, events: pa.Table) -> None:
    """Fold an appended batch of events (:data:`~siyu.store.events.EVENTS_ARROW` shape)."""
    if not events.num_rows:
        return
    con.register("_fold_events", events)
    try:
        # One pending row per event (settle_seen aggregates): cheaper here than grouping first.
        con.execute(f"""INSERT INTO seen_pending
            SELECT person_id, CASE WHEN {SIGHTING} THEN ts END, CASE WHEN {SIGHTING} THEN ts END
            FROM _fold_events WHERE person_id IS NOT NULL AND person_id <> ''""")
    finally:
        con.unregister("_fold_events")


def fold_changes(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
    """Fold change rows (:data:`CHANGES_ARROW`, any order; ``seq`` decides) into the state tables.

    The batch's ``identities_merged`` rows name the merged persons and, followed to the end of each
    chain, their survivors (as in ``person_aliases``, which already holds them). The fold does not
    depend on where in the batch a merge falls:

    * tags and group memberships follow the person: the merged persons' earlier rows move to the
      survivor, then the batch's changes apply to the resolved person, the last per key winning;
    * traits and the owner are the ops store's per-person decisions: changes apply to the person
      they were written for, and a merged person's rows are dropped (the ops store writes the
      survivor's resulting traits and owner as changes of their own).
    """
    if not rows.num_rows:
        return
    # Each fold is a few statements of ~1 ms each, whether or not it has rows: run only the folds
    # of the kinds this batch holds (an API batch usually holds one or two).
    kinds = set(pc.unique(rows.column("kind")).to_pylist())
    merges = "identities_merged" in kinds
    con.register("_fold_changes", rows)
    try:
        held: list[str] = []
        if merges:
            _merge_targets(con, rows)
            held = _move_merged(con)
            if "trait_changed" in kinds and "trait_state" not in held:
                held.append("trait_state")  # the batch may write traits of a person it merges
        if kinds & {"tag_added", "tag_removed"}:
            _fold_tags(con)
        if kinds & {"group_joined", "group_left"}:
            _fold_groups(con)
        if "trait_changed" in kinds:
            _fold_traits(con)
        _fold_owner(con, "owner_changed" in kinds)
        if merges:
            _drop_merged(con, held)
            con.unregister("_fold_merges")
    finally:
        con.unregister("_fold_changes")


def _last_per(key: str, kinds: str, person: str = "person_id") -> str:
    return f"""SELECT * REPLACE ({person} AS person_id) FROM _fold_changes WHERE kind IN ({kinds})
               QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY seq DESC) = 1"""


_RESOLVED_PERSON = _RESOLVED.format(col="_fold_changes.person_id")


def _fold_traits(con: duckdb.DuckDBPyConnection) -> None:
    # The last change per person and key (in feed order), by aggregation: cheaper than a window.
    con.execute("""CREATE OR REPLACE TEMP TABLE _fold_traits AS
        SELECT person_id, key, json_extract(payload, '$.new')::VARCHAR AS value, changed_at
        FROM (SELECT person_id, json_extract_string(payload, '$.key') AS key,
                     arg_max(payload, seq) AS payload, arg_max(changed_at, seq) AS changed_at
              FROM _fold_changes WHERE kind = 'trait_changed' GROUP BY 1, 2)""")
    con.execute("""DELETE FROM trait_state USING _fold_traits f
        WHERE trait_state.person_id = f.person_id AND trait_state.key = f.key""")
    con.execute(f"""INSERT INTO trait_state SELECT person_id, key, value, {TYPED_VALUES}, changed_at
        FROM _fold_traits WHERE value IS NOT NULL AND value <> 'null'""")
    con.execute("DROP TABLE _fold_traits")


def _fold_tags(con: duckdb.DuckDBPyConnection) -> None:
    tag = "json_extract_string(payload, '$.tag')"
    staff = "coalesce(json_extract_string(payload, '$.staff_userid'), '')"
    last = _last_per(f"{_RESOLVED_PERSON}, {tag}, {staff}", "'tag_added', 'tag_removed'", _RESOLVED_PERSON)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fold_tags AS
        SELECT person_id, {tag} AS tag, {staff} AS staff_userid, kind, changed_at FROM ({last})""")
    con.execute("""DELETE FROM tag_state USING _fold_tags f WHERE tag_state.person_id = f.person_id
        AND tag_state.tag = f.tag AND tag_state.staff_userid = f.staff_userid""")
    con.execute("""INSERT INTO tag_state SELECT person_id, tag, staff_userid, changed_at FROM _fold_tags
        WHERE kind = 'tag_added'""")
    con.execute("DROP TABLE _fold_tags")


def _fold_groups(con: duckdb.DuckDBPyConnection) -> None:
    chat = "json_extract_string(payload, '$.chat_id')"
    last = _last_per(f"{_RESOLVED_PERSON}, {chat}", "'group_joined', 'group_left'", _RESOLVED_PERSON)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fold_groups AS
        SELECT person_id, {chat} AS chat_id, kind, changed_at FROM ({last})""")
    con.execute("""DELETE FROM group_state USING _fold_groups f
        WHERE group_state.person_id = f.person_id AND group_state.chat_id = f.chat_id""")
    con.execute("""INSERT INTO group_state SELECT person_id, chat_id, changed_at FROM _fold_groups
        WHERE kind = 'group_joined'""")
    con.execute("DROP TABLE _fold_groups")


def _fold_owner(con: duckdb.DuckDBPyConnection, owners: bool) -> None:
    """Register every person a change is about, then set owners (last ``owner_changed`` wins)."""
    con.execute("INSERT INTO seen_pending (person_id) SELECT person_id FROM _fold_changes WHERE person_id <> ''")
    if not owners:
        return
    settle_seen(con)  # the rows to update must exist
    last = _last_per("person_id", "'owner_changed'")
    con.execute(f"""UPDATE person_state SET owner = json_extract_string(c.payload, '$.new')
        FROM ({last}) c WHERE person_state.person_id = c.person_id""")


def final_survivors(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each merged person of ``pairs`` (``alias → into``, in order) and the end of its chain
    (A→B, then B→C: A and B → C), as ``person_aliases`` keeps them."""
    into = dict(pairs)

    def root(person: str) -> str:
        seen = set()
        while person in into and person not in seen:
            seen.add(person)
            person = into[person]
        return person

    return {alias: root(alias) for alias in into}


def _merge_targets(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
    """Register ``_fold_merges(alias_id, into_id)``: each person merged by ``rows`` and its final
    survivor (:func:`final_survivors`: a survivor of an earlier merge cannot be merged away before,
    so the end of a chain here is the survivor in ``person_aliases`` too)."""
    merged = rows.filter(pc.equal(rows.column("kind"), "identities_merged")).column("payload").to_pylist()
    payloads = [orjson.loads(text) for text in merged]
    survivors = final_survivors((p["from_person_id"], p["into_person_id"]) for p in payloads)
    pairs = [(a, b) for a, b in survivors.items() if a != b]
    con.register(
        "_fold_merges",
        pa.table({"alias_id": [a for a, _ in pairs], "into_id": [b for _, b in pairs]}, schema=_MERGES_ARROW),
    )


_MERGES_ARROW = pa.schema([("alias_id", pa.string()), ("into_id", pa.string())])


def _move_merged(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Copy merged persons' tags and groups to their survivors; returns the state tables holding
    rows of merged persons, for :func:`_drop_merged` (``person_state`` rows are moved by
    :func:`settle_seen`). Tables without such rows (usually all: a merged person is most often a
    fresh anonymous one) cost one shared check instead of a statement each."""
    tables = ("trait_state", "tag_state", "group_state")
    checks = ", ".join(f"EXISTS (SELECT 1 FROM {t} JOIN _fold_merges f ON {t}.person_id = f.alias_id)" for t in tables)
    found = con.execute(f"SELECT {checks}").fetchone()
    held = [t for t, hit in zip(tables, found or (), strict=True) if hit]
    for table, key in (("tag_state", "tag, staff_userid"), ("group_state", "chat_id")):
        if table in held:
            con.execute(f"""INSERT INTO {table} BY NAME
                SELECT t.* REPLACE (f.into_id AS person_id) FROM {table} t
                JOIN _fold_merges f ON t.person_id = f.alias_id
                ON CONFLICT (person_id, {key}) DO NOTHING""")
    return held


def _drop_merged(con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> None:
    for table in tables:
        con.execute(f"DELETE FROM {table} WHERE person_id IN (SELECT alias_id FROM _fold_merges)")


def forget_persons(con: duckdb.DuckDBPyConnection, person_ids: Sequence[str]) -> None:
    """Delete ``person_ids`` from every state table and every segment's membership (PIPL erasure)."""
    settle_seen(con)  # pending rows of the persons (or of persons merged into them) go too
    for table in (*STATE_TABLES, "segment_membership"):
        con.execute(f"DELETE FROM {table} WHERE person_id IN (SELECT unnest(?::VARCHAR[]))", [list(person_ids)])


def rebuild_state(con: duckdb.DuckDBPyConnection) -> None:
    """Empty the state tables and fold the whole event history again (inside a transaction).

    Change events are folded in the order they were stored (``rowid``), which is feed order.
    """
    for table in (*STATE_TABLES, "seen_pending"):
        con.execute(f"DELETE FROM {table}")
    fold_seen(con, _sighting_spans("events"))
    changes = con.sql(
        """SELECT rowid AS seq, substr(name, 2) AS kind, person_id, properties AS payload, ts AS changed_at
           FROM events WHERE message_type = 'change' ORDER BY rowid"""
    ).to_arrow_table()
    fold_changes(con, changes.cast(CHANGES_ARROW))
    settle_seen(con)
