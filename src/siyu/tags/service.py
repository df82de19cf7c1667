"""The tag service: the library (groups, tags) and who holds what, through the single-writer path.

Every change of who holds a tag is written in the same ops transaction as its ``tag_added`` /
``tag_removed`` change-feed row (:mod:`siyu.tags.holders`), then the feed is applied to the
event store, as :class:`~siyu.relations.service.RelationService` does.

Renaming a tag writes ``tag_removed`` (old name) then ``tag_added`` (new name) for every holder,
so that the event history, which names tags, stays foldable; deleting one writes ``tag_removed``
for every holder first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, select

from siyu.ingest.pipeline import Ingestor
from siyu.store.feed import apply_changes
from siyu.store.ops.schema import tags
from siyu.tags import catalog, rules
from siyu.tags.errors import ACTOR_LIMIT, REASON_LIMIT, TagConflict, TagError, check_name, check_text
from siyu.tags.holders import SOURCES, TagRef, Why, holders, set_person_tags, set_relation_tags, write_changes
from siyu.tags.targets import Target, resolve
from siyu.tags.view import person_tag_view
from siyu.timeutil import as_utc

T = TypeVar("T")

#: Items of one bulk request (a CSV file or an API call).
MAX_BULK = 100_000


@dataclass(frozen=True)
class TagResult:
    """What a tag request did: how many holders changed, and which persons it concerned."""

    changed: int
    persons: list[str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"changed": self.changed, "persons": self.persons}


def make_why(by: object, reason: object, source: str, at: datetime | None) -> Why:
    """Who, why and how of a tag change, checked (lengths, source); ``at`` defaults to now."""
    actor = check_text("by", by, ACTOR_LIMIT)
    assert actor is not None
    text = check_text("reason", reason, REASON_LIMIT, required=False)
    if source not in SOURCES:
        raise TagError(f"source: must be one of {', '.join(SOURCES)}")
    return Why(actor, text, source, datetime.now(UTC) if at is None else as_utc(at))


class TagService:
    """Tag library and tagging, through the ingestor's single-writer path."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def _run(self, work: Callable[[Connection], T]) -> T:
        with self.ingestor.events.write_lock:
            with self.ingestor.engine.begin() as conn:
                result = work(conn)
            with self.ingestor.events.transaction() as con:
                apply_changes(self.ingestor.engine, self.ingestor.events, con)
        return result

    def run_writes(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one ops transaction, then apply the change feed (the single-writer path)."""
        return self._run(work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self.ingestor.engine.connect() as conn:
            return work(conn)

    # -- the library ----------------------------------------------------------------------------
    def groups(self) -> list[dict[str, Any]]:
        """Tag groups in display order, with their tag counts."""
        return self._read(catalog.list_groups)

    def create_group(self, name: str) -> dict[str, Any]:
        """Create a tag group."""
        return self._run(lambda conn: catalog.create_group(conn, name, datetime.now(UTC)))

    def rename_group(self, old: str, new: str) -> None:
        """Rename a tag group."""
        self._run(lambda conn: catalog.rename_group(conn, old, new))

    def delete_group(self, name: str) -> None:
        """Delete an empty tag group."""
        self._run(lambda conn: catalog.delete_group(conn, name))

    def list_tags(self, group: str | None = None) -> list[dict[str, Any]]:
        """Tags with their group, kind and holder counts."""
        return self._read(lambda conn: catalog.list_tags(conn, group))

    def create_tag(self, name: str, group: str, *, kind: str = "manual", rule: str | None = None) -> dict[str, Any]:
        """Create a tag; its name must be unused in every group."""
        return self._run(lambda conn: catalog.create_tag(conn, name, group, datetime.now(UTC), kind=kind, rule=rule))

    def rename_tag(self, name: str, new_name: str, *, by: str, group: str | None = None) -> dict[str, Any]:
        """Rename a tag (and / or move it to ``group``); holders get ``tag_removed`` + ``tag_added``."""
        new_name = check_name("new name", new_name)
        new_group = check_name("group", group) if group is not None else None
        why = make_why(by, "renamed", "manual", None)

        def work(conn: Connection) -> dict[str, Any]:
            tag = catalog.tag_named(conn, name)
            if new_name != tag.name and conn.execute(select(tags.c.id).where(tags.c.name == new_name)).first():
                raise TagConflict(f"标签名已被使用 tag name {new_name!r} is already used")
            if new_group is not None and not catalog.group_exists(conn, new_group):
                raise TagError(f"未知标签组 unknown group {new_group!r}")
            after = TagRef(tag.id, new_name, new_group or tag.group, tag.kind)
            if after == tag:
                return {"changed": 0}
            persons, rels = holders(conn, tag)
            rows: list[tuple[str, str, TagRef, str | None, Why]] = []
            # The new name is added a microsecond after the old one is removed: events sharing a
            # timestamp have no order, and a fold by tag id must see the removal first.
            later = Why(why.by, why.reason, why.source, why.at + timedelta(microseconds=1))
            for kind, ref, w in (("tag_removed", tag, why), ("tag_added", after, later)):
                rows += [(kind, p, ref, None, w) for p in persons]
                rows += [(kind, r.person_id, ref, r.staff_userid, w) for r in rels]
            catalog.set_tag_row(conn, tag, name=new_name, group=new_group)
            self._rules_changed()
            return {"changed": write_changes(conn, rows) // 2}

        return self._run(work)

    def delete_tag(self, name: str, *, by: str) -> dict[str, Any]:
        """Delete a tag: ``tag_removed`` for every holder, then its rows and event rules."""
        why = make_why(by, "tag deleted", "manual", None)

        def work(conn: Connection) -> dict[str, Any]:
            tag = catalog.tag_named(conn, name)
            self._rules_changed()
            persons, rels = holders(conn, tag)
            changed = set_person_tags(conn, tag, persons, add=False, why=why)
            changed += set_relation_tags(conn, tag, rels, add=False, why=why)
            catalog.delete_tag_row(conn, tag)
            return {"deleted": tag.name, "removed_from": changed}

        return self._run(work)

    # -- tagging --------------------------------------------------------------------------------
    def tag(
        self,
        tag: str,
        targets: Sequence[Target],
        *,
        add: bool = True,
        by: str,
        reason: str | None = None,
        source: str = "manual",
        at: datetime | None = None,
        positions: Sequence[int] | None = None,
    ) -> TagResult:
        """Add (or remove) ``tag`` for every target, all or nothing.

        Any unknown person, staff member or relation fails the whole request with a
        :class:`TagError` listing each problem (by ``positions`` when given, else index).
        """
        if len(targets) > MAX_BULK:
            raise TagError(f"too many items: {len(targets):,}; at most {MAX_BULK:,} a request 一次最多 {MAX_BULK:,} 条")
        if not targets:
            raise TagError("no items to tag 没有要打标签的对象")
        why = make_why(by, reason, source, at)
        screen = self.ingestor.validator.screen

        def work(conn: Connection) -> TagResult:
            ref = catalog.tag_named(conn, tag)
            if ref.kind == "rule" and source != "rule":
                raise TagError(f"规则标签由规则维护 tag {ref.name!r} is a rule tag: its segment rule keeps it current")
            found = resolve(conn, targets, screen, positions=positions)
            if found.errors:
                n, first = len(found.errors), found.errors[0]
                where = f"line {first['line']}" if "line" in first else f"item {first['index']}"
                message = f"{n} item(s) cannot be tagged, nothing was written 未写入任何数据; first: {where}, "
                raise TagError(message + f"{first['column']}: {first['reason']}", found.errors[:200])
            changed = set_person_tags(conn, ref, found.persons, add=add, why=why)
            changed += set_relation_tags(conn, ref, found.relations, add=add, why=why)
            people = list(dict.fromkeys([*found.persons, *(r.person_id for r in found.relations)]))
            return TagResult(changed, people)

        return self._run(work)

    def add(self, tag: str, person: str, *, staff: str | None = None, by: str, reason: str | None = None) -> TagResult:
        """Add a tag to one person (person-level), or to their relation with ``staff``."""
        return self.tag(tag, [Target(person=person, staff_userid=staff)], by=by, reason=reason)

    def remove(
        self, tag: str, person: str, *, staff: str | None = None, by: str, reason: str | None = None
    ) -> TagResult:
        """Remove a tag from one person (person-level), or from their relation with ``staff``."""
        return self.tag(tag, [Target(person=person, staff_userid=staff)], add=False, by=by, reason=reason)

    # -- event tags -----------------------------------------------------------------------------
    def add_rule(self, event: str, prop: str, op: str, value: Any, tag: str, *, by: str) -> dict[str, Any]:
        """Store an event-tag rule (:mod:`siyu.tags.rules`); adding the same rule again returns it."""
        created = self._run(lambda conn: rules.add_rule(conn, event, prop, op, value, tag, by=by, at=datetime.now(UTC)))
        self._rules_changed()
        return created

    def list_rules(self) -> list[dict[str, Any]]:
        """Every event-tag rule."""
        return self._read(rules.list_rules)

    def remove_rule(self, rule_id: str) -> None:
        """Delete an event-tag rule (tags it added stay)."""
        self._run(lambda conn: rules.remove_rule(conn, rule_id))
        self._rules_changed()

    def _rules_changed(self) -> None:
        for hook in self.ingestor.event_hooks:
            if isinstance(hook, rules.EventTagger):
                hook.invalidate()

    def person_tags(self, person_id: str) -> list[dict[str, Any]]:
        """The person-level tag view: tags held by the person or any of their relations."""
        return self._read(lambda conn: person_tag_view(conn, person_id))
