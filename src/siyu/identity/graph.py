"""The identity graph: resolves each message's identities to one person, merging when allowed.

Rules (after Segment Unify):

* identities are handled in priority order (``Settings.identity_priority``);
* the person owning the highest-priority known identity is the message's person;
* another known identity owned by a different person merges that person into this one, unless
  the merged person would hold more values of some type than ``Settings.identity_limits``
  allows; such a merge is **refused and logged**, never silently applied;
* an unknown identity is attached to the message's person unless that breaks a limit (refused
  and logged); a message with only unknown identities creates a new person;
* merge chains resolve fully: every identity of a merged person moves to the survivor, and
  ``persons.merged_into`` always names the final survivor.

The graph works on an in-memory working set for one batch: :meth:`IdentityGraph.load` reads the
identities a batch touches, :meth:`IdentityGraph.resolve` runs per message, and the caller writes
the outcome (``new_persons``, ``new_identities``, ``merges``, ``refusals``) in its transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from siyu.ids import IdSource
from siyu.store.ops.schema import identities

Key = tuple[str, str]

_ANY_IDENTITY = select(identities.c.type).limit(1)
_ALL_IDENTITIES = select(identities.c.type, identities.c.value, identities.c.person_id)


def _in_list(conn: Connection, head: str, values: Sequence[str], *first: str) -> list[Any]:
    """Rows of ``head`` (ending in ``IN``; ``{mark}`` for parameters before it) over ``values``.

    A raw statement with one placeholder per value: SQLAlchemy's expanding IN renders a bind name
    per value on every call, which cost more CPU than the query itself for 5,000-value chunks.
    """
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = head.format(mark=mark) + " (" + ", ".join([mark] * len(values)) + ")"
    return list(conn.exec_driver_sql(sql, (*first, *values)).all())


@dataclass(frozen=True)
class IdentityRules:
    """Priority order and per-type limits."""

    priority: tuple[str, ...]
    limits: dict[str, int]
    _order: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: sort() runs for every message of the row path.
        object.__setattr__(self, "_order", {t: i for i, t in enumerate(self.priority)})

    def sort(self, keys: Iterable[Key]) -> list[Key]:
        """Keys in priority order, duplicates removed."""
        order = self._order
        return sorted(set(keys), key=lambda k: (order[k[0]], k[1]))


@dataclass
class Merge:
    """One merge decision: applied, or refused with the reason."""

    status: str
    from_person_id: str
    into_person_id: str
    reason: str
    message_id: str | None
    identities: list[Key]
    at: datetime


@dataclass
class IdentityGraph:
    """Working set of the identity graph for one batch of messages."""

    rules: IdentityRules
    make_id: Callable[[], str] = field(default_factory=IdSource)
    owner: dict[Key, str] = field(default_factory=dict)
    held: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    new_persons: dict[str, datetime] = field(default_factory=dict)
    new_identities: dict[Key, tuple[str, datetime]] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    refusals: list[Merge] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Types that take no value at all: a new person holding one of them needs the checked path.
        self._zero_limits = frozenset(t for t, n in self.rules.limits.items() if n < 1)

    # -- loading ------------------------------------------------------------------------------
    def load(self, conn: Connection, keys: Iterable[Key], chunk: int = 5000, scan_above: int = 20_000) -> None:
        """Read the owners of ``keys`` and every identity of those owners.

        Past ``scan_above`` keys one pass over the identity table beats many IN lists.
        """
        if conn.execute(_ANY_IDENTITY).first() is None:
            return  # an empty store (a first import) knows none of them: skip collecting the keys
        wanted = {k for k in keys if k not in self.owner}
        if len(wanted) > scan_above:
            owners = {p for t, v, p in conn.execute(_ALL_IDENTITIES).yield_per(50_000) if (t, v) in wanted}
            self.load_persons(conn, owners)
            return
        if not wanted:
            return
        by_type: dict[str, list[str]] = {}
        for t, v in wanted:
            by_type.setdefault(t, []).append(v)
        if len(wanted) <= chunk:
            self._load_owners_at_once(conn, by_type)
            return
        persons: set[str] = set()
        for t, values in by_type.items():
            for i in range(0, len(values), chunk):
                part = values[i : i + chunk]
                rows = _in_list(conn, "SELECT person_id FROM identities WHERE type = {mark} AND value IN", part, t)
                persons.update(r[0] for r in rows)
        self.load_persons(conn, persons)

    def _load_owners_at_once(self, conn: Connection, by_type: dict[str, list[str]]) -> None:
        """:meth:`load` of a few keys (an API batch) in one statement: the owners' identities."""
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        owners = " UNION ".join(
            f"SELECT person_id FROM identities WHERE type = {mark} AND value IN ({', '.join([mark] * len(values))})"
            for values in by_type.values()
        )
        params = [x for t, values in by_type.items() for x in (t, *values)]
        rows = conn.exec_driver_sql(
            f"SELECT type, value, person_id FROM identities WHERE person_id IN ({owners})", tuple(params)
        ).all()
        owner, held = self.owner, self.held
        known = set(held)  # persons already in the working set keep what it says of them
        for t, v, p in rows:
            if p not in known:
                owner[(t, v)] = p
                held.setdefault(p, {}).setdefault(t, set()).add(v)

    def load_persons(self, conn: Connection, person_ids: Iterable[str], chunk: int = 5000) -> None:
        """Read every identity of the given persons into the working set."""
        todo = [p for p in set(person_ids) if p not in self.held]
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            for p in part:
                self.held[p] = {}
            for t, v, p in _in_list(conn, "SELECT type, value, person_id FROM identities WHERE person_id IN", part):
                self.owner[(t, v)] = p
                self.held[p].setdefault(t, set()).add(v)

    def seed(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Add known ``(type, value, person_id)`` rows directly (bulk paths that read them once)."""
        for t, v, p in rows:
            self.owner[(t, v)] = p
            self.held.setdefault(p, {}).setdefault(t, set()).add(v)

    # -- resolution ---------------------------------------------------------------------------
    def find(self, person_id: str) -> str:
        """The surviving person for ``person_id`` (after merges in this working set)."""
        root = person_id
        while root in self.parent:
            root = self.parent[root]
        while person_id != root:  # path compression
            nxt = self.parent[person_id]
            self.parent[person_id] = root
            person_id = nxt
        return root

    def resolve(self, keys: list[Key], at: datetime, message_id: str | None = None) -> str:
        """The person for one message's identities (``keys`` must be in priority order)."""
        owner = self.owner
        parent = self.parent
        person: str | None = None
        unknown: list[Key] | None = None
        for key in keys:
            found = owner.get(key)
            if found is None:
                if unknown is None:
                    unknown = [key]
                else:
                    unknown.append(key)
                continue
            if found in parent:
                found = self.find(found)
            if person is None or found == person:
                person = found
                continue
            self._merge(found, person, keys, at, message_id)
        if person is not None and unknown is None:
            return person  # every identity known: nothing to attach
        unknown = unknown or []
        entry: tuple[str, datetime]
        if person is None:
            person = self.make_id()
            self.new_persons[person] = at
            entry = (person, at)
            # Fast path (most messages of a first import): a new person whose identities all have
            # different types cannot break a limit of one or more, so attach them all at once.
            # Anything else (two values of one type, a zero limit) takes the checked path below.
            if len(unknown) == 1:  # the commonest message of all: one new identity
                key = unknown[0]
                if key[0] not in self._zero_limits:
                    self.held[person] = {key[0]: {key[1]}}
                    owner[key] = person
                    self.new_identities[key] = entry
                    return person
            types = {t for t, _ in unknown}
            if len(types) == len(unknown) and not (types & self._zero_limits):
                self.held[person] = {t: {v} for t, v in unknown}
                new_identities = self.new_identities
                for key in unknown:
                    owner[key] = person
                    new_identities[key] = entry
                return person
            self.held[person] = {}
        else:
            entry = (person, at)
        held = self.held[person]
        limits = self.rules.limits
        for key in unknown:
            t, v = key
            values = held.setdefault(t, set())
            if len(values) >= limits.get(t, 1_000_000):
                self.refusals.append(
                    Merge(
                        "refused",
                        "",
                        person,
                        f"{t}={v} not attached: the person already has {len(values)} {t} value(s) (limit {limits[t]})",
                        message_id,
                        list(keys),
                        at,
                    )
                )
                continue
            values.add(v)
            owner[key] = person
            self.new_identities[key] = entry
        return person

    def _merge(self, other: str, person: str, keys: list[Key], at: datetime, message_id: str | None) -> None:
        mine, theirs = self.held[person], self.held[other]
        for t, values in theirs.items():
            combined = len(values | mine.get(t, set()))
            limit = self.rules.limits.get(t, 1_000_000)
            if combined > limit:
                self.refusals.append(
                    Merge(
                        "refused",
                        other,
                        person,
                        f"merge refused: together the two persons would hold {combined} {t} values (limit {limit})",
                        message_id,
                        list(keys),
                        at,
                    )
                )
                return
        for t, values in theirs.items():
            mine.setdefault(t, set()).update(values)
            for v in values:
                self.owner[(t, v)] = person
                if (t, v) in self.new_identities:
                    self.new_identities[(t, v)] = (person, self.new_identities[(t, v)][1])
        del self.held[other]
        self.parent[other] = person
        shared = [k for k in keys if self.owner.get(k) == person]
        self.merges.append(
            Merge(
                "applied",
                other,
                person,
                "identities seen together in one message: " + ", ".join(f"{t}={v}" for t, v in shared),
                message_id,
                list(keys),
                at,
            )
        )
