"""API keys: created once (shown once), stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Engine, select, update

from siyu.ids import new_id
from siyu.store.ops.schema import api_keys

KeyKind = Literal["write", "admin"]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A key just created: its id (for revoking) and its secret (shown this once)."""

    id: str
    key: str


def create_key(engine: Engine, *, kind: KeyKind, name: str) -> NewKey:
    """Create a key; the secret is returned in plain text only here."""
    if kind not in ("write", "admin"):
        raise ValueError(f"key kind must be write or admin, not {kind!r}")
    if not name.strip() or len(name) > 128:
        raise ValueError("key name must be 1–128 characters")
    key = f"sy_{kind}_{secrets.token_urlsafe(24)}"
    key_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key_id,
                name=name[:128],
                kind=kind,
                prefix=key[:12],
                key_hash=_hash(key),
                created_at=datetime.now(UTC),
            )
        )
    return NewKey(key_id, key)


def key_kind(engine: Engine, key: str, extra: dict[str, KeyKind]) -> KeyKind | None:
    """The kind of ``key`` if it is valid and not revoked (``extra`` holds keys from settings)."""
    for candidate, kind in extra.items():
        if hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass")):
            return kind
    with engine.connect() as conn:
        row = conn.execute(
            select(api_keys.c.kind).where(api_keys.c.key_hash == _hash(key), api_keys.c.revoked_at.is_(None))
        ).first()
    return row[0] if row else None


def list_keys(engine: Engine) -> list[dict[str, object]]:
    """Keys without their secret part."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.name,
                api_keys.c.kind,
                api_keys.c.prefix,
                api_keys.c.created_at,
                api_keys.c.revoked_at,
            ).order_by(api_keys.c.created_at)
        ).all()
    return [dict(r._mapping) for r in rows]


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke a key by id; True if it existed and was active."""
    with engine.begin() as conn:
        result = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return bool(result.rowcount)
