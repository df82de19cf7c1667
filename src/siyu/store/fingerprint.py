"""A canonical fingerprint of both stores: equal for equal contents, whatever ids were generated.

Person ids are generated (UUIDv7) and ``received_at`` is the wall clock, so two imports of the
same data never give byte-equal stores. The fingerprint names each person by their smallest
identity (``type:value``) instead, leaves out arrival times and generated ids, and hashes every
section order-independently. Two stores with equal fingerprints hold the same persons (as sets of
identities), traits, events, orders and (distinct) merge decisions.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
from sqlalchemy import Engine, select

from siyu.store.events import EventStore
from siyu.store.ops.schema import identities, identity_merges, traits
from siyu.timeutil import as_utc

# Row hashes are summed modulo 2⁶⁴ (as HUGEINT, then truncated): order-independent, and unlike XOR
# two equal rows do not cancel out.
_SECTIONS = {
    "persons": """
        SELECT person_key, string_agg(id, ',' ORDER BY id) AS ids FROM _fp_ids GROUP BY person_key
    """,
    "traits": """
        SELECT k.person_key, t.key, t.value, t.updated_at FROM _fp_traits t JOIN _fp_keys k USING (person_id)
    """,
    # The row path logs a refusal per message, the vectorised path per distinct identity
    # combination: the same decisions, so each distinct decision counts once.
    "merges": """
        SELECT DISTINCT m.status, k.person_key, m.reason FROM _fp_merges m LEFT JOIN _fp_keys k USING (person_id)
    """,
    "events": """
        SELECT CASE WHEN e.message_type = 'change' THEN NULL ELSE e.event_id END, k.person_key, e.identity_type,
               e.identity_value, e.identities, e.message_type, e.name, e.ts,
               CASE WHEN e.message_type = 'change' THEN NULL ELSE e.properties END, e.source
        FROM events_with_identities e LEFT JOIN _fp_keys k ON k.person_id = e.person_id
    """,
    "orders": """
        SELECT o.order_id, o.version, k.person_key, o.status, o.paid_at, o.amount_fen, o.discount_fen, o.refund_fen,
               o.items, o.channel, o.updated_at, o.content_hash, o.source
        FROM orders_current o LEFT JOIN _fp_keys k ON k.person_id = o.person_id
    """,
}


def store_fingerprint(engine: Engine, events: EventStore) -> dict[str, str]:
    """Per-section digests and an ``all`` digest over them."""
    with engine.connect() as conn:
        ids = conn.execute(select(identities.c.person_id, identities.c.type, identities.c.value)).all()
        trait_rows = conn.execute(select(traits.c.person_id, traits.c.key, traits.c.value, traits.c.updated_at)).all()
        merges = conn.execute(
            select(identity_merges.c.status, identity_merges.c.into_person_id, identity_merges.c.reason).distinct()
        ).all()
    id_table = pa.table(
        {
            "person_id": pa.array([r[0] for r in ids], pa.string()),
            "id": pa.array([f"{r[1]}:{r[2]}" for r in ids], pa.string()),
        }
    )
    trait_table = pa.table(
        {
            "person_id": pa.array([r[0] for r in trait_rows], pa.string()),
            "key": pa.array([r[1] for r in trait_rows], pa.string()),
            "value": pa.array([repr(r[2]) for r in trait_rows], pa.string()),
            "updated_at": pa.array([as_utc(r[3]).isoformat() for r in trait_rows], pa.string()),
        }
    )
    merge_table = pa.table(
        {
            "status": pa.array([r[0] for r in merges], pa.string()),
            "person_id": pa.array([r[1] for r in merges], pa.string()),
            "reason": pa.array([r[2] for r in merges], pa.string()),
        }
    )
    out: dict[str, str] = {}
    with events.write_lock:
        con = events.con.cursor()
        try:
            con.register("_fp_id_rows", id_table)
            con.register("_fp_traits", trait_table)
            con.register("_fp_merges", merge_table)
            con.execute(
                "CREATE TEMP TABLE _fp_keys AS SELECT person_id, min(id) AS person_key FROM _fp_id_rows GROUP BY 1"
            )
            con.execute(
                "CREATE TEMP TABLE _fp_ids AS "
                "SELECT k.person_key, r.id FROM _fp_id_rows r JOIN _fp_keys k USING (person_id)"
            )
            for name, sql in _SECTIONS.items():
                row = con.execute(
                    f"SELECT count(*), coalesce(sum(hash(s)::HUGEINT) % 18446744073709551616, 0) FROM ({sql}) s"
                ).fetchone()
                assert row is not None
                out[name] = f"{row[0]}:{int(row[1]):016x}"
        finally:
            con.execute("DROP TABLE IF EXISTS _fp_keys")
            con.execute("DROP TABLE IF EXISTS _fp_ids")
            con.close()
    out["all"] = hashlib.sha256("|".join(f"{k}={v}" for k, v in sorted(out.items())).encode()).hexdigest()
    return out
