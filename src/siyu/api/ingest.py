"""``POST /v1/batch`` and ``POST /v1/orders``."""

import asyncio
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from siyu.api.checkpool import CheckPool, check_body, from_outcome
from siyu.api.deps import ApiError, RuntimeDep, SettingsDep, WriteKey, body_items, read_body, read_json
from siyu.ingest.schemas import Message, Order
from siyu.ingest.validate import Checked

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


def _invalid(code: str, what: str, errors: Sequence[Any], total: int) -> ApiError:
    bad = len({e.index for e in errors})
    return ApiError(
        422, code, f"{bad} of {total} {what} are invalid; nothing was stored", [e.as_dict() for e in errors]
    )


@router.post("/v1/batch", openapi_extra=_body("BatchBody"), response_model=IngestCounts)
async def batch(request: Request, _key: WriteKey, runtime: RuntimeDep, settings: SettingsDep) -> dict[str, Any]:
    """Ingest `track` / `identify` / `alias` messages: all-or-nothing, idempotent on `messageId`."""
    body = await read_body(request, settings.max_body_bytes)
    ingestor = runtime.ingestor
    pool: CheckPool | None = getattr(request.app.state, "check_pool", None)

    def check_here() -> tuple[Checked, int]:
        ingestor.refresh_plan()
        return check_body(ingestor.validator, body, ingestor.validator.now())

    hashes = None
    if pool is None:
        checked, total = await run_in_threadpool(check_here)
    else:
        # Parsed and checked in a worker process while this process writes other batches.
        await run_in_threadpool(ingestor.refresh_plan)
        try:
            future = pool.submit(body, ingestor.validator.now(), ingestor.plan.snapshot())
            checked, total, hashes = from_outcome(await asyncio.wrap_future(future))
        except BrokenProcessPool:
            checked, total = await run_in_threadpool(check_here)
    if checked.errors:
        raise _invalid("invalid_messages", "messages", checked.errors, total)
    result = await run_in_threadpool(ingestor.ingest_messages, checked.messages, source="api", hashes=hashes)
    return result.as_dict()


@router.post("/v1/orders", openapi_extra=_body("OrdersBody"), response_model=IngestCounts)
async def orders(request: Request, _key: WriteKey, runtime: RuntimeDep, settings: SettingsDep) -> dict[str, Any]:
    """Ingest orders and their updates (refunds …): all-or-nothing, idempotent on content."""
    items = body_items(await read_json(request, settings.max_body_bytes), "orders", settings)

    def work() -> dict[str, Any]:
        checked = runtime.ingestor.validator.orders(items)
        if checked.errors:
            raise _invalid("invalid_orders", "orders", checked.errors, len(items))
        return runtime.ingestor.ingest_orders(checked.orders, source="api").as_dict()

    return await run_in_threadpool(work)
