"""Seeded random data sets for segment tests: :func:`random_oracle_data` builds an
:class:`~segment_oracle.OracleData` with plausible values for a :class:`~segment_vocab.Vocab`.

The data is built to meet the edge cases of docs/segments.md: merged persons (events, orders and
tags written under a merged id), an erased person's leftover events, events after ``now``, events
at local midnight and at ``now − N`` exactly, ties of timestamps, properties missing / null / of the
wrong type / not a JSON object, change events, orders with several versions in any row order
(paid, then cancelled; created only; refunded), orders without items, traits of the wrong type,
tags on the person and on relations, groups without a name.
"""

from __future__ import annotations

import json
import random
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from segment_oracle import OracleData, add_months
from segment_strategies import DAY_OFFSETS
from segment_vocab import DEFAULT_VOCAB, Vocab


def _wrong(rng: random.Random, value: Any) -> Any:
    """A value of another JSON type than ``value``."""
    if isinstance(value, str):
        return rng.choice([1, True, [value], {"v": value}])
    if isinstance(value, bool):
        return rng.choice(["true", 1])
    if isinstance(value, int | float):
        return rng.choice([str(value), True, [value]])
    return rng.choice(["x", 2])


def _sample(rng: random.Random, kind: str, samples: tuple[Any, ...]) -> Any:
    """A value of type ``kind``: usually a sample, sometimes another value of the right type."""
    if kind == "list":
        return rng.sample(list(samples), rng.randint(0, min(3, len(samples))))
    if kind == "datetime" and rng.random() < 0.1:
        return "not a date"
    value = rng.choice(samples) if samples else None
    if kind == "number" and rng.random() < 0.2:
        return round(rng.uniform(-5, 100), 2)
    if kind == "integer" and rng.random() < 0.05:
        return 2.5  # a JSON number that is not whole, stored for an integer field
    return value


def _value(rng: random.Random, kind: str, samples: tuple[Any, ...]) -> tuple[bool, Any]:
    """``(present, value)`` for one property or trait: mostly typed, sometimes null or wrong."""
    roll = rng.random()
    if roll < 0.1:
        return False, None
    if roll < 0.15:
        return True, None
    value = _sample(rng, kind, samples)
    if roll < 0.22:
        return True, _wrong(rng, value)
    return True, value


class _Clock:
    """Random instants around ``now``, biased to the boundaries segments test."""

    def __init__(self, rng: random.Random, vocab: Vocab) -> None:
        self.rng = rng
        self.tz = ZoneInfo(vocab.tz)
        self.now = pd.Timestamp(vocab.now).tz_convert("UTC")
        local = self.now.tz_convert(self.tz)
        midnight = local.normalize()
        self.special: list[pd.Timestamp] = [self.now]
        for days in DAY_OFFSETS:
            self.special += [
                self.now - pd.Timedelta(days=days),
                (midnight - pd.Timedelta(days=days)).tz_convert("UTC"),
                (midnight - pd.Timedelta(days=days - 1) - pd.Timedelta(microseconds=1)).tz_convert("UTC"),
            ]
        for months in (1, 3, 6, 12):
            self.special.append(add_months(self.now, -months, self.tz))
        for hours in (1, 12, 24, 48):
            self.special.append(self.now - pd.Timedelta(hours=hours))

    def instant(self) -> pd.Timestamp:
        roll = self.rng.random()
        if roll < 0.2:
            return self.rng.choice(self.special)
        if roll < 0.25:
            return self.now + pd.Timedelta(minutes=self.rng.randint(1, 3000))
        seconds = self.rng.randint(0, 420 * 86400)
        moment = self.now - pd.Timedelta(seconds=seconds)
        return moment.floor("h") if roll < 0.5 else moment


def random_oracle_data(
    seed: int,
    persons: int = 100,
    *,
    vocab: Vocab = DEFAULT_VOCAB,
    events_per_person: int = 8,
    orders_per_person: int = 2,
) -> OracleData:
    """A random data set of ``persons`` current persons (ids ``p0000`` …) for ``vocab``, the same for
    the same arguments. About a tenth of the persons have a merged id (``m0000`` …) that some of
    their rows are written under; ``x0000`` is an erased person whose events are still stored."""
    rng = random.Random(seed)
    clock = _Clock(rng, vocab)
    ids = [f"p{i:04d}" for i in range(persons)]
    merged = {f"m{i:04d}": pid for i, pid in enumerate(ids) if rng.random() < 0.1}
    written_as = {pid: [pid] for pid in ids}
    for alias, pid in merged.items():
        written_as[pid].append(alias)

    def writer(pid: str) -> str:
        return rng.choice(written_as[pid]) if rng.random() < 0.5 else pid

    events = _events(rng, clock, vocab, ids, writer, events_per_person)
    orders = _orders(rng, clock, vocab, ids, writer, orders_per_person)
    traits: list[dict[str, Any]] = []
    for pid in ids:
        for key, (kind, samples) in vocab.traits.items():
            if rng.random() < 0.6:
                present, value = _value(rng, kind, samples)
                if present and value is not None:
                    traits.append({"person_id": pid, "key": key, "value": value})
    tags = [
        {"person_id": writer(pid), "tag": tag, "staff_userid": rng.choice(["", *vocab.staff])}
        for pid in ids
        for tag in rng.sample(list(vocab.tags), rng.randint(0, 3))
        for _ in range(rng.randint(1, 2))
    ]
    memberships = [
        {"person_id": pid, "chat_id": chat_id, "name": name}  # a group's name belongs to the group
        for pid in ids
        for chat_id, name in rng.sample(list(vocab.groups), rng.randint(0, 2))
    ]
    owners = [rng.choice([None, *vocab.staff]) for _ in ids]
    return OracleData(
        events=events,
        aliases=pd.DataFrame({"alias_id": list(merged), "person_id": list(merged.values())}, dtype=object),
        orders=orders,
        persons=pd.DataFrame({"person_id": ids, "owner": owners}, dtype=object),
        traits=pd.DataFrame(traits, columns=["person_id", "key", "value"], dtype=object),
        tags=pd.DataFrame(tags, columns=["person_id", "tag", "staff_userid"], dtype=object),
        groups=pd.DataFrame(memberships, columns=["person_id", "chat_id", "name"], dtype=object),
    )


def _events(
    rng: random.Random, clock: _Clock, vocab: Vocab, ids: list[str], writer: Any, per_person: int
) -> pd.DataFrame:
    names = sorted(vocab.events)
    rows: list[dict[str, Any]] = []
    for pid in [*ids, "x0000"]:
        previous: pd.Timestamp | None = None
        for _ in range(rng.randint(0, 2 * per_person)):
            name = rng.choice(names)
            roll = rng.random()
            if previous is not None and roll < 0.1:
                ts = previous  # a tie
            elif previous is not None and roll < 0.25:
                ts = previous + pd.Timedelta(hours=rng.choice([1, 24, 24 * 7, 24 * 30]))  # a follow-up
            else:
                ts = clock.instant()
            previous = ts
            rows.append(
                {
                    "event_id": f"e{len(rows):07d}",
                    "person_id": pid if pid == "x0000" else writer(pid),
                    "name": name,
                    "ts": ts,
                    "properties": _properties(rng, vocab, name),
                    "message_type": vocab.message_type(name),
                }
            )
    frame = pd.DataFrame(rows, columns=["event_id", "person_id", "name", "ts", "properties", "message_type"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    for column in ("event_id", "person_id", "name", "properties", "message_type"):
        frame[column] = frame[column].astype(object)
    return frame.sample(frac=1.0, random_state=rng.randint(0, 2**31)).reset_index(drop=True)


def _properties(rng: random.Random, vocab: Vocab, name: str) -> str | None:
    roll = rng.random()
    if roll < 0.03:
        return None
    if roll < 0.05:
        return json.dumps(["not", "an", "object"])
    props: dict[str, Any] = {}
    for prop, (kind, samples) in vocab.events[name].items():
        present, value = _value(rng, kind, samples)
        if present:
            props[prop] = value
    return json.dumps(props, ensure_ascii=False)


def _orders(
    rng: random.Random, clock: _Clock, vocab: Vocab, ids: list[str], writer: Any, per_person: int
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for pid in ids:
        for _ in range(rng.randint(0, 2 * per_person)):
            order_id = f"o{len(rows):07d}"
            items: list[dict[str, Any]] = [
                {
                    "sku": rng.choice([*vocab.skus, None]) if rng.random() < 0.1 else rng.choice(vocab.skus),
                    "category": rng.choice(vocab.categories),
                    "quantity": rng.randint(1, 3),
                    "price_fen": rng.choice([990, 5000, 12900, 29900]),
                }
                for _ in range(rng.choice([0, 1, 1, 2, 3]))
            ]
            gross = sum(i["quantity"] * i["price_fen"] for i in items)
            discount = rng.choice([0, 0, 500, 1000]) if gross > 1000 else 0
            paid_at = clock.instant()
            channel = rng.choice([*vocab.channels, None]) if rng.random() < 0.1 else rng.choice(vocab.channels)
            path = rng.choice(
                [
                    ["created"],
                    ["paid"],
                    ["created", "paid"],
                    ["paid", "shipped", "completed"],
                    ["paid", "refunded"],
                    ["paid", "cancelled"],
                    ["created", "cancelled"],
                    ["paid", "shipped"],
                ]
            )
            refund = 0
            for version, status in enumerate(path, start=1):
                if status == "refunded":
                    refund = rng.choice([500, gross - discount])
                rows.append(
                    {
                        "order_id": order_id,
                        "version": version,
                        "person_id": writer(pid),
                        "status": status,
                        "paid_at": paid_at if "paid" in path[:version] else None,
                        "amount_fen": gross - discount,
                        "discount_fen": discount,
                        # a later version may change the amount; only the latest counts
                        "refund_fen": refund,
                        "items": items,
                        "channel": channel,
                    }
                )
                if version < len(path) and rng.random() < 0.3:
                    gross += 1000
    frame = pd.DataFrame(
        rows,
        columns=[
            "order_id",
            "version",
            "person_id",
            "status",
            "paid_at",
            "amount_fen",
            "discount_fen",
            "refund_fen",
            "items",
            "channel",
        ],
    )
    frame["paid_at"] = pd.to_datetime(frame["paid_at"], utc=True)
    for column in ("order_id", "person_id", "status", "items", "channel"):
        frame[column] = frame[column].astype(object)
    for column in ("version", "amount_fen", "discount_fen", "refund_fen"):
        frame[column] = frame[column].astype("int64")
    return frame.sample(frac=1.0, random_state=rng.randint(0, 2**31)).reset_index(drop=True)


__all__ = ["random_oracle_data"]
