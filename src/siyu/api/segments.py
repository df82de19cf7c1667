"""Segments: a live count preview of an expression (text or JSON form), and its members."""

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from siyu.api.deps import AdminKey, ApiError, RuntimeDep
from siyu.runtime import Runtime
from siyu.segments.compile import SegmentCompileError
from siyu.segments.errors import SegmentError
from siyu.segments.service import SegmentService

router = APIRouter(tags=["segments"])

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


async def _call(fn: Any, expression: Any) -> Any:
    try:
        return await run_in_threadpool(fn, expression)
    except SegmentError as exc:
        detail = exc.to_dict()
        raise ApiError(422, "invalid_segment", str(exc), [detail]) from exc
    except SegmentCompileError as exc:
        raise ApiError(422, "invalid_segment", str(exc)) from exc


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
