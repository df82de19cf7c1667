"""``POST /v1/batch`` and ``POST /v1/orders``."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from siyu.api.deps import ApiError, RuntimeDep, SettingsDep, WriteKey, read_json
from siyu.config import Settings
from siyu.ingest.schemas import Message, Order

router = APIRouter(tags=["ingest"])


class BatchBody(BaseModel):
    """Body of ``POST /v1/batch`` (documentation; the handler checks each message itself)."""

    batch: list[Message] = Field(min_length=1, description="At most SIYU_MAX_BATCH_MESSAGES messages.")


class OrdersBody(BaseModel):
    """Body of ``POST /v1/orders``."""

    orders: list[Order] = Field(min_length=1, description="At most SIYU_MAX_BATCH_MESSAGES orders.")


class IngestCounts(BaseModel):
    """What an ingest call did."""

    accepted: int
    duplicates: int
    stale: int = Field(description="Order updates older than the stored state, ignored.")
    new_persons: int
    merges: int
    refused_merges: int
    traits_changed: int


BODY_MODELS: dict[str, type[BaseModel]] = {"BatchBody": BatchBody, "OrdersBody": OrdersBody}


def _body(name: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


def _items(body: Any, key: str, settings: Settings) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise ApiError(422, "invalid_body", f"body must be an object with a `{key}` array")
    extra = set(body) - {key, "context", "sentAt", "writeKey", "metadata"}
    if extra:
        raise ApiError(422, "invalid_body", f"unknown top-level field(s): {sorted(extra)}")
    items = body[key]
    if not items:
        raise ApiError(422, "invalid_body", f"`{key}` is empty")
    if len(items) > settings.max_batch_messages:
        raise ApiError(
            413, "batch_too_large", f"{len(items)} items; a call may carry at most {settings.max_batch_messages}"
        )
    return items


def _invalid(code: str, what: str, errors: list[Any], total: int) -> ApiError:
    bad = len({e.index for e in errors})
    return ApiError(
        422, code, f"{bad} of {total} {what} are invalid; nothing was stored", [e.as_dict() for e in errors]
    )


@router.post("/v1/batch", openapi_extra=_body("BatchBody"), response_model=IngestCounts)
async def batch(request: Request, _key: WriteKey, runtime: RuntimeDep, settings: SettingsDep) -> dict[str, Any]:
    """Ingest `track` / `identify` / `alias` messages: all-or-nothing, idempotent on `messageId`."""
    items = _items(await read_json(request, settings.max_body_bytes), "batch", settings)

    def work() -> dict[str, Any]:
        runtime.ingestor.refresh_plan()
        checked = runtime.ingestor.validator.messages(items)
        if checked.errors:
            raise _invalid("invalid_messages", "messages", checked.errors, len(items))
        return runtime.ingestor.ingest_messages(checked.messages, source="api").as_dict()

    return await run_in_threadpool(work)


@router.post("/v1/orders", openapi_extra=_body("OrdersBody"), response_model=IngestCounts)
async def orders(request: Request, _key: WriteKey, runtime: RuntimeDep, settings: SettingsDep) -> dict[str, Any]:
    """Ingest orders and their updates (refunds …): all-or-nothing, idempotent on content."""
    items = _items(await read_json(request, settings.max_body_bytes), "orders", settings)

    def work() -> dict[str, Any]:
        checked = runtime.ingestor.validator.orders(items)
        if checked.errors:
            raise _invalid("invalid_orders", "orders", checked.errors, len(items))
        return runtime.ingestor.ingest_orders(checked.orders, source="api").as_dict()

    return await run_in_threadpool(work)
