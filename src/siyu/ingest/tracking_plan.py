"""The tracking plan: a JSON Schema per event name, checked on every ingested track message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastjsonschema
from sqlalchemy import Engine, delete, func, select

from siyu.store.ops.schema import tracking_plan
from siyu.store.ops.upsert import upsert


class TrackingPlanError(ValueError):
    """A schema that is not valid JSON Schema."""


def compile_schema(schema: dict[str, Any]) -> Callable[[Any], Any]:
    """Compile a JSON Schema (draft 7) into a validator; raises :class:`TrackingPlanError`."""
    if not isinstance(schema, dict):
        raise TrackingPlanError("a tracking-plan schema must be a JSON object")
    try:
        return fastjsonschema.compile(schema)
    except (fastjsonschema.JsonSchemaDefinitionException, TypeError, ValueError) as exc:
        raise TrackingPlanError(f"invalid JSON Schema: {exc}") from exc


class TrackingPlan:
    """Compiled schemas of the ops store's ``tracking_plan`` table, reloaded when it changes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._validators: dict[str, Callable[[Any], Any]] = {}
        self._stamp: tuple[Any, ...] | None = None

    def refresh(self) -> None:
        """Reload the schemas if the table changed since the last load."""
        with self.engine.connect() as conn:
            stamp = tuple(conn.execute(select(func.count(), func.max(tracking_plan.c.updated_at))).one())
            if stamp == self._stamp:
                return
            rows = conn.execute(select(tracking_plan.c.event_name, tracking_plan.c.json_schema)).all()
        self._validators = {name: compile_schema(schema) for name, schema in rows}
        self._stamp = stamp

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
