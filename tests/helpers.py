"""Builders for messages and orders, and a thin API wrapper shared by the tests."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from siyu.runtime import Runtime
from siyu.store.ops.schema import metadata

WRITE = {"Authorization": "Bearer test-write"}
ADMIN = {"Authorization": "Bearer test-admin"}

#: A fixed moment in the past that every test time is built from (well after 2000, well before now).
BASE = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)

DUCK_TABLES = ("events", "orders", "person_aliases")


def at(minutes: float = 0) -> str:
    """ISO timestamp ``minutes`` after :data:`BASE`."""
    return (BASE + timedelta(minutes=minutes)).isoformat()


def folder_digest(folder: Path) -> str:
    """One SHA-256 over every file under ``folder``: relative paths and bytes, in path order."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def new_message_id() -> str:
    return uuid.uuid4().hex


def track(event: str = "page_viewed", *, message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A track message; identities go in ``userId=`` / ``anonymousId=`` / ``identities=``."""
    return {"type": "track", "event": event, "messageId": message_id or new_message_id(), **fields}


def identify(*, message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """An identify message."""
    return {"type": "identify", "messageId": message_id or new_message_id(), **fields}


def order(order_id: str, *, status: str = "paid", amount_fen: int = 10_000, **fields: Any) -> dict[str, Any]:
    """An order; paid-like statuses get a ``paid_at`` unless one is given."""
    body: dict[str, Any] = {"order_id": order_id, "status": status, "amount_fen": amount_fen, **fields}
    if status not in ("created", "cancelled"):
        body.setdefault("paid_at", at(0))
    return body


class Api:
    """The calls the tests make, with status checks, plus direct reads of both stores."""

    def __init__(self, client: TestClient, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime

    # -- HTTP ---------------------------------------------------------------------------------
    def post_batch(self, messages: list[Any], headers: dict[str, str] | None = None, **extra: Any) -> Response:
        return self.client.post("/v1/batch", json={"batch": messages, **extra}, headers=headers or WRITE)

    def batch(self, messages: list[Any], *, expect: int = 200) -> dict[str, Any]:
        r = self.post_batch(messages)
        assert r.status_code == expect, r.text
        return r.json()  # type: ignore[no-any-return]

    def post_orders(self, orders: list[Any], headers: dict[str, str] | None = None) -> Response:
        return self.client.post("/v1/orders", json={"orders": orders}, headers=headers or WRITE)

    def orders(self, orders: list[Any], *, expect: int = 200) -> dict[str, Any]:
        r = self.post_orders(orders)
        assert r.status_code == expect, r.text
        return r.json()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        r = self.client.get("/v1/stats", headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def get_person(self, ref: str) -> Response:
        return self.client.get(f"/v1/persons/{quote(ref, safe='')}", headers=ADMIN)

    def person(self, ref: str) -> dict[str, Any]:
        r = self.get_person(ref)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def export(self, ref: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/persons/{quote(ref, safe='')}/export", headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    # -- direct reads -------------------------------------------------------------------------
    def duck(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.runtime.events.cursor().execute(sql, params or []).fetchall()

    def ops_rows(self, table_name: str) -> list[dict[str, Any]]:
        table = metadata.tables[table_name]
        with self.runtime.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(table))]

    def snapshot(self) -> dict[str, int]:
        """Row counts of every ops-store table and every event-store table."""
        counts: dict[str, int] = {}
        with self.runtime.engine.connect() as conn:
            for name, table in metadata.tables.items():
                counts[f"ops.{name}"] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for name in DUCK_TABLES:
            counts[f"duck.{name}"] = int(self.duck(f"SELECT count(*) FROM {name}")[0][0])
        return counts

    def person_id(self, ref: str) -> str:
        return str(self.person(ref)["id"])
