"""Sortable identifiers (UUIDv7) and deterministic ones for derived records."""

from __future__ import annotations

import os
import time
import uuid

_NAMESPACE = uuid.UUID("5b3f1c2e-8a4d-4c1e-9b7a-2f6d0e9c8a11")


def new_id(now_ms: int | None = None) -> str:
    """A new UUIDv7 as a 32-character hex string: time-ordered, random in the low 74 bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def derived_id(*parts: str) -> str:
    """A deterministic id for a record derived from others (so a replay derives the same id)."""
    return uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).hex
