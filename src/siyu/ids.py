"""Sortable identifiers (UUIDv7) and deterministic ones for derived records."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import numpy as np

_NAMESPACE = uuid.UUID("5b3f1c2e-8a4d-4c1e-9b7a-2f6d0e9c8a11")
_NAMESPACE_BYTES = _NAMESPACE.bytes


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
    """A deterministic id for a record derived from others (so a replay derives the same id).

    ``uuid.uuid5(namespace, "\\x1f".join(parts)).hex``, computed on the digest's bytes: the
    ``UUID`` object cost most of the time when an import derives a few hundred thousand ids.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def new_ids(count: int, now_ms: int | None = None) -> list[str]:
    """``count`` new UUIDv7s of one millisecond, as :func:`new_id` makes them, in increasing order.

    One ``urandom`` call and a few array operations for the lot: ~0.4 µs an id instead of ~2 µs.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, :6] = np.frombuffer((ms & ((1 << 48) - 1)).to_bytes(6, "big"), dtype=np.uint8)
    raw[:, 6] = 0x70 | (raw[:, 6] & 0x0F)  # version 7
    raw[:, 8] = 0x80 | (raw[:, 8] & 0x3F)  # RFC 4122 variant
    halves = raw.view(">u8")  # each id as two big-endian 64-bit words: their order is the text's order
    text = raw[np.lexsort((halves[:, 1], halves[:, 0]))].tobytes().hex()
    return [text[i : i + 32] for i in range(0, 32 * count, 32)]


class IdSource:
    """A drop-in for :func:`new_id` that makes ids in batches when many are asked for.

    A batch is served for at most 0.1 s, so an id's timestamp is at most that early, and batches
    come out in time order. The batch size follows demand: it doubles while a batch runs out
    before it expires and falls back to what was used when it expires; below 16 a call simply
    makes one :func:`new_id`. Bulk resolution creating ~100k persons a second so pays ~0.4 µs an
    id instead of ~2 µs, a lone request the same as before. Thread-safe without a lock:
    ``list.pop`` is atomic, and a batch replaced by a concurrent refill is dropped, never reused.
    """

    _SMALLEST = 16  # below this a batch's fixed cost outweighs new_id's
    _BIGGEST = 4096
    _TTL_NS = 100_000_000

    def __init__(self) -> None:
        self._expires = 0
        self._size = 0  # of the last batch
        self._ready: list[str] = []

    def __call__(self) -> str:
        if time.monotonic_ns() < self._expires:
            try:
                return self._ready.pop()
            except IndexError:
                pass
        return self._refill()

    def many(self, count: int) -> list[str]:
        """``count`` new ids at once, in increasing order (one :func:`new_ids` call)."""
        return new_ids(count) if count else []

    def _refill(self) -> str:
        now = time.monotonic_ns()
        # Ran out before expiring: more demand than the batch. Expired: size for what was used.
        expired = now >= self._expires
        size = max(self._size - len(self._ready), 1) if expired else min(2 * self._size, self._BIGGEST)
        self._size, self._expires = size, now + self._TTL_NS
        if size < self._SMALLEST:
            self._ready = []
            return new_id()
        ready = new_ids(size)
        ready.reverse()  # pop() hands them out in increasing order
        self._ready = ready
        return ready.pop()
