"""Shared pieces of the API: the error shape, authentication, the runtime, raw JSON bodies."""

import base64
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from siyu import jsontext
from siyu.api.keys import KeyKind, key_kind
from siyu.config import Settings
from siyu.runtime import Runtime

# Declared so that OpenAPI documents the scheme (and /docs gets an "Authorize" button); the
# header itself is read by `require`, which also accepts HTTP Basic with the key as user name.
# (FastAPI's HTTPBasic answers malformed headers itself, outside siyu's error shape, so Basic is
# only described in the spec by the app factory.)
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "errors"?}}``."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def error_response(exc: ApiError) -> JSONResponse:
    """The JSON response for an :class:`ApiError`."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.errors is not None:
        body["errors"] = exc.errors
    return JSONResponse({"error": body}, status_code=exc.status)


async def api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Exception handler for :class:`ApiError`."""
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation errors, in siyu's error shape."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "reason": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    return error_response(ApiError(422, "invalid_request", "the request is not valid", errors))


def get_runtime(request: Request) -> Runtime:
    """The installation's runtime (opened by the app's lifespan)."""
    return request.app.state.runtime


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def _key_from(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value, validate=True).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def require(kind: KeyKind) -> Callable[..., Awaitable[KeyKind]]:
    """A dependency accepting a key of ``kind`` (an admin key is accepted everywhere)."""

    async def check(request: Request, _b: Any = Depends(_bearer)) -> KeyKind:
        key = _key_from(request)
        if not key:
            raise ApiError(401, "unauthenticated", "missing API key: send `Authorization: Bearer <key>`")
        settings = get_settings(request)
        extra: dict[str, KeyKind] = {k: "write" for k in settings.write_keys}
        extra.update({k: "admin" for k in settings.admin_keys})
        found = await run_in_threadpool(key_kind, get_runtime(request).engine, key, extra)
        if found is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked API key")
        if found != kind and found != "admin":
            raise ApiError(
                403,
                "forbidden",
                f"this endpoint needs an {kind} key" if kind == "admin" else f"this endpoint needs a {kind} key",
            )
        return found

    return check


WriteKey = Annotated[KeyKind, Depends(require("write"))]
AdminKey = Annotated[KeyKind, Depends(require("admin"))]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refusing more than ``limit`` bytes (413)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """``body`` parsed as JSON, or a 400 :class:`ApiError`."""
    try:
        return jsontext.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid UTF-8 JSON: {exc}") from exc


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, refusing more than ``limit`` bytes (413) or bad JSON (400)."""
    return parse_json(await read_body(request, limit))


def body_items(body: Any, key: str, settings: Settings) -> list[Any]:
    """The ``key`` array of an ingest body (``{"batch": [...]}``), checked for shape and size."""
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
