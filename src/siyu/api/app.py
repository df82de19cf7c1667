"""The FastAPI application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi

from siyu import __version__
from siyu.api import admin, ingest, overview, persons, segments, tags
from siyu.api.checkpool import CheckPool
from siyu.api.deps import ApiError, api_error_handler, validation_error_handler
from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.web import console

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
    app.include_router(overview.router)
    app.include_router(tags.router)
    app.include_router(segments.router)
    app.include_router(console.router)

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok", "version": __version__}

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
