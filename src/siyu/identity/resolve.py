"""Resolve many sightings of identities to persons and store the outcome, in one call.

The single entry point the write paths share (API batches, orders, bulk file import, WeCom
relations): load what the ops store knows → run the graph → write persons, identities, merges
and first/last seen, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from siyu.identity.graph import IdentityGraph, IdentityRules, Key
from siyu.identity.persist import write_graph
from siyu.ids import IdSource
from siyu.perf import gc_paused


@dataclass(frozen=True)
class Sighting:
    """Identities seen together (one message, or one distinct combination in a file)."""

    keys: list[Key]  # in priority order
    first: datetime
    last: datetime
    message_id: str | None = None


@dataclass(frozen=True)
class Resolution:
    """The surviving person of each sighting, and what the graph did."""

    people: list[str]
    new_persons: int
    merges: int
    refused_merges: int


def resolve_sightings(
    conn: Connection,
    rules: IdentityRules,
    sightings: Sequence[Sighting],
    *,
    trait_strategies: Mapping[str, str],
    now: datetime,
    make_id: Callable[[], str] | None = None,
) -> Resolution:
    """Resolve ``sightings`` in order and write the outcome in ``conn``'s transaction.

    New persons get ids from ``make_id`` (default: an :class:`~siyu.ids.IdSource`).
    """
    with gc_paused():
        graph = IdentityGraph(rules, make_id if make_id is not None else IdSource())
        graph.load(conn, {k for s in sightings for k in s.keys})
        raw = [graph.resolve(s.keys, s.first, s.message_id) for s in sightings]
        people = [graph.find(p) for p in raw]
        spans: dict[str, tuple[datetime, datetime]] = {}
        for s, person in zip(sightings, people, strict=True):
            span = spans.get(person)
            spans[person] = (s.first, s.last) if span is None else (min(span[0], s.first), max(span[1], s.last))
        write_graph(conn, graph, spans, trait_strategies=trait_strategies, now=now)
    return Resolution(
        people=people,
        new_persons=sum(1 for p in graph.new_persons if graph.find(p) == p),
        merges=len(graph.merges),
        refused_merges=len(graph.refusals),
    )
