"""Deterministic synthetic event data (seeded numpy, vectorised with pyarrow.compute).

Shape of the data (shared by bench_import and bench_http):

* ``persons = events // events_per_person`` people, each with exactly ``events_per_person`` events
  (the remainder goes to random people), timestamps uniform over 90 days from 2025-01-01 UTC;
  the file is ordered by timestamp, as exports usually are.
* Every person has an ``anonymous_id`` ``A…`` and a ``member_id`` ``M…``: their first 3 events
  carry only the anonymous id, later ones both (the person logged in).
* ``merge_share`` (5 %) of the people also use a second device ``B…``: their first two events
  carry only ``B…`` (so the store first sees a separate person), the third only ``A…``, and one
  later event carries ``member_id`` + ``B…`` — which joins the two persons (one merge each).

So a correct import ends with exactly ``persons`` persons and ``merge_persons`` merges.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EPOCH_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
SPAN_US = 90 * 86_400 * 1_000_000
EVENT_NAMES = ["page_view", "product_view", "add_to_cart", "search", "checkout"]
EVENT_WEIGHTS = [0.45, 0.30, 0.12, 0.10, 0.03]
FORMAT_VERSION = 1  # bump when the generator changes, so cached files are regenerated


@dataclass(frozen=True)
class EventData:
    """The generated table and what a correct import of it must produce."""

    table: pa.Table
    persons: int
    merge_persons: int
    identities: int


def _prefixed(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), text, "")


def make_events(n_events: int, *, seed: int = 42, events_per_person: int = 20, merge_share: float = 0.05) -> EventData:
    """``n_events`` events as an Arrow table (see the module docstring for the shape)."""
    if events_per_person < 6:
        raise ValueError("events_per_person must be at least 6")
    rng = np.random.default_rng(seed)
    n_persons = max(1, n_events // events_per_person)
    person = np.concatenate(
        [
            np.repeat(np.arange(n_persons, dtype=np.int64), events_per_person)[:n_events],
            rng.integers(0, n_persons, max(0, n_events - n_persons * events_per_person)),
        ]
    )
    ts = EPOCH_US + rng.integers(0, SPAN_US, n_events)

    # rank of each event within its person, in time order
    by_person = np.lexsort((ts, person))
    person_sorted = person[by_person]
    first = np.searchsorted(person_sorted, person_sorted, side="left")
    rank = np.empty(n_events, dtype=np.int64)
    rank[by_person] = np.arange(n_events) - first

    merging = np.zeros(n_persons, dtype=bool)
    n_merge = round(n_persons * merge_share)
    merging[rng.choice(n_persons, size=n_merge, replace=False)] = True
    join_rank = max(4, events_per_person // 2)

    m = merging[person]
    second_device = m & ((rank <= 1) | (rank == join_rank))
    has_member = rank >= 3
    # file order: by timestamp; ties keep each person's own order
    order = np.lexsort((rank, person, ts))
    person, ts, second_device, has_member = person[order], ts[order], second_device[order], has_member[order]

    anon = pc.if_else(pa.array(second_device), _prefixed("B", person, 9), _prefixed("A", person, 9))
    member = pc.if_else(pa.array(has_member), _prefixed("M", person, 9), pa.scalar(None, pa.string()))
    noise = rng.integers(0, 10**18, n_events)
    message_id = pc.binary_join_element_wise(_prefixed("m", np.arange(n_events), 10), _prefixed("", noise, 18), "-")
    names = pa.array(EVENT_NAMES).take(pa.array(rng.choice(len(EVENT_NAMES), n_events, p=EVENT_WEIGHTS)))
    sku = _prefixed("SKU-", np.minimum(rng.zipf(1.3, n_events), 5000), 5)
    price = pa.array(rng.integers(100, 100_000, n_events), pa.int64())
    table = pa.table(
        {
            "message_id": message_id,
            "event": names,
            "timestamp": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "member_id": member,
            "anonymous_id": anon,
            "sku": sku,
            "price_fen": price,
        }
    )
    return EventData(table, n_persons, n_merge, 2 * n_persons + n_merge)


def events_parquet(data_dir: Path, n_events: int, *, seed: int = 42) -> tuple[Path, EventData | None]:
    """A cached Parquet file of ``make_events(n_events)``; regenerated when missing.

    Returns the path and the EventData when it was generated now (None when cached); use
    :func:`expected_counts` for the expected persons / merges of a cached file.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"events-{n_events}-seed{seed}-v{FORMAT_VERSION}.parquet"
    if path.exists():
        return path, None
    data = make_events(n_events, seed=seed)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(data.table, tmp, row_group_size=1_000_000)
    tmp.replace(path)
    return path, data


def expected_counts(
    n_events: int, *, seed: int = 42, events_per_person: int = 20, merge_share: float = 0.05
) -> tuple[int, int]:
    """(persons, merges) a correct import of ``make_events(n_events, seed=seed)`` produces."""
    del seed  # the counts do not depend on the seed
    n_persons = max(1, n_events // events_per_person)
    return n_persons, round(n_persons * merge_share)
