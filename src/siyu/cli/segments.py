"""``siyu segment …``: count and list the persons a segment expression selects, show an expression's
tree (the JSON form) and write a tree as text, and manage saved segments.

Errors print every problem on stderr (position, suggestions, and a caret under the place in the
expression); with ``--json`` the API's error object is also printed on stdout. Either way the exit
status is 1.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.cells import cell_len
from rich.console import Console

from siyu.runtime import Runtime
from siyu.segments import from_json, to_json, to_text
from siyu.segments.compile import SegmentCompileError
from siyu.segments.errors import SegmentError, SegmentValidationError, error_body
from siyu.segments.nodes import Span
from siyu.segments.saved import SavedSegmentError, with_tree
from siyu.segments.service import SegmentService
from siyu.segments.tagging import refresh_all, tag_segment
from siyu.store.events import EventStoreLocked

segment_app = typer.Typer(help="Segments 人群: count and list who an expression selects (docs/segments.md).")
err = Console(stderr=True, soft_wrap=True)

Expression = Annotated[
    str, typer.Argument(help="A segment expression, e.g. 'city = \"北京\" and did order_paid ever'.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (errors too, as the API's error object).")]


def _emit(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


def _fail(message: str, *, as_json: bool = False, code: str = "invalid_request") -> NoReturn:
    """Print ``error: message`` on stderr (and, with ``as_json``, the API's error object on stdout); exit 1."""
    if as_json:
        _emit({"error": {"code": code, "message": message}})
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(1)


def _pointer(source: str, span: Span) -> list[str]:
    """The line of ``source`` where ``span`` starts, and a caret line under the span (in terminal
    cells, so a Chinese character is two)."""
    lines = source.split("\n")
    if not 1 <= span.line <= len(lines):
        return []
    line = lines[span.line - 1].replace("\t", " ")
    start = min(span.column - 1, len(line))
    end = max(start + 1, min(start + (span.end - span.offset), len(line)))
    return [f"  {line}", "  " + " " * cell_len(line[:start]) + "^" * max(1, cell_len(line[start:end]))]


def error_lines(exc: Exception, source: str | None = None) -> list[str]:
    """Every error in ``exc`` for people: one ``error: …`` line per problem (both languages, with the
    position, or the JSON path for a tree, and any suggestions), each followed by the expression's
    line and a caret under the place when ``source`` (the expression's text) is given."""
    items: list[tuple[str, Span | None]]
    if isinstance(exc, SegmentValidationError):
        items = [
            (str(p) if p.span is not None else f"{p.path}：{p.message_zh} / {p.path}: {p.message_en}", p.span)
            for p in exc.problems
        ]
    else:
        span = getattr(exc, "span", None)
        items = [(str(exc), span if isinstance(span, Span) else None)]
    out: list[str] = []
    for message, where in items:
        out.append(f"error: {message}")
        if where is not None and source is not None:
            out.extend(_pointer(source, where))
    return out


def _fail_with(exc: Exception, *, as_json: bool, source: str | None) -> NoReturn:
    """Report a segment error: every problem on stderr; with ``as_json`` the API's error object on stdout."""
    if as_json:
        _emit(error_body(exc))
    for line in error_lines(exc, source):
        err.print(line, markup=False, highlight=False)
    raise typer.Exit(1)


@contextmanager
def _service(ctx: typer.Context, *, as_json: bool = False, source: str | None = None) -> Iterator[SegmentService]:
    """A SegmentService over freshly opened stores; a segment error prints every problem (with
    ``as_json`` also the API's error object on stdout) and exits 1. ``source`` is the expression
    typed, to point at the place of a problem."""
    try:
        rt = Runtime.open(ctx.obj)
    except EventStoreLocked as exc:
        _fail(str(exc), as_json=as_json, code="store_locked")
    try:
        yield SegmentService(rt)
    except (SegmentError, SegmentCompileError, SavedSegmentError) as exc:
        _fail_with(exc, as_json=as_json, source=source)
    finally:
        rt.close()


@segment_app.command("count")
def count(ctx: typer.Context, expression: Expression, as_json: JsonOpt = False) -> None:
    """How many persons the expression selects 人群人数."""
    with _service(ctx, as_json=as_json, source=expression) as svc:
        n = svc.count(expression)
    if as_json:
        sys.stdout.write(json.dumps({"count": n}) + "\n")
    else:
        sys.stdout.write(f"{n:,}\n")


@segment_app.command("parse")
def parse_(ctx: typer.Context, expression: Expression, as_json: JsonOpt = False) -> None:
    """Check an expression against the catalogue and show its tree, the JSON form 解析表达式.

    Prints the canonical text and the tree; ``--json`` prints ``{"tree": …, "expression": …}``
    as ``POST /v1/segments/parse`` answers.
    """
    with _service(ctx, as_json=as_json, source=expression) as svc:
        tree = svc.tree(expression)
    text, data = to_text(tree), to_json(tree)
    if as_json:
        _emit({"tree": data, "expression": text})
    else:
        sys.stdout.write(text + "\n" + json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@segment_app.command("render")
def render(
    ctx: typer.Context,
    tree: Annotated[str, typer.Argument(help="A tree in the JSON form, or - to read it from standard input.")],
    as_json: JsonOpt = False,
) -> None:
    """Check a tree (the JSON form) against the catalogue and write it as canonical text 树转表达式.

    ``--json`` prints ``{"expression": …}`` as ``POST /v1/segments/render`` answers.
    """
    raw = sys.stdin.read() if tree == "-" else tree
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(f"树不是 JSON / the tree is not JSON: {exc}", as_json=as_json, code="invalid_segment")
    if not isinstance(data, dict):
        try:
            from_json(data)  # names the problem: "$: expected an object, found …"
        except SegmentError as exc:
            _fail_with(exc, as_json=as_json, source=None)
    with _service(ctx, as_json=as_json) as svc:
        text = to_text(svc.tree(data))
    if as_json:
        _emit({"expression": text})
    else:
        sys.stdout.write(text + "\n")


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
    with _service(ctx, as_json=as_json, source=expression) as svc:
        seg, result = svc.saved.create(
            name, expression, kind="static" if static else "dynamic", description=description, by="cli"
        )
    if as_json:
        _emit({**seg, "entered": result.entered})
    else:
        sys.stdout.write(f"saved {seg['kind']} segment {seg['name']}: {result.members:,} members\n")


@segment_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Saved segments with their member counts (``--json``: with each definition's tree, the JSON form)."""
    with _service(ctx, as_json=as_json) as svc:
        rows = svc.saved.all()
    if as_json:
        _emit([with_tree(r) for r in rows])
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
    with _service(ctx, as_json=as_json) as svc:
        if name is None:
            results, rules = refresh_all(svc, full=full)
        else:
            results, rules = svc.saved.refresh(name, full=full), []
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
    with _service(ctx, as_json=as_json) as svc:
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
    with _service(ctx, source=segment) as svc:
        saved = {s["name"] for s in svc.saved.all()}
        ids = svc.saved.members(segment) if segment in saved else sorted(svc.members(segment))
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert output is not None
        pq.write_table(pa.table({"person_id": pa.array(ids, pa.string())}), output)
        return
    handle = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    # "\n" as the API writes: a line piped into `siyu tag add` must not end in "\r".
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["person_id"])
    writer.writerows([i] for i in ids)
    if output:
        handle.close()
