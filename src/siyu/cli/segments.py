"""``siyu segment …``: count and list the persons a segment expression selects."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from siyu.runtime import Runtime
from siyu.segments.compile import SegmentCompileError
from siyu.segments.errors import SegmentError
from siyu.segments.service import SegmentService
from siyu.store.events import EventStoreLocked

segment_app = typer.Typer(help="Segments 人群: count and list who an expression selects (docs/segments.md).")
err = Console(stderr=True, soft_wrap=True)

Expression = Annotated[
    str, typer.Argument(help="A segment expression, e.g. 'city = \"北京\" and did order_paid ever'.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(1)


@contextmanager
def _service(ctx: typer.Context) -> Iterator[SegmentService]:
    """A SegmentService over freshly opened stores; segment errors become a clear message and exit 1."""
    try:
        rt = Runtime.open(ctx.obj)
    except EventStoreLocked as exc:
        _fail(str(exc))
    try:
        yield SegmentService(rt)
    except (SegmentError, SegmentCompileError) as exc:
        _fail(str(exc))
    finally:
        rt.close()


@segment_app.command("count")
def count(ctx: typer.Context, expression: Expression, as_json: JsonOpt = False) -> None:
    """How many persons the expression selects 人群人数."""
    with _service(ctx) as svc:
        n = svc.count(expression)
    if as_json:
        sys.stdout.write(json.dumps({"count": n}) + "\n")
    else:
        sys.stdout.write(f"{n:,}\n")


@segment_app.command("members")
def members(
    ctx: typer.Context,
    expression: Expression,
    output: Annotated[Path | None, typer.Option("--out", help="Write to this file (default: standard output).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet (parquet needs --out).")] = "csv",
) -> None:
    """The ids of the persons the expression selects, one per row (column ``person_id``)."""
    if fmt not in ("csv", "parquet"):
        _fail(f"--format: csv or parquet, not {fmt!r}")
    if fmt == "parquet" and output is None:
        _fail("--format parquet needs --out FILE")
    with _service(ctx) as svc:
        ids = sorted(svc.members(expression))
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert output is not None
        pq.write_table(pa.table({"person_id": pa.array(ids, pa.string())}), output)
        return
    handle = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    writer = csv.writer(handle)
    writer.writerow(["person_id"])
    writer.writerows([i] for i in ids)
    if output:
        handle.close()
