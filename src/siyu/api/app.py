"""The FastAPI application: ingestion, persons, tracking plan, stats."""

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from siyu import __version__
from siyu.api.keys import KeyKind, key_kind
from siyu.config import Settings
from siyu.ingest.tracking_plan import TrackingPlanError
from siyu.profiles.service import (
    PersonNotFound,
    erase_person,
    export_person,
    get_profile,
    resolve_person_id,
    stats,
    timeline,
)
from siyu.runtime import Runtime


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "errors"?}}``."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _error_response(exc: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.errors is not None:
        body["errors"] = exc.errors
    return JSONResponse({"error": body}, status_code=exc.status)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. With ``runtime`` given the caller owns the stores; otherwise the app opens them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime or Runtime.open(settings)
        try:
            yield
        finally:
            if owned:
                app.state.runtime.close()

    app = FastAPI(
        title="siyu API",
        version=__version__,
        description="私域 siyu — ingestion, identity and profiles. Auth: `Authorization: Bearer <key>` "
        "(or HTTP Basic with the key as user name, as Segment's libraries send it).",
        lifespan=lifespan,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    def rt(request: Request) -> Runtime:
        return request.app.state.runtime

    def auth(*kinds: KeyKind) -> Callable[[Request], Awaitable[str]]:
        async def check(request: Request) -> str:
            header = request.headers.get("authorization", "")
            scheme, _, value = header.partition(" ")
            key = ""
            if scheme.lower() == "bearer":
                key = value.strip()
            elif scheme.lower() == "basic":
                try:
                    key = base64.b64decode(value).decode().split(":", 1)[0]
                except (ValueError, UnicodeDecodeError):
                    key = ""
            if not key:
                raise ApiError(401, "unauthenticated", "missing API key: send `Authorization: Bearer <key>`")
            extra: dict[str, KeyKind] = {k: "write" for k in settings.write_keys}
            extra.update({k: "admin" for k in settings.admin_keys})
            kind = await run_in_threadpool(key_kind, rt(request).engine, key, extra)
            if kind is None:
                raise ApiError(401, "unauthenticated", "unknown or revoked API key")
            if kind not in kinds and kind != "admin":
                raise ApiError(403, "forbidden", f"this endpoint needs a {' or '.join(kinds)} key")
            return kind

        return check

    WriteKey = Annotated[str, Depends(auth("write"))]
    AdminKey = Annotated[str, Depends(auth("admin"))]

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise ApiError(
                413, "body_too_large", f"request body is {declared} bytes; the limit is {settings.max_body_bytes}"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ApiError(413, "body_too_large", f"request body exceeds {settings.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"body is not valid UTF-8 JSON: {exc}") from exc

    def items_of(body: Any, key: str) -> list[Any]:
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

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok", "version": __version__}

    @app.post("/v1/batch", tags=["ingest"])
    async def batch(request: Request, _key: WriteKey) -> dict[str, Any]:
        """Ingest `track` / `identify` / `alias` messages, all-or-nothing, idempotent on `messageId`."""
        items = items_of(await read_json(request), "batch")
        runtime = rt(request)

        def work() -> dict[str, Any]:
            runtime.ingestor.refresh_plan()
            checked = runtime.ingestor.validator.messages(items)
            if checked.errors:
                raise ApiError(
                    422,
                    "invalid_messages",
                    f"{len({e.index for e in checked.errors})} of {len(items)} messages are invalid; "
                    "nothing was stored",
                    [e.as_dict() for e in checked.errors],
                )
            return runtime.ingestor.ingest_messages(checked.messages, source="api").as_dict()

        return await run_in_threadpool(work)

    @app.post("/v1/orders", tags=["ingest"])
    async def orders(request: Request, _key: WriteKey) -> dict[str, Any]:
        """Ingest orders and their updates (refunds …), all-or-nothing, idempotent on content."""
        items = items_of(await read_json(request), "orders")
        runtime = rt(request)

        def work() -> dict[str, Any]:
            checked = runtime.ingestor.validator.orders(items)
            if checked.errors:
                raise ApiError(
                    422,
                    "invalid_orders",
                    f"{len({e.index for e in checked.errors})} of {len(items)} orders are invalid; nothing was stored",
                    [e.as_dict() for e in checked.errors],
                )
            return runtime.ingestor.ingest_orders(checked.orders, source="api").as_dict()

        return await run_in_threadpool(work)

    def person_id_of(runtime: Runtime, ref: str) -> str:
        if len(ref) > 300:
            raise ApiError(422, "invalid_id", "person reference too long")
        try:
            return resolve_person_id(runtime.engine, ref)
        except PersonNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc

    @app.get("/v1/persons/{ref}", tags=["persons"])
    def person(
        request: Request,
        ref: str,
        _key: AdminKey,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: datetime | None = None,
    ) -> dict[str, Any]:
        """A profile: identities, traits, activity and orders, with a page of its timeline.

        `ref` is a person id or `type:value` of an identity (e.g. `member_id:M001`).
        """
        runtime = rt(request)
        pid = person_id_of(runtime, ref)
        profile = get_profile(runtime.engine, runtime.events, pid)
        profile["timeline"] = timeline(runtime.events, [pid, *profile["merged_from"]], limit=limit, before=before)
        return profile

    @app.get("/v1/persons/{ref}/export", tags=["persons"])
    def person_export(request: Request, ref: str, _key: AdminKey) -> Response:
        """Everything held about a person (PIPL access request)."""
        runtime = rt(request)
        data = export_person(runtime.engine, runtime.events, person_id_of(runtime, ref))
        return Response(orjson.dumps(data), media_type="application/json")

    @app.delete("/v1/persons/{ref}", tags=["persons"])
    def person_delete(request: Request, ref: str, _key: AdminKey) -> dict[str, Any]:
        """Erase a person from both stores (PIPL deletion); an audit row without personal data remains."""
        runtime = rt(request)
        pid = person_id_of(runtime, ref)
        return {"erased": True, "counts": erase_person(runtime.engine, runtime.events, pid, requested_by="api")}

    @app.get("/v1/stats", tags=["meta"])
    def get_stats(request: Request, _key: AdminKey) -> dict[str, int]:
        """Counts of persons, identities, events and orders."""
        runtime = rt(request)
        return stats(runtime.engine, runtime.events)

    @app.get("/v1/tracking-plan", tags=["tracking plan"])
    def plan_list(request: Request, _key: AdminKey) -> dict[str, Any]:
        """All event schemas."""
        return {"mode": settings.tracking_plan_mode, "events": rt(request).ingestor.plan.list()}

    @app.put("/v1/tracking-plan/{event}", tags=["tracking plan"])
    async def plan_put(request: Request, event: str, _key: AdminKey) -> dict[str, Any]:
        """Set the JSON Schema of an event's properties."""
        schema = await read_json(request)
        try:
            await run_in_threadpool(rt(request).ingestor.plan.set, event, schema)
        except TrackingPlanError as exc:
            raise ApiError(422, "invalid_schema", str(exc)) from exc
        return {"event": event, "schema": schema}

    @app.delete("/v1/tracking-plan/{event}", tags=["tracking plan"])
    def plan_delete(request: Request, event: str, _key: AdminKey) -> dict[str, Any]:
        """Remove an event's schema."""
        if not rt(request).ingestor.plan.remove(event):
            raise ApiError(404, "not_found", f"no schema for {event!r}")
        return {"removed": event}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request) -> str:
        runtime = rt(request)
        s = stats(runtime.engine, runtime.events)
        cells = "".join(
            f"<div class=card><b>{v:,}</b><span>{k}</span></div>"
            for k, v in {
                "客户 persons": s["persons"],
                "身份 identities": s["identities"],
                "事件 events": s["events"],
                "订单 orders": s["orders"],
            }.items()
        )
        return (
            "<!doctype html><html lang=zh-CN><meta charset=utf-8><title>siyu 私域 · 概览</title>"
            "<style>body{font-family:sans-serif;margin:2rem}.card{display:inline-block;padding:1rem 2rem;"
            "margin:.5rem;border:1px solid #ddd;border-radius:8px}.card b{display:block;font-size:2rem}</style>"
            f"<h1>私域 siyu · 概览</h1>{cells}<p><a href=/docs>API 文档 (OpenAPI)</a></p></html>"
        )

    return app
