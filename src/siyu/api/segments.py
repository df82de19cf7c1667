"""Segments: a live count preview of an expression (text or JSON form), its members, the JSON form of
an expression and back, and saved segments (docs/segments.md)."""

import io
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from siyu.api.deps import AdminKey, ApiError, RuntimeDep
from siyu.runtime import Runtime
from siyu.segments import to_json, to_text
from siyu.segments.compile import SegmentCompileError
from siyu.segments.errors import SegmentError, error_body, error_status
from siyu.segments.saved import DESCRIPTION_LIMIT, SavedSegmentError, with_tree
from siyu.segments.service import SegmentService
from siyu.segments.tagging import refresh_all, tag_segment

router = APIRouter(tags=["segments"])
SegmentName = Annotated[str, Path(min_length=1, max_length=64, description="A saved segment's name.")]

#: Longest expression accepted (the language's own limit is 10,000 characters; JSON is wordier).
MAX_EXPRESSION = 20_000


class SegmentQuery(BaseModel):
    """An expression: ``expression`` (text) or ``tree`` (the JSON form), exactly one."""

    model_config = ConfigDict(extra="forbid")
    expression: Annotated[str | None, Field(max_length=MAX_EXPRESSION)] = None
    tree: dict[str, Any] | None = None


def _service(runtime: Runtime) -> SegmentService:
    """The runtime's service, so the catalogue cache serves every preview."""
    svc: SegmentService = runtime.segments()
    return svc


def _expression(body: SegmentQuery) -> Any:
    if (body.expression is None) == (body.tree is None):
        raise ApiError(422, "invalid_segment", "give exactly one of expression (text) or tree (JSON form)")
    return body.expression if body.expression is not None else body.tree


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except (SavedSegmentError, SegmentError, SegmentCompileError) as exc:
        status, code = error_status(exc)
        body = error_body(exc)["error"]
        raise ApiError(status, code, body["message"], body.get("errors")) from exc


@router.post("/v1/segments/count")
async def segment_count(body: SegmentQuery, _key: AdminKey, runtime: RuntimeDep) -> dict[str, int]:
    """How many persons the expression selects (the console's live preview)."""
    n = await _call(_service(runtime).count, _expression(body))
    return {"count": n}


@router.post("/v1/segments/members")
async def segment_members(body: SegmentQuery, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """The persons the expression selects (ids, sorted)."""
    ids = await _call(_service(runtime).members, _expression(body))
    return {"count": len(ids), "person_ids": sorted(ids)}


class SegmentText(BaseModel):
    """An expression as text."""

    model_config = ConfigDict(extra="forbid")
    expression: Annotated[str, Field(max_length=MAX_EXPRESSION)]


class SegmentTree(BaseModel):
    """An expression as its JSON form (docs/segments.md, "JSON form")."""

    model_config = ConfigDict(extra="forbid")
    tree: dict[str, Any]


@router.post("/v1/segments/parse")
async def segment_parse(body: SegmentText, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """The JSON form of an expression (``tree``) and its canonical text, checked against the catalogue
    (422 with position and suggestions, as ``/v1/segments/count``)."""
    tree = await _call(_service(runtime).tree, body.expression)
    return {"tree": to_json(tree), "expression": to_text(tree)}


@router.post("/v1/segments/render")
async def segment_render(body: SegmentTree, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """The canonical text of a tree in the JSON form, checked against the catalogue (422 with the
    path of the problem and suggestions, as ``/v1/segments/count``)."""
    tree = await _call(_service(runtime).tree, body.tree)
    return {"expression": to_text(tree)}


# -- saved segments ---------------------------------------------------------------------------------


class SegmentCreate(SegmentQuery):
    """A segment to save: a name, the expression (text or JSON form), dynamic or static."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Annotated[str, Field(pattern="^(dynamic|static)$")] = "dynamic"
    description: Annotated[str | None, Field(max_length=DESCRIPTION_LIMIT)] = None


@router.get("/v1/segments")
async def segments_list(_key: AdminKey, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Saved segments with their member counts and definitions (text and ``tree``, the JSON form)."""
    rows: list[dict[str, Any]] = await _call(_service(runtime).saved.all)
    return [with_tree(r) for r in rows]


@router.post("/v1/segments", status_code=201)
async def segment_create(body: SegmentCreate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Save a segment and compute its members (409 if the name is taken)."""
    saved = _service(runtime).saved
    seg, result = await _call(
        saved.create, body.name, _expression(body), kind=body.kind, description=body.description, by="api"
    )
    return {**with_tree(seg), "refresh": result.as_dict()}


@router.post("/v1/segments/refresh")
async def segments_refresh(
    _key: AdminKey, runtime: RuntimeDep, full: Annotated[bool, Query(description="Re-evaluate everyone.")] = False
) -> dict[str, Any]:
    """Refresh every dynamic segment (incremental where the definitions allow it) and every rule tag,
    in dependency order: a segment after the rule tags it reads, so one refresh brings all current."""
    results, rules = await _call(refresh_all, _service(runtime), full=full)
    return {
        "segments": [r.as_dict() for r in results],
        "rule_tags": [t.as_dict() for t in rules],
    }


class SegmentTagging(BaseModel):
    """Tag every current member of a saved segment (person-level), or untag with ``remove``."""

    model_config = ConfigDict(extra="forbid")
    tag: Annotated[str, Field(min_length=1, max_length=64)]
    remove: bool = False
    reason: Annotated[str | None, Field(max_length=256)] = None


@router.post("/v1/segments/{name}/tag")
async def segment_tag(name: SegmentName, body: SegmentTagging, _key: AdminKey, runtime: RuntimeDep) -> dict[str, int]:
    """Bulk tagging from a segment; answers how many persons changed (0 when all already held it)."""
    from siyu.tags.errors import TagError

    try:
        changed = await _call(
            tag_segment, _service(runtime), name, body.tag, remove=body.remove, by="api", reason=body.reason
        )
    except TagError as exc:
        raise ApiError(exc.status, "invalid_tag_request", str(exc)) from exc
    return {"changed": changed}


@router.get("/v1/segments/{name}")
async def segment_get(name: SegmentName, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """One saved segment, its definition as text (``expression``) and as the JSON form (``tree``)."""
    seg: dict[str, Any] = await _call(_service(runtime).saved.get, name)
    return with_tree(seg)


@router.delete("/v1/segments/{name}")
async def segment_delete(name: SegmentName, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Delete a saved segment (409 while another segment or a rule tag uses it)."""
    await _call(_service(runtime).saved.delete, name)
    return {"deleted": name}


@router.post("/v1/segments/{name}/refresh")
async def segment_refresh(
    name: SegmentName,
    _key: AdminKey,
    runtime: RuntimeDep,
    full: Annotated[bool, Query(description="Re-evaluate everyone.")] = False,
) -> dict[str, Any]:
    """Recompute one segment; answers who entered and exited."""
    results = await _call(_service(runtime).saved.refresh, name, full=full)
    return results[0].as_dict()


@router.get("/v1/segments/{name}/members", response_model=None)
async def segment_members_saved(
    name: SegmentName,
    _key: AdminKey,
    runtime: RuntimeDep,
    format: Annotated[str, Query(pattern="^(json|csv|parquet)$")] = "json",
) -> Any:
    """The current members: JSON, or a CSV / Parquet download (column ``person_id``)."""
    ids: list[str] = await _call(_service(runtime).saved.members, name)
    if format == "json":
        return {"count": len(ids), "person_ids": ids}
    if format == "csv":
        return Response("person_id\n" + "".join(f"{i}\n" for i in ids), media_type="text/csv")
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"person_id": pa.array(ids, pa.string())}), buffer)
    return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet")


@router.get("/v1/segments/{name}/history")
async def segment_history(
    name: SegmentName,
    _key: AdminKey,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Who entered and exited the segment, newest first."""
    rows: list[dict[str, Any]] = await _call(_service(runtime).saved.history, name, limit)
    return rows
