"""``siyu tag …``: tag groups, tags, tagging persons and relations, CSV bulk, event-tag rules."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from siyu.runtime import Runtime
from siyu.store.events import EventStoreLocked

tag_app = typer.Typer(help="Tags 标签: groups, tags, tagging (per person or per WeCom relation), rules.")
rule_app = typer.Typer(help="Event-tag rules: when an event arrives whose property matches, add a tag.")
tag_app.add_typer(rule_app, name="rule")

out = Console()
err = Console(stderr=True, soft_wrap=True)
ACTOR = "cli"


def _fail(message: str, errors: list[dict[str, Any]] | None = None) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    for e in errors or []:
        where = f"line {e['line']}" if "line" in e else f"item {e.get('index')}"
        err.print(f"  {where}, {e['column']}: {e['reason']}", markup=False, highlight=False)
    raise typer.Exit(1)


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


@contextmanager
def _service(ctx: typer.Context) -> Iterator[Any]:
    """A TagService over freshly opened stores; tag errors become a clear message and exit 1."""
    from siyu.tags.errors import TagError
    from siyu.tags.service import TagService

    try:
        rt = Runtime.open(ctx.obj)
    except EventStoreLocked as exc:
        _fail(str(exc))
    try:
        yield TagService(rt.ingestor, segments=rt.segments())
    except TagError as exc:
        _fail(str(exc), exc.errors)
    finally:
        rt.close()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@tag_app.command("groups")
def groups(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Tag groups 标签组, in display order."""
    with _service(ctx) as svc:
        rows = svc.groups()
    if as_json:
        _emit(rows)
        return
    table = Table("group 标签组", "tags")
    for r in rows:
        table.add_row(r["name"], str(r["tags"]))
    out.print(table)


@tag_app.command("group-create")
def group_create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Group name.")]) -> None:
    """Create a tag group."""
    with _service(ctx) as svc:
        svc.create_group(name)
    out.print(f"created group {name}")


@tag_app.command("group-rename")
def group_rename(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group.")],
    new_name: Annotated[str, typer.Argument(help="Its new name.")],
) -> None:
    """Rename a tag group; its tags move with it."""
    with _service(ctx) as svc:
        group = svc.rename_group(name, new_name)
    out.print(f"renamed group {name} → {group['name']} ({group['tags']} tags)", markup=False, highlight=False)


@tag_app.command("group-delete")
def group_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The group.")]) -> None:
    """Delete an empty tag group (refused while it holds tags: delete them or move them first)."""
    with _service(ctx) as svc:
        svc.delete_group(name)
    out.print(f"deleted group {name}", markup=False, highlight=False)


@tag_app.command("list")
def list_(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option(help="Only this group.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Tags with their group, kind and how many persons / relations hold them."""
    with _service(ctx) as svc:
        rows = svc.list_tags(group)
    if as_json:
        _emit(rows)
        return
    table = Table("tag 标签", "group 标签组", "kind", "persons", "relations")
    for r in rows:
        table.add_row(r["name"], r["group"], r["kind"], str(r["persons"]), str(r["relations"]))
    out.print(table)


@tag_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Tag name (unique across all groups).")],
    group: Annotated[str, typer.Option(help="The tag group.")],
    kind: Annotated[str, typer.Option(help="manual | event | rule.")] = "manual",
    rule: Annotated[
        str | None, typer.Option(help="A rule tag's segment expression: the tag follows it (implies --kind rule).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tag in a group; with --rule, a rule tag filled now and kept current by `siyu segment refresh`."""
    if rule is not None or kind == "rule":
        from siyu.segments.compile import SegmentCompileError
        from siyu.segments.errors import SegmentError
        from siyu.segments.tagging import create_rule_tag

        if not rule:
            _fail("--rule: a rule tag needs a segment expression 规则标签需要人群表达式")
        from siyu.tags.errors import TagError

        try:
            rt = Runtime.open(ctx.obj)
        except EventStoreLocked as exc:
            _fail(str(exc))
        try:
            result = create_rule_tag(rt.segments(), name, group, rule)
        except TagError as exc:
            _fail(str(exc), exc.errors)
        except (SegmentError, SegmentCompileError) as exc:
            _fail(str(exc))
        finally:
            rt.close()
        _emit({"name": name, "group": group, "kind": "rule", "holders": result.holders}) if as_json else out.print(
            f"created rule tag {name} in {group}: {result.holders} holders"
        )
        return
    with _service(ctx) as svc:
        tag = svc.create_tag(name, group, kind=kind)
    _emit(tag) if as_json else out.print(f"created tag {tag['name']} in {tag['group']}")


@tag_app.command("rename")
def rename(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The tag.")],
    new_name: Annotated[str | None, typer.Argument(help="Its new name (default: unchanged).")] = None,
    group: Annotated[str | None, typer.Option(help="Move it to this group.")] = None,
) -> None:
    """Rename a tag and / or move it to another group (holders get tag_removed + tag_added events).

    Saved segments and rule tags that test the tag are rewritten to the new name.
    """
    with _service(ctx) as svc:
        result = svc.rename_tag(name, new_name, by=ACTOR, group=group)
    moved = f" (group {group})" if group else ""
    out.print(f"renamed {name} → {new_name or name}{moved}", markup=False, highlight=False)
    for user in result["rewritten"]:
        out.print(f"  rewritten: {user}", markup=False, highlight=False)


@tag_app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The tag.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a tag: removed from every holder (with tag_removed events), rules dropped.

    Refused while a saved segment or a rule tag tests it (has tag).
    """
    if not yes and not typer.confirm(f"delete tag {name} from everyone who holds it?"):
        raise typer.Exit(1)
    with _service(ctx) as svc:
        result = svc.delete_tag(name, by=ACTOR)
    _emit(result)


def _tag(ctx: typer.Context, tag: str, person: str, staff: str | None, reason: str | None, add: bool) -> None:
    with _service(ctx) as svc:
        if add:
            result = svc.add(tag, person, staff=staff, by=ACTOR, reason=reason)
        else:
            result = svc.remove(tag, person, staff=staff, by=ACTOR, reason=reason)
    _emit(result.as_dict())


PersonArg = Annotated[str, typer.Argument(help="Person id or type:value (e.g. member_id:M001).")]
StaffOpt = Annotated[str | None, typer.Option("--staff", help="On the relation with this staff userid.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why (kept with the tag and in its event).")]


@tag_app.command("add")
def add(
    ctx: typer.Context,
    tag: Annotated[str, typer.Argument(help="Tag name.")],
    person: PersonArg,
    staff: StaffOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Tag a person (person-level), or their WeCom relation with --staff."""
    _tag(ctx, tag, person, staff, reason, True)


@tag_app.command("remove")
def remove(
    ctx: typer.Context,
    tag: Annotated[str, typer.Argument(help="Tag name.")],
    person: PersonArg,
    staff: StaffOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Remove a tag from a person (person-level), or from their relation with --staff."""
    _tag(ctx, tag, person, staff, reason, False)


@tag_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with a person_id column, or external_userid[,staff_userid].")],
    tag: Annotated[str, typer.Option("--tag", help="Tag name.")],
    remove_: Annotated[bool, typer.Option("--remove", help="Remove the tag instead of adding it.")] = False,
    reason: ReasonOpt = None,
) -> None:
    """Tag (or untag) everyone in a CSV file, all or nothing: any bad line writes nothing."""
    from siyu.tags.csvfile import read_targets
    from siyu.tags.errors import TagError

    try:
        targets, lines = read_targets(file)
    except TagError as exc:
        _fail(str(exc), exc.errors)
    with _service(ctx) as svc:
        result = svc.tag(tag, targets, add=not remove_, by=ACTOR, reason=reason, source="import", positions=lines)
    _emit({"rows": len(targets), **result.as_dict(), "persons": len(result.persons)})


@rule_app.command("add")
def rule_add(
    ctx: typer.Context,
    event: Annotated[str, typer.Argument(help="Event name, e.g. order_paid.")],
    prop: Annotated[str, typer.Argument(help="A top-level property, e.g. categories.")],
    op: Annotated[str, typer.Argument(help="= != > >= < <= contains 'not contains' in 'is set'.")],
    value: Annotated[str, typer.Argument(help='The value, as JSON ("奶粉", 10000, ["a","b"]) or plain text.')],
    tag: Annotated[str, typer.Option("--tag", help="Tag to add.")],
) -> None:
    """Add an event-tag rule: when EVENT arrives with PROP OP VALUE, add --tag.

    EVENT and PROP must be known to the stores (suggestions otherwise), and VALUE fit PROP's type.
    """
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value  # plain text
    with _service(ctx) as svc:
        _emit(svc.add_rule(event, prop, op, parsed, tag, by=ACTOR))


@rule_app.command("list")
def rule_list(ctx: typer.Context) -> None:
    """Event-tag rules, as JSON."""
    with _service(ctx) as svc:
        _emit(svc.list_rules())


@rule_app.command("remove")
def rule_remove(ctx: typer.Context, rule_id: Annotated[str, typer.Argument(help="Rule id from `rule list`.")]) -> None:
    """Remove an event-tag rule (tags it added stay)."""
    with _service(ctx) as svc:
        svc.remove_rule(rule_id)
    out.print(f"removed rule {rule_id}")
