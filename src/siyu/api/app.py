"""The FastAPI application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from siyu import __version__
from siyu.api import admin, ingest, persons
from siyu.api.checkpool import CheckPool
from siyu.api.deps import ApiError, RuntimeDep, api_error_handler, validation_error_handler
from siyu.config import Settings
from siyu.profiles.service import stats
from siyu.runtime import Runtime

DESCRIPTION = (
    "私域 siyu — ingestion, identity and profiles. Authenticate with `Authorization: Bearer <key>` "
    "(or HTTP Basic with the key as user name, as Segment's libraries send it). Write keys may only "
    'ingest; admin keys may do everything. Errors are `{"error": {"code", "message", "errors"?}}`.'
)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. With ``runtime`` given the caller owns the stores; otherwise the app opens them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime or Runtime.open(settings)
        pool = await run_in_threadpool(CheckPool.start, settings)
        app.state.check_pool = pool
        try:
            yield
        finally:
            if pool is not None:
                pool.close()
            if owned:
                app.state.runtime.close()

    app = FastAPI(title="siyu API", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(ingest.router)
    app.include_router(persons.router)
    app.include_router(admin.router)

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok", "version": __version__}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(runtime: RuntimeDep) -> str:
        s = stats(runtime.engine, runtime.events)
        labels = {
            "persons": "客户 persons",
            "identities": "身份 identities",
            "events": "事件 events",
            "orders": "订单 orders",
        }
        cells = "".join(f"<div class=card><b>{s[k]:,}</b><span>{label}</span></div>" for k, label in labels.items())
        return (
            "<!doctype html><html lang=zh-CN><meta charset=utf-8><title>siyu 私域 · 概览</title>"
            "<style>body{font-family:sans-serif;margin:2rem}.card{display:inline-block;padding:1rem 2rem;"
            "margin:.5rem;border:1px solid #ddd;border-radius:8px}.card b{display:block;font-size:2rem}</style>"
            f"<h1>私域 siyu · 概览</h1>{cells}<p><a href=/docs>API 文档 (OpenAPI)</a></p></html>"
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["HTTPBasic"] = {
                "type": "http",
                "scheme": "basic",
                "description": "The key as user name, empty password (as Segment's libraries send it).",
            }
            components = schema["components"].setdefault("schemas", {})
            for name, model in ingest.BODY_MODELS.items():
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[name] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
