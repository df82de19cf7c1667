"""Persons: profile with timeline, PIPL export and erasure; installation counts."""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from siyu.api.deps import AdminKey, ApiError, RuntimeDep
from siyu.profiles.service import (
    BadCursor,
    PersonNotFound,
    erase_person,
    export_person,
    get_profile,
    resolve_person_id,
    stats,
    timeline,
)
from siyu.runtime import Runtime

router = APIRouter()

PersonRef = Annotated[str, "a person id, or type:value of one of its identities"]


def person_id_of(runtime: Runtime, ref: str) -> str:
    """The surviving person id for ``ref`` (404 when unknown)."""
    if len(ref) > 300:
        raise ApiError(422, "invalid_id", "person reference longer than 300 characters")
    try:
        return resolve_person_id(runtime.engine, ref, screen=runtime.ingestor.validator.screen)
    except PersonNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


@router.get("/v1/persons/{ref}", tags=["persons"])
def person(
    ref: PersonRef,
    _key: AdminKey,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Timeline entries per page.")] = 50,
    cursor: Annotated[str | None, Query(max_length=300, description="`next_cursor` of the previous page.")] = None,
) -> dict[str, Any]:
    """A profile: identities, traits, activity and orders, with a page of its timeline.

    `ref` is a person id or `type:value` of an identity (e.g. `member_id:M001`, `phone:13800138000`).
    """
    pid = person_id_of(runtime, ref)
    profile = get_profile(runtime.engine, runtime.events, pid)
    try:
        profile["timeline"] = timeline(runtime.events, [pid, *profile["merged_from"]], limit=limit, cursor=cursor)
    except BadCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return profile


@router.get("/v1/persons/{ref}/export", tags=["persons"])
def person_export(ref: PersonRef, _key: AdminKey, runtime: RuntimeDep) -> Response:
    """Everything held about a person, as JSON (PIPL access request)."""
    data = export_person(runtime.engine, runtime.events, person_id_of(runtime, ref))
    return Response(orjson.dumps(data), media_type="application/json")


@router.delete("/v1/persons/{ref}", tags=["persons"])
async def person_delete(ref: PersonRef, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Erase a person from both stores (PIPL deletion); an audit row without personal data remains."""
    pid = person_id_of(runtime, ref)
    counts = await run_in_threadpool(erase_person, runtime.engine, runtime.events, pid, requested_by="api")
    return {"erased": True, "counts": counts}


@router.get("/v1/stats", tags=["meta"])
def get_stats(_key: AdminKey, runtime: RuntimeDep) -> dict[str, int]:
    """Counts of persons, identities, events and orders."""
    return stats(runtime.engine, runtime.events)
