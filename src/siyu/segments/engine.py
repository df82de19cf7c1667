"""Running segments on the event store: count, members, the generated SQL.

A thin layer over :mod:`siyu.segments.compile`: it opens a DuckDB cursor in the brand time zone
(calendar months and date-times without an offset are read there), wraps it as an Ibis backend and
evaluates the compiled expression.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir

from siyu.segments.compile import TABLE_NAMES, Context, Tables, compile_segment
from siyu.segments.nodes import Node
from siyu.segments.validate import Catalogue
from siyu.store.events import EventStore

#: Per event store: logical table → its Ibis schema. Weak: a closed store is dropped.
_SCHEMAS: WeakKeyDictionary[EventStore, dict[str, Any]] = WeakKeyDictionary()


def logical_tables(
    store: EventStore,
    names: Mapping[str, str] | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
) -> Tables:
    """The logical schema as *unbound* Ibis tables, compiled to SQL with ``ibis.to_sql`` and run on
    any cursor. Their schemas are read from the store once per store and process, not on every
    query (≈ 8 ms of a 0.12 s count at 1M persons). ``names`` reads a logical table from another
    relation of the same shape, ``columns`` narrows one to the columns that relation has."""
    schemas = _SCHEMAS.get(store)
    if schemas is None:
        backend = ibis.duckdb.from_connection(store.cursor())
        schemas = {key: backend.table(name).schema() for key, name in TABLE_NAMES.items()}
        _SCHEMAS[store] = schemas
    chosen = {**TABLE_NAMES, **(names or {})}
    narrowed = columns or {}
    return Tables(
        **{
            key: ibis.table(
                ibis.schema({c: schema[c] for c in narrowed[key]}) if key in narrowed else schema, name=chosen[key]
            )
            for key, schema in schemas.items()
        }
    )


class SegmentEngine:
    """Evaluates segment trees on one event store."""

    def __init__(
        self,
        store: EventStore,
        *,
        catalogue: Catalogue,
        tz: str = "Asia/Shanghai",
        segment: Callable[[str], Node | None] = lambda _name: None,
        static_id: Callable[[str], str | None] = lambda _name: None,
        groups: Mapping[str, tuple[str, ...]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.tz = ZoneInfo(tz)
        self.segment = segment
        self.static_id = static_id
        self.groups = dict(groups or {})
        self.now = now

    def _backend(self) -> Any:
        self.store.settle()
        backend = ibis.duckdb.from_connection(self.store.cursor())
        # After wrapping: Ibis sets the session to UTC itself. The key is a checked IANA zone name.
        backend.raw_sql(f"SET TimeZone = '{self.tz.key}'")
        return backend

    def context(self, now: datetime | None = None) -> Context:
        """The compilation context at ``now`` (default: the engine's clock)."""
        return Context(
            now=(now or self.now()).astimezone(UTC),
            catalogue=self.catalogue,
            tz=self.tz,
            segment=self.segment,
            static_id=self.static_id,
            groups=self.groups,
        )

    def tables(self) -> Tables:
        """The logical schema as unbound Ibis tables (see :func:`logical_tables`)."""
        return logical_tables(self.store)

    def expression(self, tree: Node, *, now: datetime | None = None, backend: Any = None) -> ir.Table:
        """The compiled expression (one column ``person_id``); over ``backend``'s tables when given,
        else over unbound tables (compile it with ``ibis.to_sql``)."""
        tables = Tables.from_backend(backend) if backend is not None else self.tables()
        return compile_segment(tree, tables, self.context(now))

    def _query(self, tree: Node, now: datetime | None, wrap: str) -> Any:
        """Run ``wrap`` (SQL with ``{q}`` for the segment's query) on a cursor in the brand time zone.

        Executing the generated SQL directly skips Ibis' backend and result conversion.
        """
        sql = ibis.to_sql(self.expression(tree, now=now), dialect="duckdb", pretty=False)
        self.store.settle()
        cur = self.store.cursor()
        cur.execute(f"SET TimeZone = '{self.tz.key}'")  # a checked IANA zone name
        return cur.execute(wrap.format(q=sql))

    def members(self, tree: Node, *, now: datetime | None = None) -> set[str]:
        """The ids of the persons in the segment."""
        return {r[0] for r in self._query(tree, now, "{q}").fetchall()}

    def count(self, tree: Node, *, now: datetime | None = None) -> int:
        """How many persons are in the segment."""
        return int(self._query(tree, now, "SELECT count(*) FROM ({q}) AS segment").fetchall()[0][0])

    def sql(self, tree: Node, *, now: datetime | None = None) -> str:
        """The SQL the segment runs as (DuckDB dialect)."""
        return str(ibis.to_sql(self.expression(tree, now=now), dialect="duckdb"))
