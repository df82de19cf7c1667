"""The vectorised import path for flat Parquet event files.

Same rules as :mod:`siyu.ingest.validate` and the same identity graph as the API, applied to
columns instead of rows: DuckDB checks every row at once, dedupes against the store with a hash
anti-join, and the identity graph runs once per *distinct identity combination* (not per event),
which is what makes millions of events per minute possible. Files this path cannot take (nested
``properties``, text timestamps, non-track types, a tracking-plan schema for one of the events,
strict mode) return ``None`` and go through the row-by-row path instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from siyu.identity.normalize import IdentityValueError
from siyu.identity.vectorised import SightingColumns, decide_columns
from siyu.ingest.pipeline import Ingestor, IngestResult
from siyu.ingest.validate import EARLIEST
from siyu.perf import StageTimer, alongside, gc_paused
from siyu.store.events import set_from_halves, set_halves
from siyu.store.feed import apply_changes
from siyu.store.ops.engine import checkpoint, checkpoint_deferred
from siyu.store.state import fold_seen

log = logging.getLogger(__name__)

_COLUMN_ALIASES = {"messageId": "message_id", "userId": "user_id", "anonymousId": "anonymous_id"}
_ID_COLUMNS = ("wecom_external_userid", "unionid", "openid", "phone", "member_id", "email", "user_id", "anonymous_id")
_RESERVED = {"message_id", "event", "timestamp", "type", *_ID_COLUMNS}
_EMAIL_RE = r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _plan(schema: pa.Schema) -> dict[str, str] | None:
    """Column roles, or None when the file needs the row-by-row path."""
    roles: dict[str, str] = {}
    for f in schema:
        name = _COLUMN_ALIASES.get(f.name, f.name)
        if name in roles.values():
            return None  # both messageId and message_id, say
        t = f.type
        if name == "timestamp":
            if not pa.types.is_timestamp(t):
                return None
        elif name == "type" or name in ("properties", "traits", "identities", "context"):
            return None
        elif name in _ID_COLUMNS or name in ("message_id", "event"):
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)):
                return None
        elif not (
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
        ):
            return None
        roles[f.name] = name
    if "message_id" not in roles.values() or "event" not in roles.values():
        return None
    return roles


def import_parquet_events(
    ingestor: Ingestor, path: Path, *, source: str, progress: Callable[[int], None] | None = None
) -> tuple[IngestResult, int, list[bytes]] | None:
    """Import a flat Parquet event file; returns (result, rejected, reject lines) or None."""
    schema = pq.read_schema(path)
    roles = _plan(schema)
    if roles is None or ingestor.settings.tracking_plan_mode == "strict":
        return None
    with ingestor.events.write_lock, gc_paused():
        con = ingestor.events.con
        try:
            return _import(ingestor, path, schema, roles, source, progress)
        finally:
            # Temp tables and registered views live on the writer's connection: never leave them.
            for view in ("_phones", "_combos"):
                con.unregister(view)
            con.execute("DROP TABLE IF EXISTS _drop")
            con.execute("DROP TABLE IF EXISTS _chk")


def _import(
    ingestor: Ingestor,
    path: Path,
    schema: pa.Schema,
    roles: dict[str, str],
    source: str,
    progress: Callable[[int], None] | None,
) -> tuple[IngestResult, int, list[bytes]] | None:
    settings = ingestor.settings
    store = ingestor.events
    by_role = {role: col for col, role in roles.items()}
    props = [col for col, role in roles.items() if role not in _RESERVED]
    priority = list(settings.identity_priority)
    now = ingestor.now()
    latest = now + timedelta(seconds=settings.max_future_seconds)
    screen = ingestor.validator.screen
    con = store.con  # temp tables live on the writer's connection, inside its write lock
    timer = StageTimer(log, "bulk import")
    src = f"read_parquet({_lit(str(path))}, file_row_number = true)"
    event_col = _q(by_role["event"])
    # Event names repeat: one pass finds the distinct ones, and whether any breaks the row path's
    # rules; when none does (the usual file) the rows need no event check of their own.
    event_check = (
        "CASE WHEN _event IS NULL OR _event = '' THEN 'event\x00a track message needs `event`' "
        "WHEN length(_event) > 128 THEN 'event\x00String should have at most 128 characters' "
        "WHEN starts_with(_event, '$') OR regexp_matches(_event, '[\\x00-\\x1f]') "
        "THEN 'event\x00event names may not start with $ or contain control characters' END"
    )
    # The same pass counts which optional properties each row holds (few shapes in most files).
    may_be_null = _nullable(path, props)
    nullable = [c for c in props if c in may_be_null][:_MAX_SHAPE_COLUMNS]
    shape = _shape_sql(nullable)
    names = con.execute(f"""SELECT _event, ({event_check}) IS NOT NULL, _shape, _n
        FROM (SELECT CAST({event_col} AS VARCHAR) AS _event, {shape} AS _shape, count(*) AS _n
              FROM {src} GROUP BY ALL)""").fetchall()
    bad_event = any(bad for _, bad, _, _ in names)
    shapes: dict[int, int] = {}
    for _, _, mask, n in names:
        shapes[mask] = shapes.get(mask, 0) + n
    # Only with schemas in the tracking plan can an event of this file need the row path.
    if ingestor.plan.events() and any(n is not None and ingestor.plan.has(n) for n, *_ in names):
        return None

    # 1. Phones are normalised in Python, once per distinct value.
    blocked = ", ".join(_lit(v) for v in sorted(screen.blocked)) or "NULL"
    longest_blocked = max((len(v) for v in screen.blocked), default=0)

    def raw_id(role: str) -> str:
        col = by_role.get(role)
        if col is None:
            return "NULL::VARCHAR"
        text = f"trim(CAST({_q(col)} AS VARCHAR))"
        # The length test first: lower() only runs on values short enough to be a blocked one.
        return (
            f"(CASE WHEN {text} = '' OR (length({text}) <= {longest_blocked} AND lower({text}) IN ({blocked})) "
            f"THEN NULL ELSE {text} END)"
        )

    phone_rows: dict[str, list[Any]] = {"raw": [], "norm": [], "err": []}
    if "phone" in by_role:
        for (raw,) in con.execute(f"SELECT DISTINCT {raw_id('phone')} AS p FROM {src} WHERE p IS NOT NULL").fetchall():
            try:
                norm, err = screen.clean("phone", raw), None
            except IdentityValueError as exc:
                norm, err = None, f"identities.phone\x00{exc}"
            phone_rows["raw"].append(raw)
            phone_rows["norm"].append(norm)
            phone_rows["err"].append(err)
    con.register(
        "_phones",
        pa.table(phone_rows, schema=pa.schema([("raw", pa.string()), ("norm", pa.string()), ("err", pa.string())])),
    )
    timer.lap("phones")

    # 2. One pass: clean, check, and shape every row.
    ts_field = next((f for f in schema if f.name == by_role.get("timestamp")), None)
    if ts_field is None:
        ts_expr = f"TIMESTAMPTZ '{now.isoformat()}'"
    elif ts_field.type.tz is None:
        ts_expr = f"timezone({_lit(settings.timezone)}, {_q(ts_field.name)}::TIMESTAMP)"
    else:
        ts_expr = f"{_q(ts_field.name)}::TIMESTAMPTZ"
    ts_expr = f"coalesce({ts_expr}, TIMESTAMPTZ '{now.isoformat()}')"
    max_chars = settings.max_string_chars
    checks = [
        "CASE WHEN _mid IS NULL OR _mid = '' THEN 'messageId\x00Field required' "
        "WHEN length(_mid) > 128 THEN 'messageId\x00String should have at most 128 characters' END",
        event_check if bad_event else "NULL::VARCHAR",
        f"CASE WHEN _ts < TIMESTAMPTZ '{EARLIEST.isoformat()}' THEN 'timestamp\x00is before 2000-01-01: ' || _ts "
        f"WHEN _ts > TIMESTAMPTZ '{latest.isoformat()}' THEN 'timestamp\x00is in the future: ' || _ts END",
        "_phone_err",
    ]
    for role in _ID_COLUMNS:
        if role not in by_role:
            continue
        where = {"user_id": "userId", "anonymous_id": "anonymousId"}.get(role, f"identities.{role}")
        checks.append(
            f"CASE WHEN length(_raw_{role}) > 128 THEN '{where}\x00longer than 128 characters' "
            f"WHEN regexp_matches(_raw_{role}, '[\\x00-\\x1f\\x7f]') "
            f"THEN '{where}\x00contains control characters' END"
        )
    if "email" in by_role:
        checks.append(
            f"CASE WHEN NOT regexp_full_match(lower(_raw_email), {_lit(_EMAIL_RE)}) "
            "THEN 'identities.email\x00not an e-mail address: ' || _raw_email END"
        )
    present = [r for r in priority if r in by_role]
    if present:
        checks.append(
            "CASE WHEN coalesce(" + ", ".join(f"_{r}" for r in present) + ") IS NULL AND _phone_err IS NULL "
            "THEN 'userId\x00no usable identity: userId, anonymousId and identities are all missing or "
            "blocked values' END"
        )
    else:
        checks.append("'userId\x00no usable identity: userId, anonymousId and identities are all missing'")
    types = {f.name: f.type for f in schema}
    for c in props:
        where = "properties." + c + chr(0)
        if pa.types.is_floating(types[c]):  # the row path's rule for floats: finite numbers only
            checks.append(f"CASE WHEN NOT isfinite({_q(c)}) THEN {_lit(where + 'not a finite number')} END")
        elif pa.types.is_uint64(types[c]):
            too_big = _lit(where + "integer out of the 64-bit range")
            checks.append(f"CASE WHEN {_q(c)} >= 9223372036854775808 THEN {too_big} END")
        elif pa.types.is_string(types[c]) or pa.types.is_large_string(types[c]):
            checks.append(
                f"CASE WHEN length({_q(c)}) > {max_chars} "
                f"THEN {_lit(where + f'string longer than {max_chars} characters')} "
                f"WHEN contains({_q(c)}, chr(0)) THEN {_lit(where + 'contains a NUL character')} END"
            )
        # other integers and booleans: nothing to check
    common = sorted(shapes, key=lambda m: -shapes[m])[:_MAX_SHAPES]
    props_json = _props_json(props, may_be_null, nullable, common)
    raw_cols = ", ".join(f"{raw_id(r)} AS _raw_{r}" for r in sorted({*present, "phone"}))
    cleaned = ", ".join(
        "p.norm AS _phone" if r == "phone" else (f"lower(_raw_{r}) AS _{r}" if r == "email" else f"_raw_{r} AS _{r}")
        for r in present
    )
    extra_cols = "".join(f", {c}" for c in (raw_cols, ", ".join(_q(c) for c in props)) if c)
    phone_err, phone_join = "p.err", "LEFT JOIN _phones p ON p.raw = i._raw_phone"
    if "phone" not in by_role:
        phone_err, phone_join = "NULL::VARCHAR", ""
    # _errors is NULL for a good row: the list of reasons is only built for the (few) bad ones.
    check_list = ", ".join(checks)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _chk AS
        SELECT _row, _mid, _event, _ts, _props, {"".join(f"_{r}, " for r in present)}
               CASE WHEN coalesce({check_list}) IS NOT NULL
                    THEN list_filter([{check_list}], lambda x: x IS NOT NULL) END AS _errors
        FROM (SELECT i.*, {phone_err} AS _phone_err, {cleaned + ", " if cleaned else ""}{props_json} AS _props
              FROM (SELECT file_row_number + 1 AS _row, CAST({_q(by_role["message_id"])} AS VARCHAR) AS _mid,
                           CAST({event_col} AS VARCHAR) AS _event, {ts_expr} AS _ts{extra_cols}
                    FROM {src}) i
              {phone_join})""")
    timer.lap("read+check")
    rejected_rows = con.execute("SELECT _row, _errors FROM _chk WHERE _errors IS NOT NULL ORDER BY _row").fetchall()
    rejects = [
        orjson.dumps(
            {"line": row, "errors": [{"field": e.split("\x00", 1)[0], "reason": e.split("\x00", 1)[1]} for e in errs]}
        )
        for row, errs in rejected_rows
    ]

    # 3. Dedupe: keep the first row of each messageId, and none already stored.
    valid = _scalar(con, "SELECT count(*) FROM _chk") - len(rejected_rows)
    # Distinct 64-bit hashes as many as rows proves every id distinct; only otherwise count exactly.
    repeated = valid - _scalar(con, "SELECT count(*) FROM (SELECT DISTINCT hash(_mid) FROM _chk WHERE _errors IS NULL)")
    if repeated:
        repeated = valid - _scalar(con, "SELECT count(DISTINCT _mid) FROM _chk WHERE _errors IS NULL")
    stored = _scalar(con, "SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)")
    fresh_where = "_errors IS NULL"
    fresh = valid
    if repeated or stored:
        con.execute("CREATE OR REPLACE TEMP TABLE _drop (_row BIGINT)")
        if repeated:
            con.execute("""INSERT INTO _drop SELECT _row FROM _chk WHERE _errors IS NULL
                AND _mid IN (SELECT _mid FROM _chk WHERE _errors IS NULL GROUP BY _mid HAVING count(*) > 1)
                QUALIFY row_number() OVER (PARTITION BY _mid ORDER BY _row) > 1""")
        if stored:
            con.execute("""INSERT INTO _drop SELECT _row FROM _chk WHERE _errors IS NULL
                AND _mid IN (SELECT event_id FROM events)""")
        dropped = _scalar(con, "SELECT count(DISTINCT _row) FROM _drop")
        if dropped:
            fresh_where = "_errors IS NULL AND _row NOT IN (SELECT _row FROM _drop)"
            fresh = valid - dropped
    result = IngestResult(duplicates=int(valid - fresh))
    timer.lap("dedupe")
    if progress:
        progress(len(rejected_rows) + result.duplicates)
    if not fresh:
        return result, len(rejected_rows), rejects

    # 4. Identity graph, once per distinct identity combination, in order of first appearance.
    id_cols = ", ".join(f"_{r}" for r in present)
    id_type = "CASE " + " ".join(f"WHEN _{r} IS NOT NULL THEN '{r}'" for r in present) + " END"
    id_value = "coalesce(" + id_cols + ")"
    ids_json = (
        "to_json(list_filter(["
        + ", ".join(f"CASE WHEN _{r} IS NOT NULL THEN ['{r}', _{r}] END" for r in present)
        + "], lambda x: x IS NOT NULL))::VARCHAR"
    )
    combos = con.sql(f"""SELECT *, {set_halves("md5_number(_ids)", "_set_high", "_set_low")} FROM (
        SELECT {id_cols}, hash({id_cols}) AS _key,
            {id_type} AS _id_type, {id_value} AS _id_value, {ids_json} AS _ids,
            _first_mid, _first, _last
        FROM (SELECT {id_cols}, arg_min(_mid, _row) AS _first_mid, min(_row) AS _first_row,
                     min(_ts) AS _first, max(_ts) AS _last
              FROM _chk WHERE {fresh_where} GROUP BY ALL)
        ORDER BY _first_row)""").to_arrow_table()
    timer.lap("combos")
    sightings = SightingColumns(
        identities={r: combos.column(f"_{r}") for r in present},
        first=combos.column("_first"),
        last=combos.column("_last"),
        message_id=combos.column("_first_mid"),
    )
    on = " AND ".join(f"f._{r} IS NOT DISTINCT FROM c._{r}" for r in present)
    if _distinct_keys(combos):
        on = f"hash({', '.join(f'f._{r}' for r in present)}) = c._key"
    # 5. Three things run beside each other, each in one thread, as neither SQLite, DuckDB nor
    # the identity decision needs the others' results until the end: DuckDB stores the identity
    # sets while Python decides the persons; the ops store then writes and commits the persons
    # and identities while DuckDB appends the events (which need only each combination's person);
    # SQLite copies its write-ahead log back while the change feed is applied. The ops transaction
    # commits before the DuckDB one; if it fails, the events are rolled back with it.
    sets = combos.select(["_set_high", "_set_low", "_id_type", "_id_value", "_ids"]).rename_columns(
        ["high", "low", "identity_type", "identity_value", "identities"]
    )
    with ThreadPoolExecutor(1, thread_name_prefix="siyu-checkpoint") as background:
        with store.transaction() as tx:
            with ingestor.engine.connect() as conn:  # closing it rolls back a transaction left open
                ops = conn.begin()
                with alongside(lambda: store.add_identity_set_rows(tx, sets)):
                    decision = decide_columns(conn, ingestor.rules, sightings, make_id=ingestor.make_id)
                timer.lap("identity graph (identity sets alongside)")
                con.register("_combos", combos.append_column("_person", pa.array(decision.people, pa.string())))

                def write_ops() -> None:
                    decision.write(conn, trait_strategies=settings.trait_strategies, now=now)
                    with checkpoint_deferred(conn):
                        ops.commit()

                with alongside(write_ops):
                    # Each row finds its combination by the 64-bit hash of its identity columns
                    # when no two combinations share one (checked above), else by the columns
                    # themselves (NULL matching NULL).
                    identity_set = set_from_halves("c._set_high", "c._set_low")
                    tx.execute(f"""INSERT INTO events BY NAME SELECT f._mid AS event_id, c._person AS person_id,
                        {identity_set} AS identity_set, 'track' AS message_type, f._event AS name, f._ts AS ts,
                        f._props AS properties, {_lit(source)} AS source,
                        TIMESTAMPTZ '{now.isoformat()}' AS received_at
                        FROM (SELECT * FROM _chk WHERE {fresh_where}) f JOIN _combos c ON {on}""")
                    fold_seen(tx, "(SELECT _person AS person_id, _first AS first, _last AS last FROM _combos)")
                    timer.lap("events insert (ops write alongside)")
            timer.lap("ops write + commit (after the insert)")
            flushed = background.submit(checkpoint, ingestor.engine)
            apply_changes(ingestor.engine, store, tx)
        flushed.result()
    timer.lap("change feed (ops checkpoint alongside)")
    resolution = decision.resolution()
    ingestor.after_commit(lambda names: _stored_events(con, now, source, names))
    store.forget_seen_index()
    result.accepted = int(fresh)
    result.count(resolution)
    if progress:
        progress(int(fresh))
    return result, len(rejected_rows), rejects


def _stored_events(con: Any, received_at: datetime, source: str, names: frozenset[str]) -> pa.Table:
    """This import's new events (by its ``received_at`` and ``source``) with one of ``names``."""
    marks = ", ".join("?" for _ in names)
    rows = con.execute(
        "SELECT event_id, person_id, name, ts, properties FROM events "
        f"WHERE received_at = ? AND source = ? AND name IN ({marks})",
        [received_at, source, *sorted(names)],
    ).fetchall()
    columns = ("event_id", "person_id", "name", "ts", "properties")
    return pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})


def _distinct_keys(combos: pa.Table) -> bool:
    """Whether no two identity combinations share a 64-bit hash (``_key``)."""
    return bool(pc.count_distinct(combos.column("_key")).as_py() == combos.num_rows)


def _nullable(path: Path, columns: list[str]) -> set[str]:
    """Which of ``columns`` may hold NULLs, from the Parquet footer (schema and row-group statistics)."""
    meta = pq.ParquetFile(path).metadata
    index = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
    out = set()
    for c in columns:
        i = index.get(c)
        if i is None:
            out.add(c)
            continue
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(i).statistics
            if stats is None or not stats.has_null_count or stats.null_count:
                out.add(c)
                break
    return out


#: At most this many optional property columns take part in the row shapes of :func:`_props_json`,
#: and at most this many shapes get their own ``json_object``.
_MAX_SHAPE_COLUMNS = 62
_MAX_SHAPES = 64
_EMPTY_JSON = "'{}'::JSON"


def _shape_sql(nullable: list[str]) -> str:
    """SQL for a row's shape: a bit per column of ``nullable``, set where the row holds a value."""
    if not nullable:
        return "0::BIGINT"
    return " + ".join(f"(CASE WHEN {_q(c)} IS NULL THEN 0 ELSE {1 << i} END)::BIGINT" for i, c in enumerate(nullable))


def _props_json(props: list[str], nullable: set[str], shaped: Sequence[str] = (), shapes: Sequence[int] = ()) -> str:
    """SQL for the ``properties`` JSON text of a row: every property column, NULLs left out.

    ``json_object`` is cheap; leaving NULLs out (``json_merge_patch`` drops them) is not. When
    ``shaped`` holds every column of ``nullable``, rows of one of ``shapes`` (bit ``i`` set where
    column ``shaped[i]`` holds a value, :func:`_shape_sql`) get a ``json_object`` of exactly the
    columns they hold; other rows with a NULL in a column that may hold one pay for the merge.
    """
    if not props:
        return "'{}'"

    def obj(columns: Iterable[str]) -> str:
        return "json_object(" + ", ".join(f"{_lit(c)}, {_q(c)}" for c in columns) + ")"

    every = obj(props)
    if not nullable:
        return f"{every}::VARCHAR"
    any_null = " OR ".join(f"{_q(c)} IS NULL" for c in props if c in nullable)
    fallback = f"CASE WHEN {any_null} THEN json_merge_patch('{{}}', {every}) ELSE {every} END"
    if not shapes or not nullable <= set(shaped):
        return f"({fallback})::VARCHAR"
    bit = {c: 1 << i for i, c in enumerate(shaped)}
    cases = []
    for mask in shapes:
        held = [c for c in props if c not in bit or mask & bit[c]]
        cases.append(f"WHEN {mask} THEN {obj(held) if held else _EMPTY_JSON}")
    return f"(CASE {_shape_sql(list(shaped))} {' '.join(cases)} ELSE {fallback} END)::VARCHAR"


def _scalar(con: Any, sql: str) -> int:
    # fetchall, not fetchone: DuckDB keeps a half-read result open and refuses other work on
    # the connection (such as unregistering a view) until it is finished.
    return int(con.execute(sql).fetchall()[0][0])
