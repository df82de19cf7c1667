"""The tracking plan: a JSON Schema per event name, checked on every ingested track message."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import fastjsonschema
import orjson
from sqlalchemy import Engine, delete, func, select

from siyu.store.ops.schema import tracking_plan
from siyu.store.ops.upsert import upsert


class TrackingPlanError(ValueError):
    """A schema that is not valid JSON Schema."""


MAX_SCHEMA_BYTES = 64 * 1024


def _no_remote_refs(node: Any, where: str = "$") -> None:
    """Refuse ``$ref``s that leave the schema: compiling must never fetch a URL or read a file."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
            raise TrackingPlanError(f"{where}.$ref: only local references (#/…) are allowed, got {str(ref)[:60]!r}")
        for key, value in node.items():
            _no_remote_refs(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _no_remote_refs(value, f"{where}[{i}]")


def _refuse_fetch(uri: str) -> Any:
    raise TrackingPlanError(f"remote references are not allowed: {uri[:60]!r}")


def compile_schema(schema: dict[str, Any]) -> Callable[[Any], Any]:
    """Compile a JSON Schema (draft 7) into a validator; raises :class:`TrackingPlanError`.

    Schemas are user input: only local ``$ref``s are allowed and no URI is ever resolved.
    """
    if not isinstance(schema, dict):
        raise TrackingPlanError("a tracking-plan schema must be a JSON object")
    try:
        size = len(orjson.dumps(schema))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise TrackingPlanError(f"schema is not JSON: {exc}") from exc
    if size > MAX_SCHEMA_BYTES:
        raise TrackingPlanError(f"schema is {size} bytes; the limit is {MAX_SCHEMA_BYTES}")
    _no_remote_refs(schema)
    handlers = {scheme: _refuse_fetch for scheme in ("http", "https", "file", "ftp", "data", "urn", "")}
    try:
        return fastjsonschema.compile(schema, handlers=handlers)
    except TrackingPlanError:
        raise
    except Exception as exc:  # fastjsonschema raises many kinds (re.error, KeyError …)
        raise TrackingPlanError(f"invalid JSON Schema: {exc}") from exc


class CompiledPlan:
    """Compiled schemas by event name: what checking a message needs, without a database.

    A process that checks batches apart from the writer builds one from :meth:`TrackingPlan.snapshot`.
    """

    def __init__(self, schemas: Mapping[str, dict[str, Any]] | None = None) -> None:
        self._validators: dict[str, Callable[[Any], Any]] = {
            name: compile_schema(schema) for name, schema in (schemas or {}).items()
        }

    def has(self, event: str) -> bool:
        """Whether ``event`` has a schema."""
        return event in self._validators

    def check(self, event: str, properties: dict[str, Any]) -> str | None:
        """None when ``properties`` satisfy the event's schema (or it has none), else the reason."""
        validator = self._validators.get(event)
        if validator is None:
            return None
        try:
            validator(properties)
        except fastjsonschema.JsonSchemaValueException as exc:
            return str(exc.message)
        return None


class TrackingPlan(CompiledPlan):
    """Compiled schemas of the ops store's ``tracking_plan`` table, reloaded when it changes."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._schemas: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[Any, ...] | None = None

    def refresh(self) -> None:
        """Reload the schemas if the table changed since the last load."""
        with self.engine.connect() as conn:
            stamp = tuple(conn.execute(select(func.count(), func.max(tracking_plan.c.updated_at))).one())
            if stamp == self._stamp:
                return
            rows = conn.execute(select(tracking_plan.c.event_name, tracking_plan.c.json_schema)).all()
        self._validators = {name: compile_schema(schema) for name, schema in rows}
        self._schemas = {name: schema for name, schema in rows}
        self._stamp = stamp

    def snapshot(self) -> tuple[tuple[Any, ...] | None, dict[str, dict[str, Any]]]:
        """``(stamp, schemas)`` as of the last :meth:`refresh`; the stamp changes with the table."""
        return self._stamp, self._schemas

    def events(self) -> frozenset[str]:
        """Event names that have a schema (as of the last refresh)."""
        return frozenset(self._validators)

    def set(self, event: str, schema: dict[str, Any], description: str | None = None) -> None:
        """Add or replace the schema for ``event`` (validated first)."""
        compile_schema(schema)
        row = {
            "event_name": event,
            "json_schema": schema,
            "description": description,
            "updated_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            upsert(conn, tracking_plan, [row], ["event_name"], ["json_schema", "description", "updated_at"])
        self._stamp = None

    def remove(self, event: str) -> bool:
        """Remove the schema for ``event``; True if there was one."""
        with self.engine.begin() as conn:
            removed = conn.execute(delete(tracking_plan).where(tracking_plan.c.event_name == event)).rowcount
        self._stamp = None
        return bool(removed)

    def list(self) -> dict[str, dict[str, Any]]:
        """All schemas by event name."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(tracking_plan.c.event_name, tracking_plan.c.json_schema)).all()
        return {name: schema for name, schema in rows}
