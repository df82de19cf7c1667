"""``siyu``: set up, serve, import, inspect. Every command honours ``SIYU_HOME`` (or ``--home``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from siyu.cli.segments import segment_app
from siyu.cli.tags import tag_app
from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.store.events import EventStoreLocked

if TYPE_CHECKING:
    from siyu.simulate.brands import Brand
    from siyu.simulate.run import SimulationSummary

app = typer.Typer(
    help="siyu 私域 — private-domain customer operations.", no_args_is_help=True, pretty_exceptions_enable=False
)
person_app = typer.Typer(help="One person: show, export, delete (PIPL).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
plan_app = typer.Typer(help="Tracking plan: a JSON Schema per event name.", no_args_is_help=True)
app.add_typer(person_app, name="person")
app.add_typer(keys_app, name="keys")
app.add_typer(plan_app, name="plan")
app.add_typer(tag_app, name="tag")
app.add_typer(segment_app, name="segment")

out = Console()
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print an error in red and exit."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path | None, typer.Option("--home", help="Data directory (default: $SIYU_HOME or ./.siyu).")
    ] = None,
) -> None:
    """Build the settings once; sub-commands receive them through the context."""
    try:
        settings = Settings() if home is None else Settings(home=home)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
    ctx.obj = settings


@contextmanager
def opened(ctx: typer.Context) -> Iterator[Runtime]:
    """Open the stores, turning 'in use by the server' into a clear message."""
    try:
        runtime = Runtime.open(ctx.obj)
    except EventStoreLocked as exc:
        fail(str(exc))
    try:
        yield runtime
    finally:
        runtime.close()


def emit_json(data: Any) -> None:
    """Print JSON for scripts (no Rich markup)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


@app.command()
def init(ctx: typer.Context) -> None:
    """Create SIYU_HOME and both stores (idempotent)."""
    with opened(ctx) as rt:
        out.print(f"siyu home: {rt.settings.home.resolve()}")
        out.print(f"ops store: {rt.engine.url.render_as_string(hide_password=True)}")
        out.print(f"event store: {rt.settings.resolved_events_path.resolve()}")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Serve the API and console (uvicorn, default http://127.0.0.1:8000)."""
    settings: Settings = ctx.obj
    with opened(ctx) as rt:
        out.print(f"siyu serving http://{host or settings.host}:{port or settings.port}  (API docs at /docs)")
        _run_server(rt, host or settings.host, port or settings.port)


def _run_server(rt: Runtime, host: str, port: int) -> None:
    import gc

    import uvicorn

    from siyu.api.app import create_app

    app = create_app(rt.settings, rt)
    # What is alive now (modules, schemas, compiled statements) lives as long as the server:
    # frozen out of the cyclic collector's sight, each full collection during ingestion is cheaper.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level="warning")


@app.command()
def demo(
    ctx: typer.Context,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after loading.")] = True,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    brand: Annotated[str, typer.Option(help="Brand to simulate: 母婴 | 美妆 | 生鲜 | 家装.")] = "母婴",
    customers: Annotated[int, typer.Option(help="Customers to simulate.")] = 50_000,
    months: Annotated[int, typer.Option(help="Months of history, ending today.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
) -> None:
    """Simulate a brand into an empty SIYU_HOME (once; a load that stopped is finished), then serve."""
    from siyu.cli.demo_home import DemoRun, DemoState, read_state, write_state
    from siyu.profiles.service import stats
    from siyu.simulate.brands import brand_named

    settings: Settings = ctx.obj
    try:
        asked = DemoRun(brand_named(brand).name, customers, months, seed, _today(settings).isoformat())
        state = read_state(settings.home)
    except ValueError as exc:  # an unknown brand, or a demo.json that cannot be read
        fail(str(exc))
    # Good options before any state is written: a load begun with bad ones could never finish.
    _checked_options(settings, customers=customers, months=months, seed=seed, end=asked.end)
    with opened(ctx) as rt:
        empty = stats(rt.engine, rt.events)["events"] == 0
    if state is None and not empty:
        err.print(f"SIYU_HOME ({settings.home}) already holds data that no demo loaded: serving it as it is")
    elif state is not None and state.complete:
        if not state.run.same_options(asked):
            err.print(f"SIYU_HOME holds the demo of {state.run.describe()}; for another, use an empty SIYU_HOME")
    else:
        run = asked
        if state is not None:
            if not state.run.same_options(asked):
                fail(
                    f"the demo load of {state.run.describe()} in {settings.home} stopped before it finished: "
                    "run `siyu demo` with those options to finish it, or use an empty SIYU_HOME"
                )
            run = state.run
            err.print(f"finishing the demo load that stopped: {run.describe()}")
        write_state(settings.home, DemoState(run, complete=False))
        simulate(
            ctx,
            brand=run.brand,
            customers=run.customers,
            months=run.months,
            seed=run.seed,
            out_dir=settings.home / "simulation",
            end=run.end,
            fmt="parquet",
            load=True,
            as_json=False,
            overwrite=True,
        )
        write_state(settings.home, DemoState(run, complete=True))
    with opened(ctx) as rt:
        key_file = rt.settings.home / "demo-admin-key.txt"
        if not key_file.exists():
            from siyu.api.keys import create_key

            key_file.write_text(create_key(rt.engine, kind="admin", name="demo").key + "\n")
        key = key_file.read_text().strip()
        out.print(f"admin key for the demo API: {key}  (kept in {key_file})")
        emit_stats(stats(rt.engine, rt.events))
        if serve_after:
            p = port or rt.settings.port
            out.print(
                f"[bold]siyu demo[/bold] 控制台 console: http://{rt.settings.host}:{p}/#key={key}  — Ctrl+C to stop"
            )
            _run_server(rt, rt.settings.host, p)


def _today(settings: Settings) -> date:
    """Today in the brand's time zone (a simulation's default last day, exclusive)."""
    return datetime.now(ZoneInfo(settings.timezone)).date()


#: The smallest run `siyu simulate` offers (1,000 to 10M customers); the Python API takes fewer, for tests.
MIN_CLI_CUSTOMERS = 1_000


def _checked_options(settings: Settings, *, customers: int, months: int, seed: int, end: str | None) -> date:
    """The simulation's last day (exclusive), once every option is known to be good: anything a
    simulation would refuse is refused here, naming the option, before a file or state is written."""
    from siyu.simulate.run import MAX_CUSTOMERS, MAX_MONTHS, check_arguments

    try:
        last = date.fromisoformat(end) if end else _today(settings)
    except ValueError as exc:
        fail(f"--end {end!r}: not a day as YYYY-MM-DD ({exc})")
    if not MIN_CLI_CUSTOMERS <= customers <= MAX_CUSTOMERS:
        fail(f"--customers must be between {MIN_CLI_CUSTOMERS:,} and {MAX_CUSTOMERS:,}, not {customers:,}")
    if not 1 <= months <= MAX_MONTHS:
        fail(f"--months must be between 1 and {MAX_MONTHS}, not {months}")
    if seed < 0:
        fail(f"--seed must be 0 or more, not {seed}")
    try:
        check_arguments(customers=customers, months=months, end=last)
    except ValueError as exc:  # a period outside the shopping calendar
        fail(f"--end {last} --months {months}: {exc}")
    return last


@app.command()
def simulate(
    ctx: typer.Context,
    brand: Annotated[str, typer.Option(help="母婴 | 美妆 | 生鲜 | 家装 (or mb, bt, fr, hd).")] = "母婴",
    customers: Annotated[int, typer.Option(help="Customers to simulate (1,000 to 10,000,000).")] = 50_000,
    months: Annotated[int, typer.Option(help="Months of history, ending at --end.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 1,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the data files and the truth.")] = Path("sim"),
    end: Annotated[str | None, typer.Option(help="Last day (exclusive), YYYY-MM-DD; default today.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet | jsonl")] = "parquet",
    load: Annotated[bool, typer.Option("--load", help="Then import it into SIYU_HOME.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a previous simulation's files in --out.")
    ] = False,
) -> None:
    """Simulate a brand's private domain, with its ground truth in OUT/truth/."""
    from siyu.simulate.brands import brand_named
    from siyu.simulate.folder import prepare_out
    from siyu.simulate.run import FORMATS
    from siyu.simulate.run import simulate as run_simulation

    settings: Settings = ctx.obj
    try:
        chosen = brand_named(brand)
    except ValueError as exc:
        fail(str(exc))
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    last = _checked_options(settings, customers=customers, months=months, seed=seed, end=end)
    try:
        prepare_out(out_dir, overwrite=overwrite)
    except ValueError as exc:
        fail(str(exc))
    options: dict[str, Any] = {
        "customers": customers,
        "months": months,
        "seed": seed,
        "out": out_dir,
        "end": last,
        "time_zone": settings.timezone,
        "fmt": fmt,
    }
    result: dict[str, Any]
    if load:
        summary, loaded = _simulate_and_load(ctx, chosen, options, as_json)
        result = {**summary.as_dict(), "loaded": loaded}
    else:
        with _bar(as_json) as bar:
            task = bar.add_task(f"simulate {chosen.name}", total=customers)
            try:
                summary = run_simulation(chosen, **options, progress=lambda n: bar.advance(task, n))
            except ValueError as exc:
                fail(str(exc))
        result = summary.as_dict()
    if as_json:
        emit_json(result)
        return
    out.print(
        f"{chosen.name}: {summary.customers:,} customers, {summary.events:,} events, "
        f"{summary.orders:,} order rows, {summary.start} – {summary.end} → {out_dir} (truth in {out_dir / 'truth'})"
    )
    if load:
        loaded = {k: v["accepted"] for k, v in result["loaded"].items() if isinstance(v, dict)}
        out.print(f"loaded into {settings.home}: " + ", ".join(f"{k} {n:,}" for k, n in loaded.items()))


def _simulate_and_load(
    ctx: typer.Context, brand: Brand, options: dict[str, Any], quiet: bool
) -> tuple[SimulationSummary, dict[str, Any]]:
    """Simulate and import at once (the customers are imported while events and orders are drawn)."""
    from siyu.simulate.pipeline import SimulationFailed, simulate_and_load

    with opened(ctx) as rt, _bar(quiet) as bar:
        sim_task = bar.add_task(f"simulate {brand.name}", total=options["customers"])
        import_task = bar.add_task("import", total=None)
        to_import = [0]

        def more_rows(n: int) -> None:
            to_import[0] += n
            bar.update(import_task, total=to_import[0])

        try:
            summary, report = simulate_and_load(
                rt,
                brand,
                **options,
                simulated=lambda n: bar.advance(sim_task, n),
                imported=lambda n: bar.advance(import_task, n),
                rows_known=more_rows,
            )
        except (ValueError, SimulationFailed) as exc:
            fail(str(exc))
    return summary, report.as_dict()


def _bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
    )


def emit_stats(data: dict[str, int]) -> None:
    """Print counts as a table."""
    table = Table("", "count")
    for key, value in data.items():
        table.add_row(key, f"{value:,}")
    out.print(table)


@app.command("import")
def import_(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="events | orders | customers | simulation")],
    file: Annotated[Path, typer.Argument(help="A .csv, .jsonl or .parquet file (a folder for simulation).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {accepted, rejected, duplicates}.")] = False,
    source: Annotated[str | None, typer.Option(help="Source label stored with each event.")] = None,
) -> None:
    """Import a file; bad rows go to FILE.rejects.jsonl with their reasons."""
    from siyu.ingest.files import ImportFileError, count_rows, import_file

    if kind not in ("events", "orders", "customers", "simulation"):
        fail(f"unknown kind {kind!r}: use events, orders, customers or simulation")
    if kind == "simulation":
        if source is not None:
            fail("--source does not apply to a simulation: its rows are labelled simulator")
        _import_simulation(ctx, file, as_json)
        return
    if not file.is_file():
        fail(f"{file}: no such file")
    with opened(ctx) as rt:
        try:
            total = count_rows(file)
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                disable=as_json or not err.is_terminal,
            ) as bar:
                task = bar.add_task(f"import {kind}", total=total)
                report = import_file(
                    rt.ingestor,
                    file,
                    kind,  # type: ignore[arg-type]
                    source=source,
                    progress=lambda n: bar.advance(task, n),
                )
        except ImportFileError as exc:
            fail(str(exc))
    if as_json:
        emit_json(report.as_dict())
    else:
        out.print(
            f"accepted {report.result.accepted:,}, rejected {report.rejected:,}, "
            f"duplicates {report.result.duplicates:,} (new persons {report.result.new_persons:,}, "
            f"merges {report.result.merges:,}, refused merges {report.result.refused_merges:,})"
        )
    if report.rejects_path:
        err.print(f"rejected rows and reasons: {report.rejects_path}")


def _import_simulation(ctx: typer.Context, folder: Path, as_json: bool) -> None:
    """Import a `siyu simulate` folder as `--load` does: the staff, then customers, events, orders."""
    from siyu.ingest.files import ImportFileError
    from siyu.simulate.load import load_simulation, total_rows

    try:
        total = total_rows(folder)
    except ValueError as exc:  # not a simulation folder, or a file missing
        fail(str(exc))
    with opened(ctx) as rt, _bar(as_json) as bar:
        task = bar.add_task("import simulation", total=total)
        try:
            report = load_simulation(rt, folder, progress=lambda n: bar.advance(task, n))
        except ImportFileError as exc:
            fail(str(exc))
    if as_json:
        emit_json(report.as_dict())
        return
    counts = ", ".join(f"{kind} {r.result.accepted:,}" for kind, r in report.reports.items())
    out.print(f"staff {report.staff:,}, {counts} (accepted)")
    for r in report.reports.values():
        if r.rejects_path:
            err.print(f"rejected rows and reasons: {r.rejects_path}")


@app.command("stats")
def stats_(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Counts of persons, identities, events and orders."""
    from siyu.profiles.service import stats

    with opened(ctx) as rt:
        data = stats(rt.engine, rt.events)
    emit_json(data) if as_json else emit_stats(data)


def _person(rt: Runtime, ref: str) -> str:
    from siyu.profiles.service import PersonNotFound, resolve_person_id

    try:
        return resolve_person_id(rt.engine, ref)
    except PersonNotFound as exc:
        fail(str(exc))
    raise AssertionError  # unreachable


@person_app.command("show")
def person_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Person id or type:value.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Timeline entries.")] = 20,
) -> None:
    """A person's profile and latest activity."""
    from siyu.profiles.service import get_profile, timeline

    with opened(ctx) as rt:
        pid = _person(rt, ref)
        profile = get_profile(rt.engine, rt.events, pid)
        profile["timeline"] = timeline(rt.events, [pid, *profile["merged_from"]], limit=limit)
    if as_json:
        emit_json(profile)
        return
    out.print(f"[bold]{profile['id']}[/bold]  first seen {profile['first_seen']}  last seen {profile['last_seen']}")
    out.print("identities: " + ", ".join(f"{i['type']}={i['value']}" for i in profile["identities"]))
    out.print(f"traits: {json.dumps(profile['traits'], ensure_ascii=False)}")
    out.print(f"orders: {profile['order_count']}  total spend ¥{profile['total_spend_fen'] / 100:,.2f}")
    table = Table("time", "event", "properties")
    for item in profile["timeline"]["items"]:
        table.add_row(item["timestamp"], item["name"], json.dumps(item["properties"], ensure_ascii=False)[:80])
    out.print(table)


@person_app.command("export")
def person_export(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Person id or type:value.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to a file.")] = None,
) -> None:
    """Everything held about a person, as JSON (PIPL access request)."""
    from siyu.profiles.service import export_person

    with opened(ctx) as rt:
        data = export_person(rt.engine, rt.events, _person(rt, ref))
    if output:
        output.write_text(json.dumps(data, ensure_ascii=False, indent=2))
        err.print(f"written to {output}")
    else:
        emit_json(data)


@person_app.command("delete")
def person_delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Person id or type:value.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person from both stores (PIPL deletion); only an audit record remains."""
    from siyu.profiles.service import erase_person

    with opened(ctx) as rt:
        pid = _person(rt, ref)
        if not yes and not typer.confirm(f"erase person {pid} and everything about them?"):
            raise typer.Exit(1)
        counts = erase_person(rt.engine, rt.events, pid, requested_by="cli")
    emit_json({"erased": pid, "counts": counts})


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="write (ingestion) or admin (everything).")] = "write",
    name: Annotated[str, typer.Option(help="What the key is for.")] = "default",
) -> None:
    """Create an API key and print it (shown only once)."""
    from siyu.api.keys import create_key

    if kind not in ("write", "admin"):
        fail("--kind must be write or admin")
    with opened(ctx) as rt:
        try:
            created = create_key(rt.engine, kind=kind, name=name)  # type: ignore[arg-type]
        except ValueError as exc:
            fail(str(exc))
        err.print(f"key id {created.id} (use it to revoke); the key itself is shown only now:")
        sys.stdout.write(created.key + "\n")


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """API keys (without their secrets)."""
    from siyu.api.keys import list_keys

    with opened(ctx) as rt:
        rows = list_keys(rt.engine)
    table = Table("id", "name", "kind", "prefix", "created", "revoked")
    for r in rows:
        table.add_row(*(str(r[c] or "") for c in ("id", "name", "kind", "prefix", "created_at", "revoked_at")))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id from `keys list`.")]) -> None:
    """Revoke an API key."""
    from siyu.api.keys import revoke_key

    with opened(ctx) as rt:
        if not revoke_key(rt.engine, key_id):
            fail(f"no active key {key_id}")
    out.print(f"revoked {key_id}")


@plan_app.command("set")
def plan_set(
    ctx: typer.Context,
    event: Annotated[str, typer.Argument(help="Event name.")],
    schema_file: Annotated[Path, typer.Argument(help="A JSON Schema file for its properties.")],
) -> None:
    """Set the JSON Schema of an event's properties."""
    from siyu.ingest.tracking_plan import TrackingPlanError

    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{schema_file}: {exc}")
    with opened(ctx) as rt:
        try:
            rt.ingestor.plan.set(event, schema)
        except TrackingPlanError as exc:
            fail(str(exc))
    out.print(f"schema set for {event}")


@plan_app.command("list")
def plan_list(ctx: typer.Context) -> None:
    """Event schemas of the tracking plan, as JSON."""
    with opened(ctx) as rt:
        emit_json({"mode": rt.settings.tracking_plan_mode, "events": rt.ingestor.plan.list()})


@plan_app.command("remove")
def plan_remove(ctx: typer.Context, event: Annotated[str, typer.Argument(help="Event name.")]) -> None:
    """Remove an event's schema."""
    with opened(ctx) as rt:
        if not rt.ingestor.plan.remove(event):
            fail(f"no schema for {event}")
    out.print(f"removed {event}")


def main() -> None:
    """Entry point of the ``siyu`` command."""
    app()
