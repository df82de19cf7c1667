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
from siyu.segments.saved import SavedSegmentError
from siyu.segments.service import SegmentService
from siyu.segments.tagging import refresh_rule_tags, tag_segment
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
    except (SegmentError, SegmentCompileError, SavedSegmentError) as exc:
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


def _emit(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


@segment_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The segment's name, e.g. 超级用户.")],
    expression: Expression,
    static: Annotated[bool, typer.Option("--static", help="A snapshot taken now, never refreshed.")] = False,
    description: Annotated[str | None, typer.Option(help="What the segment is for.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Save a segment and compute its members 保存人群."""
    with _service(ctx) as svc:
        seg, result = svc.saved.create(
            name, expression, kind="static" if static else "dynamic", description=description, by="cli"
        )
    if as_json:
        _emit({**seg, "entered": result.entered})
    else:
        sys.stdout.write(f"saved {seg['kind']} segment {seg['name']}: {result.members:,} members\n")


@segment_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Saved segments with their member counts."""
    with _service(ctx) as svc:
        rows = svc.saved.all()
    if as_json:
        _emit(rows)
        return
    for r in rows:
        sys.stdout.write(f"{r['name']}\t{r['kind']}\t{r['member_count'] or 0:,}\t{r['expression']}\n")


@segment_app.command("refresh")
def refresh(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One segment (default: every dynamic one).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Re-evaluate everyone, not only touched persons.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute members; record who entered and exited (segment_entered / segment_exited events)."""
    with _service(ctx) as svc:
        results = svc.saved.refresh(name, full=full)
        rules = [] if name is not None else refresh_rule_tags(svc)
    rows = [r.as_dict() for r in results]
    tag_rows = [t.as_dict() for t in rules]
    if as_json:
        _emit({"segments": rows, "rule_tags": tag_rows} if name is None else rows)
        return
    for r in rows:
        sys.stdout.write(
            f"{r['segment']}: {r['mode']}, {r['members']:,} members (+{r['entered']:,} −{r['exited']:,})\n"
        )
    for t in tag_rows:
        sys.stdout.write(f"rule tag {t['tag']}: {t['holders']:,} holders (+{t['added']:,} −{t['removed']:,})\n")


@segment_app.command("tag")
def tag(
    ctx: typer.Context,
    segment: Annotated[str, typer.Argument(help="A saved segment.")],
    tag_name: Annotated[str, typer.Argument(metavar="TAG", help="The tag to add to every member.")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove the tag from every member instead.")] = False,
) -> None:
    """Tag (or untag) every current member of a saved segment, person-level 按人群批量打标签."""
    from siyu.tags.errors import TagError

    with _service(ctx) as svc:
        try:
            changed = tag_segment(svc, segment, tag_name, remove=remove, by="cli")
        except TagError as exc:
            _fail(str(exc))
    sys.stdout.write(f"{'untagged' if remove else 'tagged'} {changed:,} persons\n")


@segment_app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The segment.")]) -> None:
    """Delete a saved segment (refused while another segment or a rule tag uses it)."""
    with _service(ctx) as svc:
        svc.saved.delete(name)
    sys.stdout.write(f"deleted {name}\n")


@segment_app.command("history")
def history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The segment.")],
    limit: Annotated[int, typer.Option(help="How many changes.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Who entered and exited the segment, newest first."""
    with _service(ctx) as svc:
        rows = svc.saved.history(name, limit)
    if as_json:
        _emit(rows)
        return
    for r in rows:
        sys.stdout.write(f"{r['at']}\t{r['change']}\t{r['person_id']}\n")


@segment_app.command("members")
def members(
    ctx: typer.Context,
    segment: Annotated[str, typer.Argument(help="A saved segment's name, or an expression.")],
    output: Annotated[Path | None, typer.Option("--out", help="Write to this file (default: standard output).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet (parquet needs --out).")] = "csv",
) -> None:
    """The ids of the persons in a saved segment (or selected by an expression), column ``person_id``."""
    if fmt not in ("csv", "parquet"):
        _fail(f"--format: csv or parquet, not {fmt!r}")
    if fmt == "parquet" and output is None:
        _fail("--format parquet needs --out FILE")
    with _service(ctx) as svc:
        saved = {s["name"] for s in svc.saved.all()}
        ids = svc.saved.members(segment) if segment in saved else sorted(svc.members(segment))
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
