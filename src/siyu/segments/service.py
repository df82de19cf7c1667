"""Segments for one installation: the catalogue read from the stores, and counting a segment.

The catalogue says what a segment may name: traits (with the JSON type most of their values
have), events seen and their properties (typed from a sample), tags, groups (by name and chat id)
and staff. An expression is parsed (text or JSON form), validated against it — unknown names and
type mismatches are errors with suggestions, never an empty result — and compiled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, select

from siyu.runtime import Runtime
from siyu.segments import Catalogue, from_json, parse, validate
from siyu.segments.compile import ISO_DATETIME
from siyu.segments.engine import SegmentEngine
from siyu.segments.nodes import Node
from siyu.segments.saved import SavedSegments
from siyu.segments.validate import BUILTIN_EVENTS, LIST_ELEMENT_TYPES
from siyu.store.events import EventStore
from siyu.store.ops.schema import groups, segments, staff, tags

#: JSON types (DuckDB's ``json_type``) as catalogue field types.
_JSON_TYPES = {
    "VARCHAR": "string",
    "BIGINT": "integer",
    "UBIGINT": "integer",
    "DOUBLE": "number",
    "BOOLEAN": "boolean",
    "ARRAY": "list",
}

#: Events sampled to type event properties.
PROPERTY_SAMPLE = 200_000


def _majority(counts: Mapping[tuple[str, str], int]) -> dict[str, str]:
    """Per name, the field type most values have (integers and decimals together are a number)."""
    by_name: dict[str, Counter[str]] = {}
    for (name, json_type), n in counts.items():
        kind = _JSON_TYPES.get(json_type)
        if kind is not None:
            by_name.setdefault(name, Counter())[kind] += n
    out = {}
    for name, kinds in by_name.items():
        kind = kinds.most_common(1)[0][0]
        if kind == "integer" and kinds.get("number"):
            kind = "number"
        out[name] = kind
    return out


def _element_types(types: dict[str, str], counts: Mapping[tuple[str, str], int]) -> None:
    """Turn each ``list`` in ``types`` into ``list<…>`` when every element seen (``counts``: per
    name and JSON type of an element) has one scalar type; a list holding mixed, nested or no
    elements stays a plain ``list``, which ``contains`` takes any value for."""
    kinds: dict[str, set[str]] = {}
    for (name, json_type), _ in counts.items():
        kind = _JSON_TYPES.get(json_type, "other")
        kinds.setdefault(name, set()).add("other" if kind == "list" else kind)
    for name, seen in kinds.items():
        if types.get(name) != "list":
            continue
        if seen == {"integer", "number"}:
            seen = {"number"}
        if len(seen) == 1 and (kind := next(iter(seen))) in LIST_ELEMENT_TYPES:
            types[name] = f"list<{kind}>"


class Stores(Protocol):
    """Both stores of an installation (a :class:`~siyu.runtime.Runtime`, or its ingestor)."""

    engine: Engine
    events: EventStore


def read_catalogue(runtime: Stores) -> tuple[Catalogue, dict[str, tuple[str, ...]]]:
    """What exists in the stores now (see the module docstring), and group name → chat ids."""
    cur = runtime.events.cursor()
    trait_types = _majority(
        {
            (k, t): n
            for k, t, n in cur.execute(
                "SELECT key, json_type(value::JSON), count(*) FROM trait_state GROUP BY ALL"
            ).fetchall()
        }
    )
    # Text traits whose values are (nearly) all ISO dates are dates: `birthday < "2000-01-01"`.
    dated = cur.execute(
        """SELECT key FROM trait_state WHERE value_str IS NOT NULL GROUP BY key
           HAVING count(*) FILTER (WHERE regexp_full_match(value_str, $iso)) >= 0.9 * count(*)""",
        {"iso": ISO_DATETIME.strip("^$")},
    ).fetchall()
    for (key,) in dated:
        if trait_types.get(key) == "string":
            trait_types[key] = "datetime"
    _element_types(
        trait_types,
        {
            (k, t): n
            for k, t, n in cur.execute(
                """SELECT key, json_type(e), count(*)
                   FROM (SELECT key, unnest(value::JSON::JSON[]) AS e FROM trait_state
                         WHERE json_type(value::JSON) = 'ARRAY')
                   GROUP BY ALL"""
            ).fetchall()
        },
    )
    names = [r[0] for r in cur.execute("SELECT DISTINCT name FROM events").fetchall()]
    # Each sampled property value, and (``e``) each element of the arrays among them.
    sampled = cur.execute(
        f"""WITH v AS (
                SELECT name, k, json_extract(properties, '$."' || replace(k, '"', '') || '"') AS j
                FROM (SELECT name, properties, unnest(json_keys(properties)) AS k
                      FROM (SELECT name, properties FROM events
                            WHERE properties IS NOT NULL AND json_type(properties) = 'OBJECT'
                            USING SAMPLE {PROPERTY_SAMPLE} ROWS)))
            SELECT name, k, false AS element, json_type(j), count(*) FROM v GROUP BY ALL
            UNION ALL
            SELECT name, k, true, json_type(e), count(*)
            FROM (SELECT name, k, unnest(j::JSON[]) AS e FROM v WHERE json_type(j) = 'ARRAY')
            GROUP BY ALL"""
    ).fetchall()
    per_event: dict[str, dict[tuple[str, str], int]] = {}
    elements: dict[str, dict[tuple[str, str], int]] = {}
    for name, key, element, json_type, n in sampled:
        (elements if element else per_event).setdefault(name, {})[(key, json_type)] = n
    events: dict[str, dict[str, str]] = {name: dict(BUILTIN_EVENTS.get(name, {})) for name in names}
    for name, counts in per_event.items():
        typed = _majority(counts)
        _element_types(typed, elements.get(name, {}))
        events.setdefault(name, {}).update({k: v for k, v in typed.items() if k not in BUILTIN_EVENTS.get(name, {})})
    with runtime.engine.connect() as conn:
        tag_names = [r[0] for r in conn.execute(select(tags.c.name))]
        group_rows = conn.execute(select(groups.c.chat_id, groups.c.name)).all()
        staff_ids = [r[0] for r in conn.execute(select(staff.c.userid))]
        saved = [r[0] for r in conn.execute(select(segments.c.name))]
    held = [r[0] for r in cur.execute("SELECT DISTINCT tag FROM tag_state").fetchall()]
    chats: dict[str, list[str]] = {}
    for chat_id, name in group_rows:
        if name:
            chats.setdefault(name, []).append(chat_id)
    catalogue = Catalogue.from_dict(
        {
            "traits": trait_types,
            "events": events,
            "segments": saved,
            "tags": sorted({*tag_names, *held}),
            "groups": sorted({*(c for c, _ in group_rows), *(n for _, n in group_rows if n)}),
            "staff": staff_ids,
        }
    )
    return catalogue, {name: tuple(sorted(ids)) for name, ids in chats.items()}


class SegmentService:
    """Counting (and listing) segments written by people, on one installation.

    The catalogue is read once and kept for ``catalogue_ttl`` seconds, so a console typing an
    expression gets a fast preview.
    """

    def __init__(self, runtime: Runtime, *, catalogue_ttl: float = 30.0) -> None:
        self.runtime = runtime
        self.catalogue_ttl = catalogue_ttl
        self._catalogue: tuple[float, Catalogue, dict[str, tuple[str, ...]]] | None = None
        self._stale = False

    def catalogue(self, *, fresh: bool = True) -> tuple[Catalogue, dict[str, tuple[str, ...]]]:
        """The catalogue and the group names (cached). ``fresh=False`` accepts any cached copy: a
        refresh compiles definitions validated when they were saved, and reading the catalogue
        costs a pass over the events (≈ 0.5 s at 20M)."""
        now = time.monotonic()
        cached = self._catalogue
        if cached is None or (fresh and (self._stale or now - cached[0] > self.catalogue_ttl)):
            self._catalogue = cached = (now, *read_catalogue(self.runtime))
            self._stale = False
        return cached[1], cached[2]

    def forget_catalogue(self) -> None:
        """Read the catalogue again before the next validation (after a segment or tag was created,
        renamed or deleted — the tag service calls it — or new event names were written)."""
        self._stale = True

    def check_with(self, check: Callable[[Catalogue], None]) -> None:
        """Run ``check`` on the catalogue (cached). If it raises and the catalogue came from the
        cache, read it again and run ``check`` once more: a cached catalogue may predate a new
        event, trait or tag, so only a freshly read one makes the problem real."""
        read_at = self._catalogue[0] if self._catalogue is not None and not self._stale else None
        try:
            check(self.catalogue()[0])
        except ValueError:  # a segment validation error, a tag error: what a check raises
            if read_at is None or self._catalogue is None or self._catalogue[0] != read_at:
                raise  # the catalogue was just read: the problem is real
            self.forget_catalogue()
            check(self.catalogue()[0])

    @property
    def saved(self) -> SavedSegments:
        """The installation's saved segments (a new object per use: a refresh batch holds state)."""
        return SavedSegments(self)

    @staticmethod
    def parse(expression: str | Mapping[str, Any]) -> Node:
        """Parse (text or JSON form) without validating; raises the syntax / JSON errors."""
        return parse(expression) if isinstance(expression, str) else from_json(expression)

    def validate(self, tree: Node) -> None:
        """Validate ``tree`` against the catalogue (see :meth:`check_with`)."""
        self.check_with(lambda catalogue: validate(tree, catalogue))

    def tree(self, expression: str | Mapping[str, Any]) -> Node:
        """Parse (text or JSON form) and validate; raises the segment errors of docs/segments.md."""
        tree = self.parse(expression)
        self.validate(tree)
        return tree

    def engine(self, *, fresh: bool = True) -> SegmentEngine:
        """An engine over the installation's event store (``fresh``: see :meth:`catalogue`)."""
        catalogue, chats = self.catalogue(fresh=fresh)
        definition, static_id = self.saved.references()
        return SegmentEngine(
            self.runtime.events,
            catalogue=catalogue,
            tz=self.runtime.settings.timezone,
            groups=chats,
            segment=definition,
            static_id=static_id,
        )

    def count(self, expression: str | Mapping[str, Any], *, now: datetime | None = None) -> int:
        """How many persons ``expression`` selects."""
        return self.engine().count(self.tree(expression), now=now)

    def members(self, expression: str | Mapping[str, Any], *, now: datetime | None = None) -> set[str]:
        """The persons ``expression`` selects."""
        return self.engine().members(self.tree(expression), now=now)
