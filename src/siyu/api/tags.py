"""Tags: groups, tags, tagging persons and relations (one or in bulk), event-tag rules.

Adding a tag already held, or removing one not held, changes nothing: every call can be retried.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from siyu.api.deps import AdminKey, ApiError, RuntimeDep
from siyu.api.persons import PersonRef, person_id_of
from siyu.runtime import Runtime
from siyu.segments.compile import SegmentCompileError
from siyu.segments.errors import SegmentError
from siyu.tags.errors import TagError
from siyu.tags.service import MAX_BULK, TagResult, TagService
from siyu.tags.targets import Target

router = APIRouter(tags=["tags"])
Name = Annotated[str, Path(min_length=1, max_length=64, description="A tag or group name.")]
Id64 = Annotated[str, Path(min_length=1, max_length=64)]
Text30 = Annotated[str, Field(min_length=1, max_length=30)]
Reason = Annotated[str | None, Field(max_length=256, description="Why; kept with the tag.")]
By = Annotated[str, Field(min_length=1, max_length=128, description="Who is tagging.")]


def _svc(runtime: Runtime) -> TagService:
    # With the runtime's segment service: a tag renamed or deleted here is unknown to the next
    # segment validation at once (its catalogue cache is dropped), and rules are checked against it.
    return TagService(runtime.ingestor, segments=runtime.segments())


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a service call in the thread pool; tag errors become 4xx answers saying what and where."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except TagError as exc:
        code = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid_tag_request")
        raise ApiError(exc.status, code, str(exc), exc.errors) from exc


# -- groups and tags ----------------------------------------------------------------------------
class GroupCreate(BaseModel):
    """A tag group to create."""

    model_config = ConfigDict(extra="forbid")
    name: Text30


class GroupUpdate(BaseModel):
    """A tag group's new name."""

    model_config = ConfigDict(extra="forbid")
    name: Text30


class TagCreate(BaseModel):
    """A tag to create; its name must be unused in every group."""

    model_config = ConfigDict(extra="forbid")
    name: Text30
    group: Text30
    kind: str = Field(default="manual", pattern="^(manual|event|rule)$", description="manual | event | rule")
    rule: str | None = Field(default=None, max_length=4000, description="A rule tag's segment expression.")


class TagUpdate(BaseModel):
    """A new name and / or group for a tag."""

    model_config = ConfigDict(extra="forbid")
    name: Text30 | None = None
    group: Text30 | None = None
    by: By = "api"


@router.get("/v1/tag-groups")
async def groups_list(_key: AdminKey, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Tag groups in display order, with their tag counts."""
    result: list[dict[str, Any]] = await _call(_svc(runtime).groups)
    return result


@router.post("/v1/tag-groups", status_code=201)
async def groups_create(body: GroupCreate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Create a tag group."""
    result: dict[str, Any] = await _call(_svc(runtime).create_group, body.name)
    return result


@router.patch("/v1/tag-groups/{name}")
async def groups_update(name: Name, body: GroupUpdate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Rename a tag group; its tags move with it (404 for an unknown group, 409 for a name in use)."""
    result: dict[str, Any] = await _call(_svc(runtime).rename_group, name, body.name)
    return result


@router.delete("/v1/tag-groups/{name}")
async def groups_delete(name: Name, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Delete an empty tag group (409, naming its tags, while it holds any: delete or move them first)."""
    await _call(_svc(runtime).delete_group, name)
    return {"deleted": name}


@router.get("/v1/tags")
async def tags_list(
    _key: AdminKey,
    runtime: RuntimeDep,
    group: Annotated[str | None, Query(max_length=64, description="Only this group.")] = None,
) -> list[dict[str, Any]]:
    """Tags with group, kind and how many persons / relations hold each."""
    result: list[dict[str, Any]] = await _call(_svc(runtime).list_tags, group)
    return result


@router.post("/v1/tags", status_code=201)
async def tags_create(body: TagCreate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Create a tag. A rule tag (`kind: rule`) needs `rule`, a segment expression: it is validated
    like any segment, and the tag is filled at once and kept current by `POST /v1/segments/refresh`."""
    if body.kind == "rule" or body.rule is not None:
        if not body.rule:
            raise ApiError(
                422, "invalid_tag_request", "rule: a rule tag needs a segment expression 规则标签需要人群表达式"
            )
        from siyu.segments.tagging import create_rule_tag

        try:
            filled = await _call(create_rule_tag, runtime.segments(), body.name, body.group, body.rule)
        except (SegmentError, SegmentCompileError) as exc:
            detail = exc.to_dict() if isinstance(exc, SegmentError) else {"message": str(exc)}
            raise ApiError(422, "invalid_segment", str(exc), [detail]) from exc
        tag = next(t for t in await _call(_svc(runtime).list_tags, body.group) if t["name"] == body.name)
        return {**tag, "holders_added": filled.added}
    result: dict[str, Any] = await _call(_svc(runtime).create_tag, body.name, body.group, kind=body.kind)
    return result


@router.patch("/v1/tags/{name}")
async def tags_update(name: Name, body: TagUpdate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Rename a tag or move it to another group; holders get `tag_removed` + `tag_added` events.
    Saved segments and rule tags that test it are rewritten to the new name (listed in `rewritten`)."""
    result: dict[str, Any] = await _call(
        _svc(runtime).rename_tag, name, body.name or name, by=body.by, group=body.group
    )
    return result


@router.delete("/v1/tags/{name}")
async def tags_delete(name: Name, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Delete a tag: `tag_removed` for every holder, then the tag and its event rules. Refused (409,
    naming them) while a saved segment or a rule tag tests it."""
    result: dict[str, Any] = await _call(_svc(runtime).delete_tag, name, by="api")
    return result


# -- tagging ------------------------------------------------------------------------------------
class Tagging(BaseModel):
    """Who is tagging and why."""

    model_config = ConfigDict(extra="forbid")
    by: By = "api"
    reason: Reason = None


class BulkItem(BaseModel):
    """One item: a person (id or `type:value`) or an `external_userid`; with `staff_userid`, the relation."""

    model_config = ConfigDict(extra="forbid")
    person: str | None = Field(default=None, min_length=1, max_length=300)
    external_userid: str | None = Field(default=None, min_length=1, max_length=64)
    staff_userid: str | None = Field(default=None, min_length=1, max_length=64)


class BulkTagging(BaseModel):
    """Tag (or untag) many at once, all or nothing."""

    model_config = ConfigDict(extra="forbid")
    action: str = Field(default="add", pattern="^(add|remove)$", description="add | remove")
    items: list[BulkItem] = Field(min_length=1, max_length=MAX_BULK)
    by: By = "api"
    reason: Reason = None


def _answer(result: TagResult) -> dict[str, Any]:
    return result.as_dict()


@router.put("/v1/persons/{ref}/tags/{tag}")
async def person_tag_add(
    ref: PersonRef, tag: Name, _key: AdminKey, runtime: RuntimeDep, body: Tagging | None = None
) -> dict[str, Any]:
    """Give a person a person-level tag (no-op when held)."""
    body = body or Tagging()
    pid = person_id_of(runtime, ref)
    return _answer(await _call(_svc(runtime).add, tag, pid, by=body.by, reason=body.reason))


@router.delete("/v1/persons/{ref}/tags/{tag}")
async def person_tag_remove(ref: PersonRef, tag: Name, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Remove a person-level tag (no-op when not held)."""
    pid = person_id_of(runtime, ref)
    return _answer(await _call(_svc(runtime).remove, tag, pid, by="api"))


@router.get("/v1/persons/{ref}/tags")
async def person_tags(ref: PersonRef, _key: AdminKey, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """A person's tags: person-level and from every relation, each with who holds it."""
    result: list[dict[str, Any]] = await _call(_svc(runtime).person_tags, person_id_of(runtime, ref))
    return result


@router.put("/v1/relations/{external_userid}/{staff_userid}/tags/{tag}")
async def relation_tag_add(
    external_userid: Id64,
    staff_userid: Id64,
    tag: Name,
    _key: AdminKey,
    runtime: RuntimeDep,
    body: Tagging | None = None,
) -> dict[str, Any]:
    """Tag a WeCom relation (a staff member's contact), as WeCom's `mark_tag` does."""
    body = body or Tagging()
    target = Target(external_userid=external_userid, staff_userid=staff_userid)
    return _answer(await _call(_svc(runtime).tag, tag, [target], by=body.by, reason=body.reason))


@router.delete("/v1/relations/{external_userid}/{staff_userid}/tags/{tag}")
async def relation_tag_remove(
    external_userid: Id64, staff_userid: Id64, tag: Name, _key: AdminKey, runtime: RuntimeDep
) -> dict[str, Any]:
    """Remove a tag from a WeCom relation."""
    target = Target(external_userid=external_userid, staff_userid=staff_userid)
    return _answer(await _call(_svc(runtime).tag, tag, [target], add=False, by="api"))


@router.post("/v1/tags/{tag}/bulk")
async def tag_bulk(tag: Name, body: BulkTagging, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Add or remove a tag for many persons / relations; any bad item (by index) writes nothing."""
    targets = [Target(i.person, i.external_userid, i.staff_userid) for i in body.items]
    result: TagResult = await _call(
        _svc(runtime).tag, tag, targets, add=body.action == "add", by=body.by, reason=body.reason, source="import"
    )
    return {"items": len(targets), "changed": result.changed, "persons": len(result.persons)}


# -- event-tag rules ----------------------------------------------------------------------------
class RuleCreate(BaseModel):
    """When an event `event` arrives whose top-level `property` `op` `value`, add `tag`."""

    model_config = ConfigDict(extra="forbid")
    event: str = Field(min_length=1, max_length=128, examples=["order_paid"])
    property: str = Field(min_length=1, max_length=128, examples=["categories"])
    op: str = Field(description="= != > >= < <= contains, not contains, in, is set", examples=["contains"])
    value: str | int | float | bool | list[str | int | float] | None = Field(default=None, examples=["奶粉"])
    tag: Text30


@router.get("/v1/tag-rules")
async def rules_list(_key: AdminKey, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Event-tag rules."""
    result: list[dict[str, Any]] = await _call(_svc(runtime).list_rules)
    return result


@router.post("/v1/tag-rules", status_code=201)
async def rules_create(body: RuleCreate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Add an event-tag rule (the same rule again returns the existing one). The event and property
    must be known to the stores and the value fit the property's type (else 422, with suggestions)."""
    result: dict[str, Any] = await _call(
        _svc(runtime).add_rule, body.event, body.property, body.op, body.value, body.tag, by="api"
    )
    return result


@router.delete("/v1/tag-rules/{rule_id}")
async def rules_delete(rule_id: Id64, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Remove an event-tag rule (tags it added stay)."""
    await _call(_svc(runtime).remove_rule, rule_id)
    return {"removed": rule_id}
