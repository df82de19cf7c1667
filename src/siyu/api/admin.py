"""Administration: API keys, the tracking plan, staff, relations and group memberships."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from siyu.api.deps import AdminKey, ApiError, RuntimeDep, SettingsDep, read_json
from siyu.api.keys import create_key, list_keys, revoke_key
from siyu.ingest.tracking_plan import TrackingPlanError
from siyu.relations.service import RelationError, RelationService

router = APIRouter()
Id64 = Annotated[str, Path(min_length=1, max_length=64)]


# -- keys -------------------------------------------------------------------------------------
class KeyCreate(BaseModel):
    """A key to create."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["write", "admin"] = Field(description="write: ingestion only; admin: everything.")
    name: str = Field(min_length=1, max_length=128, description="What the key is for.")


@router.post("/v1/keys", tags=["keys"], status_code=201)
def keys_create(body: KeyCreate, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Create an API key; its secret is in this response only."""
    created = create_key(runtime.engine, kind=body.kind, name=body.name)
    return {"id": created.id, "key": created.key, "kind": body.kind, "name": body.name}


@router.get("/v1/keys", tags=["keys"])
def keys_list(_key: AdminKey, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """API keys, without their secrets."""
    return list_keys(runtime.engine)


@router.delete("/v1/keys/{key_id}", tags=["keys"])
def keys_revoke(key_id: Id64, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Revoke an API key."""
    if not revoke_key(runtime.engine, key_id):
        raise ApiError(404, "not_found", f"no active key {key_id}")
    return {"revoked": key_id}


# -- tracking plan ----------------------------------------------------------------------------
EventName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^$\x00-\x1f][^\x00-\x1f]*$")]


@router.get("/v1/tracking-plan", tags=["tracking plan"])
def plan_list(_key: AdminKey, runtime: RuntimeDep, settings: SettingsDep) -> dict[str, Any]:
    """All event schemas, and whether events without one are accepted."""
    return {"mode": settings.tracking_plan_mode, "events": runtime.ingestor.plan.list()}


@router.put(
    "/v1/tracking-plan/{event}",
    tags=["tracking plan"],
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def plan_put(
    request: Request, event: EventName, _key: AdminKey, runtime: RuntimeDep, settings: SettingsDep
) -> dict[str, Any]:
    """Set the JSON Schema (draft 7; local `$ref`s only) that an event's properties must satisfy."""
    schema = await read_json(request, settings.max_message_bytes * 2)
    try:
        await run_in_threadpool(runtime.ingestor.plan.set, event, schema)
    except TrackingPlanError as exc:
        raise ApiError(422, "invalid_schema", str(exc)) from exc
    return {"event": event, "schema": schema}


@router.delete("/v1/tracking-plan/{event}", tags=["tracking plan"])
def plan_delete(event: EventName, _key: AdminKey, runtime: RuntimeDep) -> dict[str, Any]:
    """Remove an event's schema."""
    if not runtime.ingestor.plan.remove(event):
        raise ApiError(404, "not_found", f"no schema for {event!r}")
    return {"removed": event}


# -- staff, relations, groups -----------------------------------------------------------------
class StaffPut(BaseModel):
    """A staff member (WeCom userid)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    department: str | None = Field(default=None, max_length=128)


class RelationAdd(BaseModel):
    """A staff member added a customer (WeCom ``add_external_contact``)."""

    model_config = ConfigDict(extra="forbid")
    external_userid: str = Field(min_length=1, max_length=64)
    staff_userid: str = Field(min_length=1, max_length=64)
    add_time: datetime | None = None
    state: str | None = Field(default=None, max_length=30, description="The channel code's state.")
    remark: str | None = Field(default=None, max_length=128)
    add_way: int | None = Field(default=None, ge=0, le=1000)


class MemberAdd(BaseModel):
    """A customer joined a group."""

    model_config = ConfigDict(extra="forbid")
    external_userid: str = Field(min_length=1, max_length=64)
    join_time: datetime | None = None
    join_scene: int | None = Field(default=None, ge=0, le=100)


def _service(runtime: RuntimeDep) -> RelationService:
    return RelationService(runtime.ingestor)


async def _apply(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except RelationError as exc:
        raise ApiError(422, "invalid_relation", str(exc)) from exc


@router.put("/v1/staff/{userid}", tags=["relations"])
async def staff_put(userid: Id64, body: StaffPut, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Add or rename a staff member."""
    await _apply(_service(runtime).upsert_staff, userid, body.name, department=body.department)
    return {"userid": userid}


@router.post("/v1/relations", tags=["relations"])
async def relation_add(body: RelationAdd, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Record that a staff member added a customer; the customer's person id is returned."""
    person = await _apply(
        _service(runtime).add_relation,
        body.external_userid,
        body.staff_userid,
        add_time=body.add_time,
        state=body.state,
        remark=body.remark,
        add_way=body.add_way,
    )
    return {"person_id": person}


@router.delete("/v1/relations/{external_userid}/{staff_userid}", tags=["relations"])
async def relation_remove(
    external_userid: Id64,
    staff_userid: Id64,
    _key: AdminKey,
    runtime: RuntimeDep,
    by: Annotated[Literal["customer", "staff"], Query(description="Who ended it.")] = "customer",
) -> dict[str, bool]:
    """Record that a relation ended (the customer deleted the staff member, or the reverse)."""
    await _apply(_service(runtime).remove_relation, external_userid, staff_userid, by=by)
    return {"removed": True}


@router.post("/v1/groups/{chat_id}/members", tags=["relations"])
async def member_add(chat_id: Id64, body: MemberAdd, _key: AdminKey, runtime: RuntimeDep) -> dict[str, str]:
    """Record that a customer joined a group."""
    person = await _apply(
        _service(runtime).join_group, chat_id, body.external_userid, at=body.join_time, join_scene=body.join_scene
    )
    return {"person_id": person}


@router.delete("/v1/groups/{chat_id}/members/{external_userid}", tags=["relations"])
async def member_remove(chat_id: Id64, external_userid: Id64, _key: AdminKey, runtime: RuntimeDep) -> dict[str, bool]:
    """Record that a customer left a group."""
    await _apply(_service(runtime).leave_group, chat_id, external_userid)
    return {"removed": True}
