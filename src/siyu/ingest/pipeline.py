"""The write path: checked messages and orders → dedupe → identity graph → both stores.

One :class:`Ingestor` is the single writer of an installation's stores. A call is all-or-nothing:
the ops-store transaction commits first (persons, identities, merges, traits and the change
feed), then one DuckDB transaction appends the events and applies the change feed. If the
second fails, nothing is marked as seen, so a retry of the same batch finishes the job (the
identity work is idempotent and the change feed has a watermark). Message calls that arrive
while the writer is busy share the DuckDB transaction of the next write (group commit).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa
from sqlalchemy import Connection, Engine, select

from siyu.config import Settings
from siyu.identity.graph import IdentityRules, Key
from siyu.identity.resolve import Resolution, Sighting, resolve_sightings
from siyu.identity.traits import TraitUpdate, apply_trait_updates
from siyu.ids import IdSource, derived_id
from siyu.ingest.tracking_plan import TrackingPlan
from siyu.ingest.validate import PreparedMessage, PreparedOrder, Validator
from siyu.perf import gc_paused
from siyu.store.events import EVENTS_ARROW, ORDERS_ARROW, EventStore
from siyu.store.feed import apply_changes
from siyu.store.ops.schema import identities
from siyu.timeutil import as_utc

log = logging.getLogger(__name__)

PAID_STATUSES = frozenset({"paid", "shipped", "completed", "refunded", "partially_refunded"})


@dataclass
class IngestResult:
    """Counts of one ingest call."""

    accepted: int = 0
    duplicates: int = 0
    stale: int = 0
    new_persons: int = 0
    merges: int = 0
    refused_merges: int = 0
    traits_changed: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return asdict(self)

    def count(self, resolution: Resolution) -> None:
        """Take the identity graph's counts."""
        self.new_persons += resolution.new_persons
        self.merges += resolution.merges
        self.refused_merges += resolution.refused_merges

    def add(self, other: IngestResult) -> None:
        """Accumulate another result into this one."""
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)


@dataclass(frozen=True)
class OrderState:
    """What matters about an order's latest version when the next one arrives."""

    version: int
    status: str
    updated_at: datetime
    content_hash: str
    refund_fen: int
    paid: bool  # ever paid: a paid order that is later refunded or cancelled stays "paid"

    @classmethod
    def stored(cls, row: dict[str, Any]) -> OrderState:
        """From :meth:`EventStore.latest_orders`."""
        return cls(
            version=int(row["version"]),
            status=row["status"],
            updated_at=as_utc(row["updated_at"]),
            content_hash=row["content_hash"],
            refund_fen=int(row["refund_fen"]),
            paid=row["status"] in PAID_STATUSES,
        )

    @classmethod
    def after(cls, prev: OrderState | None, p: PreparedOrder) -> OrderState:
        """The state once ``p`` is applied on top of ``prev``."""
        return cls(
            version=(prev.version if prev else 0) + 1,
            status=p.order.status,
            updated_at=p.updated_at,
            content_hash=p.content_hash,
            refund_fen=max(prev.refund_fen if prev else 0, p.order.refund_fen),
            paid=(prev.paid if prev else False) or p.order.status in PAID_STATUSES,
        )


@dataclass
class _Call:
    """One :meth:`Ingestor.ingest_messages` call, waiting to be written (possibly with others)."""

    prepared: Sequence[PreparedMessage]
    source: str
    hashes: np.ndarray
    result: IngestResult | None = None
    error: Exception | None = None
    done: bool = False


class EventHook(Protocol):
    """Called with each committed batch's new events (e.g. event-tag rules, :mod:`siyu.tags.rules`)."""

    def watched(self) -> frozenset[str]:
        """Event names the hook wants; an empty set skips it."""
        ...

    def __call__(self, events: pa.Table) -> int:
        """Handle new events (``EVENTS_ARROW`` columns); returns how many changes it made."""
        ...


def _identities_json(keys: Sequence[Key]) -> str:
    return orjson.dumps([list(k) for k in keys]).decode()


class Ingestor:
    """Single writer of the ops store and the event store for ingested data."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        events: EventStore,
        *,
        make_id: Callable[[], str] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.events = events
        self.make_id = make_id if make_id is not None else IdSource()  # ids for new persons
        self.now = now
        self.plan = TrackingPlan(engine)
        self.validator = Validator(settings, self.plan, now)
        self.rules = IdentityRules(tuple(settings.identity_priority), dict(settings.identity_limits))
        self.event_hooks: list[EventHook] = []
        self._queue: list[_Call] = []  # calls of ingest_messages waiting for the writer
        self._queue_lock = threading.Lock()

    def after_commit(self, events: pa.Table | Callable[[frozenset[str]], pa.Table]) -> None:
        """Hand a committed batch's new events to the hooks (or a reader of them by name).

        The batch is stored whatever a hook does: a failing hook is logged, not raised, so that
        a client never retries a batch that was in fact accepted.
        """
        for hook in self.event_hooks:
            try:
                names = hook.watched()
                if names:
                    hook(events if isinstance(events, pa.Table) else events(names))
            except Exception:
                log.exception("event hook %r failed on a committed batch", hook)

    def refresh_plan(self) -> None:
        """Reload the tracking plan if it changed."""
        self.plan.refresh()

    # -- messages -----------------------------------------------------------------------------
    def ingest_messages(
        self, prepared: Sequence[PreparedMessage], *, source: str = "api", hashes: np.ndarray | None = None
    ) -> IngestResult:
        """Store checked messages (duplicates by ``messageId`` are counted and skipped).

        ``hashes``: the messages' :func:`~siyu.store.events.hash_event_ids`, when already known (a
        batch-check worker computes them); else they are computed here.

        Calls that arrive while another one writes are written together once it is done (group
        commit): each keeps its own ops-store transaction and counts, exactly as if the calls had
        come one after the other, and all of them share one DuckDB transaction, whose fixed cost
        (some twenty statements of about a millisecond each) is then paid once for the group.
        """
        if hashes is None:
            # Hashing needs no lock: while another batch holds it, DuckDB hashes this one's ids.
            hashes = self.events.event_id_hashes([m.message_id for m in prepared])
        elif len(hashes) != len(prepared):
            raise ValueError(f"{len(hashes)} event-id hashes for {len(prepared)} messages")
        call = _Call(prepared, source, hashes)
        with self._queue_lock:
            self._queue.append(call)
        with self.events.write_lock, gc_paused():
            if not call.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._write_group(group)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _write_group(self, group: list[_Call]) -> None:
        """Each call's ops-store transaction in turn, then the events of all in one DuckDB transaction.

        A call gets its result only once its events are stored: should the writer stop half way
        (any error, even one that is not an ``Exception``), the calls left without one fail.
        """
        written: list[tuple[_Call, IngestResult, pa.Table, Any]] = []
        taken: set[str] = set()  # message ids stored by earlier calls of the group
        try:
            for call in group:
                try:
                    result, table, hashes = self._write_ops(call, taken)
                except Exception as exc:
                    call.error = exc
                    continue
                if table is None:
                    call.result = result  # nothing to store
                else:
                    written.append((call, result, table, hashes))
            if not written:
                return
            events = pa.concat_tables([table for _, _, table, _ in written])
            try:
                with self.events.transaction() as con:
                    hashes = np.concatenate([h for _, _, _, h in written])
                    apply_changes(self.engine, self.events, con, events=events, hashes=hashes)
            except Exception as exc:
                for call, _, _, _ in written:
                    call.error = exc
                return
            for call, result, _, _ in written:
                call.result = result
            self.after_commit(events)
        finally:
            for call in group:
                if call.result is None and call.error is None:
                    call.error = RuntimeError("the writer stopped before this batch was stored; send it again")
                call.done = True

    def _write_ops(self, call: _Call, taken: set[str]) -> tuple[IngestResult, pa.Table | None, Any]:
        """Dedupe one call's messages and write them to the ops store (its own transaction).

        Returns the counts, and the events to append with their id hashes (None when every
        message was a duplicate).
        """
        result = IngestResult()
        ids = [m.message_id for m in call.prepared]
        existing = self.events.existing_event_ids(ids, call.hashes)
        fresh: list[PreparedMessage] = []
        keep: list[int] = []
        mine: set[str] = set()
        for i, m in enumerate(call.prepared):
            if m.message_id in existing or m.message_id in taken or m.message_id in mine:
                result.duplicates += 1
                continue
            mine.add(m.message_id)
            fresh.append(m)
            keep.append(i)
        if not fresh:
            return result, None, None
        now = self.now()
        with self.engine.begin() as conn:
            self._previous_ids_as_user_ids(conn, fresh)
            resolution = self._resolve(conn, [Sighting(m.keys, m.ts, m.ts, m.message_id) for m in fresh], now)
            people = resolution.people
            updates: list[TraitUpdate] = [
                (person, key, value, m.ts, m.message_id)
                for m, person in zip(fresh, people, strict=True)
                if m.traits
                for key, value in m.traits.items()
            ]
            result.traits_changed = apply_trait_updates(conn, updates, self.settings.trait_strategies)
        taken |= mine
        result.accepted = len(fresh)
        result.count(resolution)
        return result, self._event_table(fresh, people, call.source, now), call.hashes[keep]

    def _resolve(self, conn: Connection, sightings: list[Sighting], now: datetime) -> Resolution:
        return resolve_sightings(
            conn,
            self.rules,
            sightings,
            trait_strategies=self.settings.trait_strategies,
            now=now,
            make_id=self.make_id,
        )

    def _previous_ids_as_user_ids(self, conn: Connection, fresh: Sequence[PreparedMessage]) -> None:
        """An alias's ``previousId`` is an anonymous id unless it is a known ``userId``."""
        previous = {m.previous_id for m in fresh if m.previous_id}
        if not previous:
            return
        known = set(
            conn.execute(
                select(identities.c.value).where(identities.c.type == "user_id", identities.c.value.in_(previous))
            ).scalars()
        )
        for m in fresh:
            if m.previous_id is not None and m.previous_id in known:
                old: Key = ("anonymous_id", m.previous_id)
                m.keys = self.rules.sort(("user_id", m.previous_id) if k == old else k for k in m.keys)
                m.identities_json = None  # encoded from the old keys

    @staticmethod
    def _event_table(fresh: Sequence[PreparedMessage], people: Sequence[str], source: str, now: datetime) -> pa.Table:
        for m in fresh:
            if m.properties_json is None or m.identities_json is None:
                m.encode()
        cols = {
            "event_id": [m.message_id for m in fresh],
            "person_id": list(people),
            "identity_type": [m.keys[0][0] for m in fresh],
            "identity_value": [m.keys[0][1] for m in fresh],
            "identities": [m.identities_json for m in fresh],
            "message_type": [m.type for m in fresh],
            "name": [m.name for m in fresh],
            "ts": [m.ts for m in fresh],
            "properties": [m.properties_json for m in fresh],
            "source": [source] * len(fresh),
            "received_at": [now] * len(fresh),
        }
        return pa.table(cols, schema=EVENTS_ARROW)

    # -- orders -------------------------------------------------------------------------------
    def ingest_orders(self, prepared: Sequence[PreparedOrder], *, source: str = "api") -> IngestResult:
        """Store checked orders: new orders and changed states append a version; repeats do not."""
        result = IngestResult()
        with self.events.write_lock, gc_paused():
            for p in prepared:
                p.content_hash = _order_hash(p)
            latest: dict[str, OrderState] = {
                order_id: OrderState.stored(row)
                for order_id, row in self.events.latest_orders(list({p.order.order_id for p in prepared})).items()
            }
            # Each accepted update carries the state it follows, so versions, "already paid" and
            # refund deltas chain correctly through several updates of one order in one batch.
            fresh: list[tuple[PreparedOrder, OrderState | None]] = []
            for p in sorted(prepared, key=lambda x: x.updated_at):
                prev = latest.get(p.order.order_id)
                if prev is not None and prev.content_hash == p.content_hash:
                    result.duplicates += 1
                    continue
                if prev is not None and prev.updated_at > p.updated_at:
                    result.stale += 1
                    continue
                fresh.append((p, prev))
                latest[p.order.order_id] = OrderState.after(prev, p)
            if not fresh:
                return result
            now = self.now()
            with self.engine.begin() as conn:
                sightings = [
                    Sighting(p.keys, p.paid_at or p.updated_at, p.paid_at or p.updated_at, f"order:{p.order.order_id}")
                    for p, _ in fresh
                ]
                resolution = self._resolve(conn, sightings, now)
                people = resolution.people
            result.accepted = len(fresh)
            result.count(resolution)
            orders_table, events_table = self._order_tables(fresh, people, source, now)
            with self.events.transaction() as con:
                self.events.append_orders(con, orders_table)
                self.events.append_events(con, events_table)
                apply_changes(self.engine, self.events, con)
            self.after_commit(events_table)
        return result

    @staticmethod
    def _order_tables(
        fresh: Sequence[tuple[PreparedOrder, OrderState | None]],
        people: Sequence[str],
        source: str,
        now: datetime,
    ) -> tuple[pa.Table, pa.Table]:
        order_rows: dict[str, list[Any]] = {name: [] for name in ORDERS_ARROW.names}
        event_rows: dict[str, list[Any]] = {name: [] for name in EVENTS_ARROW.names}

        def event(name: str, p: PreparedOrder, person: str, ts: datetime, props: dict[str, Any], eid: str) -> None:
            event_rows["event_id"].append(eid)
            event_rows["person_id"].append(person)
            event_rows["identity_type"].append(p.keys[0][0])
            event_rows["identity_value"].append(p.keys[0][1])
            event_rows["identities"].append(_identities_json(p.keys))
            event_rows["message_type"].append("order")
            event_rows["name"].append(name)
            event_rows["ts"].append(ts)
            event_rows["properties"].append(orjson.dumps(props).decode())
            event_rows["source"].append(source)
            event_rows["received_at"].append(now)

        for (p, prev), person in zip(fresh, people, strict=True):
            o = p.order
            version = prev.version + 1 if prev else 1
            was_paid = prev.paid if prev else False
            old_refund = prev.refund_fen if prev else 0
            items = [i.model_dump() for i in o.items]
            for name, value in (
                ("order_id", o.order_id),
                ("version", version),
                ("person_id", person),
                ("status", o.status),
                ("paid_at", p.paid_at),
                ("amount_fen", o.amount_fen),
                ("discount_fen", o.discount_fen),
                ("refund_fen", o.refund_fen),
                ("items", items),
                ("channel", o.channel),
                ("updated_at", p.updated_at),
                ("content_hash", p.content_hash),
                ("source", source),
                ("received_at", now),
            ):
                order_rows[name].append(value)
            common = {"order_id": o.order_id, "channel": o.channel}
            if o.status in PAID_STATUSES and not was_paid and p.paid_at is not None:
                event(
                    "order_paid",
                    p,
                    person,
                    p.paid_at,
                    {
                        **common,
                        "amount_fen": o.amount_fen,
                        "discount_fen": o.discount_fen,
                        "item_count": sum(i.quantity for i in o.items),
                        "skus": sorted({i.sku for i in o.items}),
                        "categories": sorted({i.category for i in o.items if i.category}),
                    },
                    derived_id("order_paid", o.order_id),
                )
            if o.refund_fen > old_refund:
                event(
                    "order_refunded",
                    p,
                    person,
                    p.updated_at,
                    {**common, "refund_fen": o.refund_fen - old_refund, "total_refund_fen": o.refund_fen},
                    derived_id("order_refunded", o.order_id, str(o.refund_fen)),
                )
            if o.status == "cancelled" and prev is not None and prev.status != "cancelled":
                event("order_cancelled", p, person, p.updated_at, common, derived_id("order_cancelled", o.order_id))
        return pa.table(order_rows, schema=ORDERS_ARROW), pa.table(event_rows, schema=EVENTS_ARROW)


def _order_hash(p: PreparedOrder) -> str:
    body = p.order.model_dump(mode="json", exclude={"userId", "anonymousId", "identities"})
    body["paid_at"] = p.paid_at.isoformat() if p.paid_at else None
    # The order's own updated_at, not the default filled in when it is missing: a re-sent
    # order without one must hash the same.
    body["updated_at"] = p.order.updated_at.isoformat() if p.order.updated_at else None
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
