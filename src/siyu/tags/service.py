"""The tag service: the library (groups, tags) and who holds what, through the single-writer path.

Every change of who holds a tag is written in the same ops transaction as its ``tag_added`` /
``tag_removed`` change-feed row (:mod:`siyu.tags.holders`), then the feed is applied to the
event store, as :class:`~siyu.relations.service.RelationService` does.

Renaming a tag writes ``tag_removed`` (old name) then ``tag_added`` (new name) for every holder,
so that the event history, which names tags, stays foldable, and rewrites the saved segments and
rule tags that test it (``has tag``) in the same transaction; deleting one writes ``tag_removed``
for every holder first, and is refused while a saved segment or a rule tag tests it.

Given the installation's segment service, the service tells it when the tag library changed, so
that the next segment validation reads the tags again (an API server caches them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, select, update

from siyu.ingest.pipeline import Ingestor
from siyu.segments import DEFAULT_LIMITS, to_text
from siyu.store.feed import apply_changes
from siyu.store.ops.schema import segments, tags
from siyu.tags import catalog, references, rules
from siyu.tags.errors import ACTOR_LIMIT, REASON_LIMIT, TagConflict, TagError, check_name, check_text
from siyu.tags.holders import SOURCES, TagRef, Why, holders, set_person_tags, set_relation_tags, write_changes
from siyu.tags.targets import Target, resolve
from siyu.tags.view import person_tag_view
from siyu.timeutil import as_utc

if TYPE_CHECKING:
    from siyu.segments.service import SegmentService

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
    """Tag library and tagging, through the ingestor's single-writer path.

    ``segments`` is the installation's segment service, when there is one (the API server's and the
    CLI's): its catalogue checks event-tag rules, and is read again after the tag library changes.
    Without it, rules are checked against a catalogue read from the stores.
    """

    def __init__(self, ingestor: Ingestor, *, segments: SegmentService | None = None) -> None:
        self.ingestor = ingestor
        self.segments = segments

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

    def rename_group(self, old: str, new: str) -> dict[str, Any]:
        """Rename a tag group (its tags move with it); the renamed group."""
        return self._run(lambda conn: catalog.rename_group(conn, old, new))

    def delete_group(self, name: str) -> None:
        """Delete an empty tag group."""
        self._run(lambda conn: catalog.delete_group(conn, name))

    def list_tags(self, group: str | None = None) -> list[dict[str, Any]]:
        """Tags with their group, kind and holder counts."""
        return self._read(lambda conn: catalog.list_tags(conn, group))

    def create_tag(self, name: str, group: str, *, kind: str = "manual", rule: str | None = None) -> dict[str, Any]:
        """Create a tag; its name must be unused in every group."""
        created = self._run(lambda conn: catalog.create_tag(conn, name, group, datetime.now(UTC), kind=kind, rule=rule))
        self._library_changed()
        return created

    def rename_tag(
        self, name: str, new_name: str | None = None, *, by: str, group: str | None = None
    ) -> dict[str, Any]:
        """Rename a tag (and / or move it to ``group``); holders get ``tag_removed`` + ``tag_added``.

        Saved segments and rule tags that test the tag are rewritten to the new name in the same
        transaction, so their members do not change. Refused (:class:`TagConflict`, nothing written)
        when a definition filters ``$tag_added`` / ``$tag_removed`` events by the old name.
        """
        if new_name is None and group is None:
            raise TagError("give a new name, a new group, or both 请给出新名称或新标签组")
        checked_name = check_name("new name", new_name) if new_name is not None else None
        new_group = check_name("group", group) if group is not None else None
        why = make_why(by, "renamed", "manual", None)

        def work(conn: Connection) -> dict[str, Any]:
            tag = catalog.tag_named(conn, name)
            new = checked_name if checked_name is not None else tag.name
            if new != tag.name and conn.execute(select(tags.c.id).where(tags.c.name == new)).first():
                raise TagConflict(f"标签名已被使用 tag name {new!r} is already used")
            if new_group is not None and not catalog.group_exists(conn, new_group):
                raise TagError(f"未知标签组 unknown group {new_group!r}")
            after = TagRef(tag.id, new, new_group or tag.group, tag.kind)
            if after == tag:
                return {"changed": 0, "rewritten": []}
            rewritten = _carry_rename(conn, tag.name, new, why.at) if new != tag.name else []
            persons, rels = holders(conn, tag)
            rows: list[tuple[str, str, TagRef, str | None, Why]] = []
            # The new name is added a microsecond after the old one is removed: events sharing a
            # timestamp have no order, and a fold by tag id must see the removal first.
            later = Why(why.by, why.reason, why.source, why.at + timedelta(microseconds=1))
            for kind, ref, w in (("tag_removed", tag, why), ("tag_added", after, later)):
                rows += [(kind, p, ref, None, w) for p in persons]
                rows += [(kind, r.person_id, ref, r.staff_userid, w) for r in rels]
            catalog.set_tag_row(conn, tag, name=new, group=new_group)
            return {"changed": write_changes(conn, rows) // 2, "rewritten": rewritten}

        try:
            return self._run(work)
        finally:
            self._rules_changed()
            self._library_changed()

    def delete_tag(self, name: str, *, by: str) -> dict[str, Any]:
        """Delete a tag: ``tag_removed`` for every holder, then its rows and event rules.

        Refused (:class:`TagConflict`, nothing written) while a saved segment or a rule tag tests it.
        """
        why = make_why(by, "tag deleted", "manual", None)

        def work(conn: Connection) -> dict[str, Any]:
            tag = catalog.tag_named(conn, name)
            users = references.Definitions.load(conn).users_of_tag(tag.name)
            if users:
                shown = ", ".join(references.label(u) for u in users)
                raise TagConflict(
                    f'标签 "{tag.name}" 仍被人群或规则标签使用 / tag "{tag.name}" is used by {shown}: '
                    "change or delete them first"
                )
            persons, rels = holders(conn, tag)
            changed = set_person_tags(conn, tag, persons, add=False, why=why)
            changed += set_relation_tags(conn, tag, rels, add=False, why=why)
            catalog.delete_tag_row(conn, tag)
            return {"deleted": tag.name, "removed_from": changed}

        try:
            return self._run(work)
        finally:
            self._rules_changed()
            self._library_changed()

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
        """Store an event-tag rule (:mod:`siyu.tags.rules`); adding the same rule again returns it.

        The event and its property must be known to the stores (the catalogue segments are checked
        against), and the value must fit the property's type; else a :class:`TagError` says what is
        wrong, with "did you mean" suggestions.
        """
        name, key, op, value = rules.check_rule(event, prop, op, value)
        if self.segments is not None:
            self.segments.check_with(lambda cat: rules.check_known(cat, name, key, op, value))
        else:
            from siyu.segments.service import read_catalogue

            rules.check_known(read_catalogue(self.ingestor)[0], name, key, op, value)
        created = self._run(lambda conn: rules.add_rule(conn, name, key, op, value, tag, by=by, at=datetime.now(UTC)))
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

    def _library_changed(self) -> None:
        """The tag names changed: segment validation must not use a cached list of them."""
        if self.segments is not None:
            self.segments.forget_catalogue()

    def person_tags(self, person_id: str) -> list[dict[str, Any]]:
        """The person-level tag view: tags held by the person or any of their relations."""
        return self._read(lambda conn: person_tag_view(conn, person_id))


def _carry_rename(conn: Connection, old: str, new: str, at: datetime) -> list[str]:
    """Rewrite every saved segment and rule tag that tests tag ``old`` to test ``new`` instead (in the
    caller's transaction); the definitions rewritten, as labels. Refused when that is not sound."""
    defs = references.Definitions.load(conn)
    stuck = [ref for ref in defs.refs() if references.names_tag_in_events(defs.definition(ref), old)]
    if stuck:
        shown = ", ".join(references.label(ref) for ref in stuck)
        raise TagConflict(
            f'{shown} 按名称筛选了标签 "{old}" 的变更事件，改名会改变其成员 / {shown} filter '
            f'$tag_added / $tag_removed events by the name "{old}": renaming would change their members; '
            "change them first"
        )
    rewritten: list[str] = []
    for ref in defs.users_of_tag(old):
        tree = references.rename_tag_in(defs.definition(ref), old, new)
        text = to_text(tree)
        # Stored definitions are parsed again on use: the new text must stay within their limits.
        limit = DEFAULT_LIMITS.max_length if ref[0] == "segment" else catalog.RULE_LIMIT
        if len(text) > limit:
            raise TagConflict(
                f"{references.label(ref)}: 改名后表达式过长 / its definition would be over {limit} characters"
            )
        if ref[0] == "segment":
            conn.execute(update(segments).where(segments.c.name == ref[1]).values(expression=text, updated_at=at))
        else:
            conn.execute(update(tags).where(tags.c.name == ref[1]).values(rule=text))
        defs = defs.with_definition(ref, tree)
        rewritten.append(references.label(ref))
    # A definition may name a tag that did not exist under the new name yet: the rename must not
    # close a loop through it.
    loop = defs.with_rule_renamed(old, new).any_loop()
    if loop is not None:
        raise TagConflict(f"改名会造成循环引用 / the rename would make a loop: {references.chain_text(loop)}")
    return rewritten
