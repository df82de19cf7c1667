"""Tags from segments: rule tags (a tag defined by a segment expression, kept current) and tagging
every member of a segment at once.

A **rule tag** (kind ``rule``) holds exactly the persons its expression selects, as person-level
tags written with source ``rule``: each refresh adds it to persons who now match and removes it
from persons who no longer do, through the tag service's single-writer path (so every change is a
``tag_added`` / ``tag_removed`` event with who and why). People cannot tag or untag a rule tag by
hand; the tag service refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from siyu.segments import to_text
from siyu.segments.saved import SavedSegmentError
from siyu.store.ops.schema import person_tags, tags
from siyu.tags.catalog import tag_named
from siyu.tags.holders import set_person_tags
from siyu.tags.service import TagService, make_why

RULE_ACTOR = "segment-rule"


@dataclass
class RuleTagResult:
    """What one rule-tag refresh changed."""

    tag: str
    holders: int
    added: int
    removed: int

    def as_dict(self) -> dict[str, Any]:
        """For JSON output (CLI and API)."""
        return {"tag": self.tag, "holders": self.holders, "added": self.added, "removed": self.removed}


def create_rule_tag(service: Any, name: str, group: str, expression: str | Mapping[str, Any]) -> RuleTagResult:
    """Create a rule tag from a segment expression (validated like any segment) and fill it."""
    tree = service.tree(expression)
    tagger = TagService(service.runtime.ingestor)
    tagger.create_tag(name, group, kind="rule", rule=to_text(tree))
    service.forget_catalogue()
    return refresh_rule_tag(service, name)


def refresh_rule_tag(service: Any, name: str, *, now: datetime | None = None) -> RuleTagResult:
    """Bring one rule tag's holders in line with its expression."""
    with service.runtime.engine.connect() as conn:
        row = conn.execute(select(tags.c.id, tags.c.kind, tags.c.rule).where(tags.c.name == name)).first()
    if row is None or row.kind != "rule" or not row.rule:
        raise SavedSegmentError(f'"{name}" 不是规则标签 / "{name}" is not a rule tag', 404)
    wanted = service.members(row.rule, now=now)
    tagger = TagService(service.runtime.ingestor)
    at = now or datetime.now(UTC)

    def work(conn: Connection) -> tuple[int, int, int]:
        ref = tag_named(conn, name)
        held = set(conn.execute(select(person_tags.c.person_id).where(person_tags.c.tag_id == ref.id)).scalars())
        why = make_why(RULE_ACTOR, f"rule: {row.rule}"[:256], "rule", at)
        added = set_person_tags(conn, ref, sorted(wanted - held), add=True, why=why)
        removed = set_person_tags(conn, ref, sorted(held - wanted), add=False, why=why)
        return len(wanted), added, removed

    holders, added, removed = tagger.run_writes(work)
    return RuleTagResult(name, holders, added, removed)


def refresh_rule_tags(service: Any, *, now: datetime | None = None) -> list[RuleTagResult]:
    """Refresh every rule tag."""
    with service.runtime.engine.connect() as conn:
        names = [r[0] for r in conn.execute(select(tags.c.name).where(tags.c.kind == "rule").order_by(tags.c.name))]
    return [refresh_rule_tag(service, n, now=now) for n in names]


def tag_segment(
    service: Any, segment: str, tag: str, *, remove: bool = False, by: str = "api", reason: str | None = None
) -> int:
    """Add (or remove) a person-level ``tag`` for every current member of saved segment ``segment``."""
    ids = service.saved.members(segment)
    if not ids:
        return 0
    tagger = TagService(service.runtime.ingestor)
    why_reason = reason or f"segment {segment}"

    def work(conn: Connection) -> int:
        ref = tag_named(conn, tag)
        if ref.kind == "rule":
            raise SavedSegmentError(
                f'"{tag}" 是规则标签，由规则维护 / "{tag}" is a rule tag: its rule keeps it current', 409
            )
        return set_person_tags(conn, ref, ids, add=not remove, why=make_why(by, why_reason[:256], "manual", None))

    changed: int = tagger.run_writes(work)
    return changed
