"""Resolve many sightings at once, given as columns: most persons of a large import need no graph.

The identity graph (:mod:`siyu.identity.graph`) decides sighting by sighting, a few microseconds
of Python each. Most sightings of a large import belong to a group the graph would treat
trivially, and those groups can be recognised with array operations. Split the sightings by the
connected components of their identities (two identities are connected when one sighting carries
both). A component is **simple** when

* none of its identities is stored already,
* exactly one of its sightings carries only identities not seen earlier in the batch (its
  *creator*; a sighting without identities is never simple), and
* it holds no more values of any type than that type's limit.

In order, the graph then creates one person at the creator and attaches every later identity to
it: each later sighting carries an identity seen before, which that one person owns; no limit is
ever reached, so nothing is refused and nothing merged. So the outcome is known without running
the graph: one person, first / last seen over the component's sightings, and each identity first
seen at the first sighting carrying it. Every other component goes through the graph, in the
original order, with the stored persons it touches loaded — except a **known** component: every
identity of it is stored, all on one person whom no other component of the batch touches. The graph
would resolve each of its sightings to that person and change nothing but the person's first / last
seen, so that is all that is done (the events and orders of customers already stored). Person ids
are drawn in creation order across both kinds, so with the same id source the stores end up identical to
:func:`~siyu.identity.resolve.resolve_sightings` on the same sightings (tests/test_identity_columns.py);
an id source that can hand out many ids at once (:meth:`siyu.ids.IdSource.many`) gives the
simple components theirs in one batch, ahead of the graph's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from sqlalchemy import Connection

from siyu.identity.graph import IdentityGraph, IdentityRules, Key
from siyu.identity.persist import NewRows, write_graph
from siyu.identity.resolve import Resolution
from siyu.ids import IdSource
from siyu.perf import StageTimer, gc_paused
from siyu.timeutil import column_micros, micros_datetimes

log = logging.getLogger(__name__)
#: Past this many distinct identities, one pass over the stored identities beats IN lists.
SCAN_ABOVE = 20_000
_CHUNK = 5000
_VALUE_PERSON = pa.struct([("value", pa.string()), ("person_id", pa.string())])


@dataclass(frozen=True)
class SightingColumns:
    """Sightings in order, one row each: the identities seen together, when, and by which message.

    ``identities`` maps an identity type to a string column, null where the sighting has no value
    of that type (values already cleaned and normalised). ``first`` / ``last`` are
    ``timestamp[us, UTC]`` columns; ``message_id`` a string column (null allowed).
    """

    identities: Mapping[str, pa.Array]
    first: pa.Array
    last: pa.Array
    message_id: pa.Array

    def __len__(self) -> int:
        return len(self.first)


@dataclass
class Decision:
    """What :func:`decide_columns` decided, before anything is written.

    ``people`` holds each sighting's surviving person; :meth:`write` stores the outcome.
    """

    people: list[str]
    graph: IdentityGraph
    spans: dict[str, tuple[datetime, datetime]]
    new_rows: NewRows

    def write(self, conn: Connection, *, trait_strategies: Mapping[str, str], now: datetime) -> None:
        """Write the new persons, identities, merges and first / last seen in ``conn``'s transaction."""
        timer = StageTimer(log, "identity columns")
        with gc_paused():
            write_graph(
                conn, self.graph, self.spans, trait_strategies=trait_strategies, now=now, new_rows=self.new_rows
            )
        timer.lap("write")

    def resolution(self) -> Resolution:
        """The summary the write paths report."""
        graph = self.graph
        return Resolution(
            people=self.people,
            new_persons=len(self.new_rows.person_ids) + sum(1 for p in graph.new_persons if graph.find(p) == p),
            merges=len(graph.merges),
            refused_merges=len(graph.refusals),
        )


def resolve_columns(
    conn: Connection,
    rules: IdentityRules,
    sightings: SightingColumns,
    *,
    trait_strategies: Mapping[str, str],
    now: datetime,
    make_id: Callable[[], str] | None = None,
    partition: Partition | None = None,
) -> Resolution:
    """Resolve ``sightings`` in order and write the outcome in ``conn``'s transaction.

    Same outcome as :func:`~siyu.identity.resolve.resolve_sightings` over the same sightings (see
    the module docstring); ``people`` holds each sighting's surviving person. ``partition`` is
    :func:`partition_sightings` of these very sightings, when the caller has it already.
    """
    decision = decide_columns(conn, rules, sightings, make_id=make_id, partition=partition)
    decision.write(conn, trait_strategies=trait_strategies, now=now)
    return decision.resolution()


def partition_sightings(conn: Connection, rules: IdentityRules, sightings: SightingColumns) -> Partition:
    """The components of ``sightings``' identities against the stored ones (which it reads), what
    :func:`decide_columns` starts from; :meth:`Partition.shortcuts` says which sightings are in a
    simple or a known component. Valid for these sightings until the ops store changes."""
    types = [t for t in rules.priority if t in sightings.identities]
    return _partition(conn, rules, types, [_array(sightings.identities[t]) for t in types], len(sightings))


def decide_columns(
    conn: Connection,
    rules: IdentityRules,
    sightings: SightingColumns,
    *,
    make_id: Callable[[], str] | None = None,
    partition: Partition | None = None,
) -> Decision:
    """Decide every sighting's person (reading the stored identities through ``conn``); write nothing.

    A caller may hand the :class:`Decision`'s ``write`` to another thread while it stores the
    events, which need only ``people``. ``partition``: :func:`partition_sightings` of these
    sightings, if the caller made it (the stored identities are then not read again).
    """
    unknown = set(sightings.identities) - set(rules.priority)
    if unknown:
        raise ValueError(f"identity types not in the priority order: {sorted(unknown)}")
    make_id = make_id if make_id is not None else IdSource()
    timer = StageTimer(log, "identity columns")
    types = [t for t in rules.priority if t in sightings.identities]
    columns = [_array(sightings.identities[t]) for t in types]
    n = len(sightings)
    part = _partition(conn, rules, types, columns, n) if partition is None else partition
    if len(part.comp) != n:
        raise ValueError(f"the partition is of {len(part.comp)} sightings, not these {n}")
    timer.lap("partition")
    first_us, last_us = column_micros(sightings.first), column_micros(sightings.last)
    with gc_paused():
        graph = IdentityGraph(rules, make_id)
        graph.load_persons(conn, part.owners)
        # Person ids in creation order: the simple creators' ids drawn between the graph's sightings
        # (an id source with ``many``, such as IdSource, hands them all out at once instead).
        simple_creators = np.flatnonzero(part.creator & ~part.in_graph & ~part.known_rows)
        graph_seqs = np.flatnonzero(part.in_graph)
        before = np.searchsorted(simple_creators, graph_seqs).tolist()
        keys = _keys(types, [col.take(graph_seqs).to_pylist() for col in columns], len(graph_seqs))
        at = micros_datetimes(first_us[graph_seqs])
        message_ids = _array(sightings.message_id).take(graph_seqs).to_pylist()
        many = getattr(make_id, "many", None)
        ids: list[str] = many(len(simple_creators)) if many is not None else []
        raw = []
        for i, k in enumerate(keys):
            if before[i] > len(ids):
                ids += [make_id() for _ in range(before[i] - len(ids))]
            raw.append(graph.resolve(k, at[i], message_ids[i]))
        ids += [make_id() for _ in range(len(simple_creators) - len(ids))]
        graph_people = [graph.find(p) for p in raw]
        timer.lap(f"graph ({len(raw)} of {n} sightings)")

        person_of_comp = part.known_person.copy()
        person_of_comp[part.comp[simple_creators]] = ids
        people = np.empty(n, dtype=object)
        simple = ~part.in_graph
        people[simple] = person_of_comp[part.comp[simple]]
        people[graph_seqs] = graph_people
        spans: dict[str, tuple[datetime, datetime]] = {}
        for person, a, b in zip(graph_people, at, micros_datetimes(last_us[graph_seqs]), strict=True):
            span = spans.get(person)
            spans[person] = (a, b) if span is None else (min(span[0], a), max(span[1], b))
        spans.update(_known_spans(part, first_us, last_us))  # no graph person is a known one
        new_rows = _new_rows(part, simple_creators, ids, person_of_comp, first_us, last_us, types)
    return Decision(people.tolist(), graph, spans, new_rows)


@dataclass(frozen=True)
class Partition:
    """The identity codes' components, and which sightings the graph must take."""

    n_comps: int
    comp: np.ndarray  # per sighting: its component (-1: no identities)
    label: np.ndarray  # per identity code: its component
    first_seq: np.ndarray  # per identity code: the first sighting carrying it
    creator: np.ndarray  # per sighting: all its identities first occur in it
    hard: np.ndarray  # per component: not a simple new one (the graph decides it, or it is known)
    known: np.ndarray  # per component: all its identities stored, on one person no other one touches
    known_person: np.ndarray  # per component: that person (an object array, None elsewhere)
    in_graph: np.ndarray  # per sighting
    known_rows: np.ndarray  # per sighting: in a known component
    owners: set[str]  # stored persons the graph must load: owners of the other components' identities
    dictionaries: list[pa.Array]  # per type: its distinct values (code = offset + position)
    offsets: list[int]

    def shortcuts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sighting, whether it belongs to a simple component (one new person, created without
        the graph) and whether to a known one (see the module docstring), whatever else the batch
        holds. Repeating a sighting changes neither: a repeat carries identities seen before, so it
        is never a creator. Components are disjoint, so the rest of a batch can be resolved apart
        from them."""
        return np.asarray(~self.in_graph & ~self.known_rows), np.asarray(self.known_rows)


def _partition(conn: Connection, rules: IdentityRules, types: list[str], columns: list[pa.Array], n: int) -> Partition:
    """Components, creators and the graph's share of ``n`` sightings given as identity ``columns``."""
    # Every (sighting, identity) occurrence, ordered by sighting and, within one, by priority;
    # each distinct identity gets a code: codes[offsets[r]:offsets[r + 1]] are type r's values.
    seq_parts, code_parts, dictionaries = [], [], []
    offsets = [0]
    for col in columns:
        present = col.is_valid().to_numpy(zero_copy_only=False)
        encoded = pc.dictionary_encode(col.filter(present))
        seq_parts.append(np.flatnonzero(present))
        code_parts.append(encoded.indices.to_numpy().astype(np.int64) + offsets[-1])
        dictionaries.append(encoded.dictionary)
        offsets.append(offsets[-1] + len(encoded.dictionary))
    n_keys = offsets[-1]
    # In sighting order, types in priority order within one: each occurrence's place is its
    # sighting's start plus how many earlier-priority types that sighting carries (no sort).
    flat_seq = np.concatenate(seq_parts) if seq_parts else np.zeros(0, np.int64)
    flat_code = np.concatenate(code_parts) if code_parts else np.zeros(0, np.int64)
    occurrences = np.zeros(n, np.int64)  # per sighting; each type holds one value at most
    place = np.empty(len(flat_seq), np.int64)
    at = 0
    for part in seq_parts:
        place[at : at + len(part)] = occurrences[part]
        occurrences[part] += 1
        at += len(part)
    place += (np.cumsum(occurrences) - occurrences)[flat_seq]
    seq, code = np.empty_like(flat_seq), np.empty_like(flat_code)
    seq[place], code[place] = flat_seq, flat_code

    n_comps, label = _components(seq, code, n_keys)
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]]) if len(seq) else np.zeros(0, np.int64)
    comp = np.full(n, -1, np.int64)
    comp[seq[starts]] = label[code[starts]]

    first_seq = np.full(n_keys, n, np.int64)
    np.minimum.at(first_seq, code, seq)
    firsts = np.bincount(seq, weights=first_seq[code] == seq, minlength=n)
    creator = (occurrences > 0) & (firsts == occurrences)

    hard = np.bincount(comp[creator], minlength=n_comps) != 1
    for r, t in enumerate(types):
        limit = rules.limits.get(t)
        if limit is not None:
            hard |= np.bincount(label[offsets[r] : offsets[r + 1]], minlength=n_comps) > limit
    codes, stored_persons = _stored(conn, types, dictionaries, n_keys, offsets)
    known = np.zeros(n_comps, bool)
    known_person = np.full(n_comps, None, dtype=object)
    owners: set[str] = set()
    if len(codes):
        encoded = pc.dictionary_encode(stored_persons)
        names = np.array(encoded.dictionary.to_pylist(), dtype=object)
        owner = encoded.indices.to_numpy().astype(np.int64)
        where = label[codes]
        hard[where] = True
        # Known: every identity stored, one owner for all of them, and that owner in no other component.
        lowest = np.full(n_comps, len(names), np.int64)
        highest = np.full(n_comps, -1, np.int64)
        np.minimum.at(lowest, where, owner)
        np.maximum.at(highest, where, owner)
        all_stored = np.bincount(where, minlength=n_comps) == np.bincount(label, minlength=n_comps)
        known = all_stored & (lowest == highest)
        components_of_owner = np.bincount(np.unique(where * len(names) + owner) % len(names), minlength=len(names))
        known &= components_of_owner[np.minimum(lowest, len(names) - 1)] == 1
        known_person[known] = names[lowest[known]]
        owners = set(names[np.unique(owner[~known[where]])].tolist())
    if n_comps:
        in_graph = (comp < 0) | (hard & ~known)[np.maximum(comp, 0)]
        known_rows = (comp >= 0) & known[np.maximum(comp, 0)]
    else:
        in_graph, known_rows = np.ones(n, bool), np.zeros(n, bool)
    return Partition(
        n_comps,
        comp,
        label,
        first_seq,
        creator,
        hard,
        known,
        known_person,
        in_graph,
        known_rows,
        owners,
        dictionaries,
        offsets,
    )


def _known_spans(part: Partition, first_us: np.ndarray, last_us: np.ndarray) -> dict[str, tuple[datetime, datetime]]:
    """First / last seen over each known component's sightings, by its person."""
    if not part.known.any():
        return {}
    earliest, latest = _component_spans(part, np.flatnonzero(part.known_rows), first_us, last_us)
    which = np.flatnonzero(part.known)
    return dict(
        zip(
            part.known_person[which].tolist(),
            zip(micros_datetimes(earliest[which]), micros_datetimes(latest[which]), strict=True),
            strict=True,
        )
    )


def _component_spans(
    part: Partition, rows: np.ndarray, first_us: np.ndarray, last_us: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per component, the earliest first and latest last seen (µs) over the sightings ``rows``."""
    comp = part.comp[rows]
    earliest = np.full(part.n_comps, np.iinfo(np.int64).max, np.int64)
    latest = np.full(part.n_comps, np.iinfo(np.int64).min, np.int64)
    np.minimum.at(earliest, comp, first_us[rows])
    np.maximum.at(latest, comp, last_us[rows])
    return earliest, latest


def _new_rows(
    part: Partition,
    simple_creators: np.ndarray,
    ids: list[str],
    person_of_comp: np.ndarray,
    first_us: np.ndarray,
    last_us: np.ndarray,
    types: list[str],
) -> NewRows:
    """The simple components' persons (first / last seen over their sightings) and identities."""
    earliest, latest = _component_spans(part, np.flatnonzero(~part.in_graph & ~part.known_rows), first_us, last_us)
    created = part.comp[simple_creators]
    identities = []
    for r, t in enumerate(types):
        codes = np.arange(part.offsets[r], part.offsets[r + 1])
        keep = ~part.hard[part.label[codes]]
        codes = codes[keep]
        identities.append(
            (
                t,
                part.dictionaries[r].filter(pa.array(keep)),
                person_of_comp[part.label[codes]],
                first_us[part.first_seq[codes]],
            )
        )
    return NewRows(ids, earliest[created], latest[created], identities)


def _components(seq: np.ndarray, code: np.ndarray, n_keys: int) -> tuple[int, np.ndarray]:
    """Connected components of the identity codes; consecutive occurrences of one sighting link."""
    if not n_keys:
        return 0, np.zeros(0, np.int64)
    linked = seq[1:] == seq[:-1]
    edges = coo_array(
        (np.ones(int(linked.sum()), np.int8), (code[:-1][linked], code[1:][linked])), shape=(n_keys, n_keys)
    )
    n_comps, label = connected_components(edges, directed=False)
    return int(n_comps), label.astype(np.int64)


def _stored(
    conn: Connection, types: list[str], dictionaries: list[pa.Array], n_keys: int, offsets: list[int]
) -> tuple[np.ndarray, pa.Array]:
    """The codes of the batch's identities that the ops store holds, and their persons (aligned).

    Up to :data:`SCAN_ABOVE` distinct identities they are looked up in IN lists, past it each type's
    stored values are read in one pass; either way straight from the driver's cursor (no per-row
    objects) and matched to the batch's codes with a hash lookup.
    """
    none = (np.zeros(0, np.int64), pa.array([], pa.string()))
    if conn.exec_driver_sql("SELECT 1 FROM identities LIMIT 1").first() is None:
        return none
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    code_parts: list[np.ndarray] = []
    person_parts: list[pa.Array] = []
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]  # rows as plain tuples
    try:
        for r, t in enumerate(types):
            if n_keys > SCAN_ABOVE:
                cursor.execute(f"SELECT value, person_id FROM identities WHERE type = {mark}", (t,))
                rows = cursor.fetchall()
            else:
                values = dictionaries[r].to_pylist()
                rows = []
                for i in range(0, len(values), _CHUNK):
                    part = values[i : i + _CHUNK]
                    marks = ", ".join([mark] * len(part))
                    cursor.execute(
                        f"SELECT value, person_id FROM identities WHERE type = {mark} AND value IN ({marks})",
                        (t, *part),
                    )
                    rows += cursor.fetchall()
            if not rows:
                continue
            # The rows as one struct array: pyarrow reads the tuples 6× faster than two columns zipped apart.
            pairs = pa.array(rows, _VALUE_PERSON)
            at = pc.index_in(pairs.field(0), value_set=dictionaries[r])
            hit = at.is_valid()
            code_parts.append(at.filter(hit).to_numpy().astype(np.int64) + offsets[r])
            person_parts.append(pairs.field(1).filter(hit))
    finally:
        cursor.close()
    if not code_parts:
        return none
    return np.concatenate(code_parts), pa.concat_arrays(person_parts)


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _keys(types: list[str], columns: list[list[str | None]], rows: int) -> list[list[Key]]:
    """The (type, value) keys of each of ``rows`` rows, in priority order, absent values left out."""
    if not columns:
        return [[] for _ in range(rows)]
    return [[(t, v) for t, v in zip(types, row, strict=True) if v is not None] for row in zip(*columns, strict=True)]
