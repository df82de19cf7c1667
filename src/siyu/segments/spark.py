"""Running segments on Spark: the event store exported to a Parquet lake, read by a SparkSession.

The same compiled expression as on DuckDB (:mod:`siyu.segments.compile`, decision 010), over the
same logical schema: :func:`export_lake` writes ``events_resolved``, ``orders_current`` and the
person-state tables as Parquet files; :class:`SparkSegmentEngine` registers them in a SparkSession
(through Ibis' PySpark backend) whose session time zone is the brand's, and evaluates segments.

PySpark is an optional dependency (``pip install 'siyu[spark]'``) and needs Java (17 works)::

    export_lake(store, "lake/")
    session = local_session()
    engine = SparkSegmentEngine(session, "lake/", catalogue=catalogue)
    engine.count(parse('did order_paid >= 2 in last 90d'))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir
import sqlglot as sg
import sqlglot.expressions as sge
from ibis.backends.sql.compilers.pyspark import PySparkCompiler

from siyu.segments.compile import Context, Tables, compile_segment
from siyu.segments.nodes import Node
from siyu.segments.validate import Catalogue
from siyu.store.events import EventStore

#: Logical table → the event store's relation exported under that name (one Parquet file each).
LAKE_TABLES: dict[str, str] = {
    "events": "events_resolved",
    "orders": "orders_current",
    "person_state": "person_state",
    "trait_state": "trait_state",
    "tag_state": "tag_state",
    "group_state": "group_state",
    "membership": "segment_membership",
}


def export_lake(store: EventStore, directory: Path | str) -> Path:
    """Write the tables a segment reads to ``directory/<name>.parquet`` (replacing older files)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    store.settle()
    cur = store.cursor()
    try:
        for name in LAKE_TABLES.values():
            target = str((out / f"{name}.parquet").resolve()).replace("'", "''")
            cur.execute(f"COPY (SELECT * FROM {name}) TO '{target}' (FORMAT parquet)")
    finally:
        cur.close()
    return out


def local_session(cores: int = 2, *, shuffle_partitions: int = 4, app: str = "siyu-segments") -> Any:
    """A local SparkSession for segments (UI off, few shuffle partitions, bound to 127.0.0.1)."""
    from pyspark.sql import SparkSession  # optional dependency: imported on use

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )


_JSON_OPS = (ops.UnwrapJSONString, ops.UnwrapJSONFloat64, ops.UnwrapJSONBoolean, ops.ToJSONArray)


class JsonTextCompiler(PySparkCompiler):
    """Ibis' PySpark compiler with JSON read as JSON text, as on DuckDB.

    Ibis 12 reads ``json[key]`` on Spark with ``get_json_object``, which returns a string value
    *without* its quotes (``"1"`` and ``1`` both become ``1``), and then types it in Python UDFs
    that ``json.loads`` that text: a string property fails or is read as a number. Here ``json[key]``
    is the JSON text of the value (``to_json`` of a VARIANT, Spark ≥ 4.0), and the typed reads
    (``.str``, ``.float``, ``.bool``, ``.array``) look at the VARIANT's type natively: NULL for
    another JSON type, exactly as the DuckDB compiler does. The segment compiler is unchanged.
    """

    # Ibis generates visit methods from these two tables in __init_subclass__: leave ours out.
    SIMPLE_OPS: ClassVar[dict[type[ops.Node], str]] = {
        op: name for op, name in PySparkCompiler.SIMPLE_OPS.items() if op not in _JSON_OPS
    }
    UNSUPPORTED_OPS: ClassVar[tuple[type[ops.Node], ...]] = tuple(
        op for op in PySparkCompiler.UNSUPPORTED_OPS if op not in _JSON_OPS
    )

    def _variant(self, arg: sge.Expression) -> sge.Expression:
        return self.f.anon.try_parse_json(arg)

    def _kind(self, arg: sge.Expression) -> sge.Expression:
        return self.f.anon.schema_of_variant(self._variant(arg))

    def _get(self, arg: sge.Expression, to: str) -> sge.Expression:
        return self.f.anon.try_variant_get(self._variant(arg), sge.convert("$"), sge.convert(to))

    def visit_JSONGetItem(self, op: ops.JSONGetItem, *, arg: sge.Expression, index: sge.Expression) -> sge.Expression:
        if not isinstance(op.index, ops.Literal) or not isinstance(op.index.value, str):
            return super().visit_JSONGetItem(op, arg=arg, index=index)
        key = op.index.value
        if len(key) >= 2 and key[0] == key[-1] == '"':  # the compiler's quoted key ('"a.b"' is one key)
            key = key[1:-1]
        if '"' in key or "\\" in key:
            raise ValueError(f"JSON keys with quotes or backslashes cannot be read on Spark: {key!r}")
        path = sge.convert(f'$["{key}"]')
        return self.f.anon.to_json(self.f.anon.try_variant_get(self._variant(arg), path))

    def visit_UnwrapJSONString(self, op: ops.Node, *, arg: sge.Expression) -> sge.Expression:
        return self.if_(self._kind(arg).eq(sge.convert("STRING")), self._get(arg, "string"), sge.Null())

    def visit_UnwrapJSONFloat64(self, op: ops.Node, *, arg: sge.Expression) -> sge.Expression:
        kind = self._kind(arg)
        number = sg.or_(
            kind.isin(*(sge.convert(k) for k in ("BIGINT", "INT", "SMALLINT", "TINYINT", "DOUBLE", "FLOAT"))),
            self.f.anon.startswith(kind, sge.convert("DECIMAL")),
        )
        return self.if_(number, self._get(arg, "double"), sge.Null())

    def visit_UnwrapJSONBoolean(self, op: ops.Node, *, arg: sge.Expression) -> sge.Expression:
        return self.if_(self._kind(arg).eq(sge.convert("BOOLEAN")), self._get(arg, "boolean"), sge.Null())

    def visit_ToJSONArray(self, op: ops.Node, *, arg: sge.Expression) -> sge.Expression:
        element = sg.to_identifier("siyu_json_element")
        as_text = sge.Lambda(this=self.f.anon.to_json(element), expressions=[element])
        items = self.f.anon.transform(self._get(arg, "array<variant>"), as_text)
        return self.if_(self.f.anon.startswith(self._kind(arg), sge.convert("ARRAY")), items, sge.Null())


class SparkSegmentEngine:
    """Evaluates segment trees on a Parquet lake (written by :func:`export_lake`) with Spark."""

    def __init__(
        self,
        session: Any,
        lake: Path | str,
        *,
        catalogue: Catalogue,
        tz: str = "Asia/Shanghai",
        segment: Callable[[str], Node | None] = lambda _name: None,
        static_id: Callable[[str], str | None] = lambda _name: None,
        groups: Mapping[str, tuple[str, ...]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.catalogue = catalogue
        self.tz = ZoneInfo(tz)
        self.segment = segment
        self.static_id = static_id
        self.groups = dict(groups or {})
        self.now = now
        self.backend = ibis.pyspark.connect(session)
        self.backend.compiler = JsonTextCompiler()  # this connection only (see JsonTextCompiler)
        # After connecting: Ibis sets the session to UTC itself. The compiler relies on the session
        # zone for calendar-month `within` and date-times without an offset (decision 010).
        session.conf.set("spark.sql.session.timeZone", self.tz.key)
        lake = Path(lake)
        for name in LAKE_TABLES.values():
            self.backend.read_parquet(str((lake / f"{name}.parquet").resolve()), table_name=name)
        self.tables = Tables.from_backend(self.backend, LAKE_TABLES)

    def expression(self, tree: Node, *, now: datetime | None = None) -> ir.Table:
        """The compiled expression (one column ``person_id``)."""
        ctx = Context(
            now=(now or self.now()).astimezone(UTC),
            catalogue=self.catalogue,
            tz=self.tz,
            segment=self.segment,
            static_id=self.static_id,
            groups=self.groups,
        )
        return compile_segment(tree, self.tables, ctx)

    def members(self, tree: Node, *, now: datetime | None = None) -> set[str]:
        """The ids of the persons in the segment."""
        table = self.expression(tree, now=now).to_pyarrow()
        return set(table.column("person_id").to_pylist())

    def count(self, tree: Node, *, now: datetime | None = None) -> int:
        """How many persons are in the segment."""
        return int(self.expression(tree, now=now).count().execute())

    def sql(self, tree: Node, *, now: datetime | None = None) -> str:
        """The SQL the segment runs as (Spark dialect)."""
        return str(self.backend.compile(self.expression(tree, now=now)))
