"""Event tags: "when an event NAME arrives whose property P op V, add tag T" (事件标签).

Rules live in the ops store (``event_tag_rules``). After each committed ingest batch the
ingestor hands the batch's new events to :class:`EventTagger`, which adds the tags through the
tag service (source ``event``, ``by`` = ``event_rule:<rule id>``, at the event's time). Supported:
one condition on a **top-level** property — ``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=`` (numbers
with numbers, text with text), ``contains`` / ``not contains`` (an element of a list property,
or a substring of a text one), ``in`` (the value is a list), ``is set``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, delete, select

from siyu.ids import new_id
from siyu.segments import Catalogue, SegmentValidationError, check
from siyu.segments.nodes import Compare, CompareOp, Did, Ever, FieldCondition, FieldRef, InList, IsSet
from siyu.store.ops.schema import event_tag_rules, persons, tags
from siyu.tags import catalog
from siyu.tags.errors import ACTOR_LIMIT, TagError, TagNotFound, check_text
from siyu.tags.holders import TagRef, Why, set_person_tags
from siyu.timeutil import as_utc

log = logging.getLogger(__name__)

#: (rule id, event name, (property, op, value), tag)
Rule = tuple[str, str, tuple[str, str, Any], TagRef]
OPS = ("=", "!=", ">", ">=", "<", "<=", "contains", "not contains", "in", "is set")
MAX_RULES = 500
_VALUE_CHARS = 256


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same_kind(a: Any, b: Any) -> bool:
    return (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))


def matches(props: dict[str, Any], prop: str, op: str, value: Any) -> bool:
    """Whether an event's properties satisfy one rule condition (missing properties never match)."""
    if prop not in props or props[prop] is None:
        return False
    v = props[prop]
    if op == "is set":
        return True
    if op in ("=", "!="):
        equal = (_same_kind(v, value) and v == value) or (isinstance(v, bool) and v is value)
        return equal if op == "=" else not equal
    if op in (">", ">=", "<", "<="):
        if not _same_kind(v, value):
            return False
        return {">": v > value, ">=": v >= value, "<": v < value, "<=": v <= value}[op]
    if op in ("contains", "not contains"):
        if isinstance(v, list) or (isinstance(v, str) and isinstance(value, str)):
            found = value in v
        else:
            return False
        return found if op == "contains" else not found
    if op == "in":
        return any((_same_kind(v, x) and v == x) or (isinstance(v, bool) and v is x) for x in value)
    return False


def check_rule(event: object, prop: object, op: object, value: Any) -> tuple[str, str, str, Any]:
    """The rule's parts checked; a :class:`TagError` names what is wrong."""
    name = check_text("event", event, 128)
    key = check_text("property", prop, 128)
    assert name is not None and key is not None
    if op not in OPS:
        raise TagError(f"op: 不支持的运算 must be one of {', '.join(OPS)}, not {op!r}")
    scalar = (str, int, float, bool)
    if op == "is set":
        value = True
    elif op == "in":
        if not isinstance(value, list) or not value or len(value) > 100:
            raise TagError("value: `in` takes a list of 1–100 values")
        if any(not isinstance(x, scalar) for x in value):
            raise TagError("value: `in` takes a list of texts or numbers")
    elif not isinstance(value, scalar):
        raise TagError("value: must be a text, a number or true/false")
    elif op in (">", ">=", "<", "<=") and isinstance(value, bool):
        raise TagError(f"value: `{op}` compares numbers or texts, not true/false")
    if len(orjson.dumps(value)) > _VALUE_CHARS * 4 or (isinstance(value, str) and len(value) > _VALUE_CHARS):
        raise TagError(f"value: at most {_VALUE_CHARS} characters")
    for s in value if isinstance(value, list) else [value]:
        if isinstance(s, str) and any(ord(c) < 32 for c in s):
            raise TagError("value: must not contain control characters 不能包含控制字符")
    return name, key, str(op), value


def check_known(catalogue: Catalogue, event: str, prop: str, op: str, value: Any) -> None:
    """Refuse (:class:`TagError`) a rule that could never fire: an event the stores have not seen, a
    property that event does not have (each with "did you mean" suggestions), an operator the
    property's type does not take, or a value of another type. The rule is checked as the segment
    condition it is, ``did EVENT where PROP op VALUE``, against ``catalogue`` (the one segments are
    checked with), so rules and segments accept the same things."""
    field = FieldRef(prop, "property")
    condition: FieldCondition
    if op == "is set":
        condition = IsSet(field)
    elif op == "in":
        condition = InList(field, tuple(value))
    else:
        condition = Compare(field, cast(CompareOp, op), value)
    problems = check(Did(event, Ever(), where=(condition,)), catalogue)
    if problems:
        raise TagError(f"{SegmentValidationError(problems)}: the rule would never fire 该规则永远不会触发")


def add_rule(
    conn: Connection, event: str, prop: str, op: str, value: Any, tag: str, *, by: str, at: datetime
) -> dict[str, Any]:
    """Store a rule (the tag must exist and not be a rule tag)."""
    name, key, op, value = check_rule(event, prop, op, value)
    actor = check_text("by", by, ACTOR_LIMIT)
    ref = catalog.tag_named(conn, tag)
    if ref.kind == "rule":
        raise TagError(f"tag {ref.name!r} is a rule tag: its segment rule keeps it current")
    rows = conn.execute(select(event_tag_rules)).all()
    if len(rows) >= MAX_RULES:
        raise TagError(f"at most {MAX_RULES} event-tag rules")
    for r in rows:
        if (r.event_name, r.property, r.op, r.value, r.tag_id) == (name, key, op, value, ref.id):
            return _public(r, ref.name)  # the same rule again: idempotent
    rule_id = new_id()
    conn.execute(
        event_tag_rules.insert().values(
            id=rule_id,
            event_name=name,
            property=key,
            op=op,
            value=value,
            tag_id=ref.id,
            created_at=at,
            created_by=actor,
        )
    )
    row = conn.execute(select(event_tag_rules).where(event_tag_rules.c.id == rule_id)).one()
    return _public(row, ref.name)


def _public(row: Any, tag: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "event": row.event_name,
        "property": row.property,
        "op": row.op,
        "value": row.value,
        "tag": tag,
        "created_at": as_utc(row.created_at).isoformat(),
        "created_by": row.created_by,
    }


def list_rules(conn: Connection) -> list[dict[str, Any]]:
    """Every rule, oldest first."""
    rows = conn.execute(
        select(event_tag_rules, tags.c.name.label("tag_name"))
        .join(tags, tags.c.id == event_tag_rules.c.tag_id)
        .order_by(event_tag_rules.c.created_at, event_tag_rules.c.id)
    ).all()
    return [_public(r, r.tag_name) for r in rows]


def remove_rule(conn: Connection, rule_id: str) -> None:
    """Delete a rule (tags it added stay)."""
    if conn.execute(delete(event_tag_rules).where(event_tag_rules.c.id == rule_id)).rowcount == 0:
        raise TagNotFound(f"no event-tag rule {rule_id[:64]!r}")


class EventTagger:
    """The ingestor's after-commit hook applying event-tag rules to a batch's new events.

    Rules are cached and reloaded after :meth:`invalidate` (the tag service calls it when rules
    change; the CLI cannot change them while a server holds the stores).
    """

    def __init__(self, service: Any) -> None:
        self.service = service  # a TagService (typed loosely: the service module imports this one)
        self._rules: list[Rule] | None = None

    def invalidate(self) -> None:
        """Reload the rules before the next batch."""
        self._rules = None

    def rules(self) -> list[Rule]:
        """(rule id, event, property, op, value, tag) of every rule, cached."""
        rules = self._rules
        if rules is None:
            with self.service.ingestor.engine.connect() as conn:
                rows = conn.execute(
                    select(event_tag_rules, tags.c.name, tags.c.group_name, tags.c.kind).join(
                        tags, tags.c.id == event_tag_rules.c.tag_id
                    )
                ).all()
            rules = [
                (r.id, r.event_name, (r.property, r.op, r.value), TagRef(r.tag_id, r.name, r.group_name, r.kind))
                for r in rows
            ]
            self._rules = rules
        return rules

    def watched(self) -> frozenset[str]:
        """Event names some rule looks at."""
        return frozenset(r[1] for r in self.rules())

    def __call__(self, events: pa.Table) -> int:
        """Apply the rules to ``events`` (columns event_id, person_id, name, ts, properties)."""
        names = self.watched()
        if not names or events.num_rows == 0:
            return 0
        mask = pc.is_in(events.column("name"), value_set=pa.array(sorted(names), pa.string()))
        picked = events.filter(mask).select(["event_id", "person_id", "name", "ts", "properties"]).to_pylist()
        if not picked:
            return 0
        by_event: dict[str, list[Rule]] = {}
        for rule in self.rules():
            by_event.setdefault(rule[1], []).append(rule)
        # (rule id, tag) → [(person, event time, event id)]
        hits: dict[tuple[str, TagRef], list[tuple[str, datetime, str]]] = {}
        for e in picked:
            props = orjson.loads(e["properties"]) if e["properties"] else {}
            if not isinstance(props, dict) or not e["person_id"]:
                continue
            for rule_id, _, (prop, op, value), tag in by_event.get(e["name"], []):
                if matches(props, prop, op, value):
                    hits.setdefault((rule_id, tag), []).append((e["person_id"], as_utc(e["ts"]), e["event_id"]))
        if not hits:
            return 0
        return int(self.service.run_writes(lambda conn: _tag_hits(conn, hits)))


def _tag_hits(conn: Connection, hits: dict[tuple[str, TagRef], list[tuple[str, datetime, str]]]) -> int:
    """Add the matched tags at person level, each at its first matching event's time."""
    people = sorted({p for found in hits.values() for p, _, _ in found})
    current: dict[str, str] = {}
    for i in range(0, len(people), 500):
        for pid, merged in conn.execute(
            select(persons.c.id, persons.c.merged_into).where(persons.c.id.in_(people[i : i + 500]))
        ):
            current[pid] = merged or pid
    changed = 0
    for (rule_id, tag), found in hits.items():
        firsts: dict[str, tuple[datetime, str]] = {}
        for person, at, event_id in sorted(found, key=lambda x: x[1]):
            pid = current.get(person)
            if pid is not None and pid not in firsts:
                firsts[pid] = (at, event_id)
        for pid, (at, event_id) in firsts.items():
            why = Why(f"event_rule:{rule_id}", f"event {event_id}", "event", at)
            changed += set_person_tags(conn, tag, [pid], add=True, why=why)
    return changed
