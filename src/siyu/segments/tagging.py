"""Tags from segments: rule tags (a tag defined by a segment expression, kept current) and tagging
every member of a segment at once.

A **rule tag** (kind ``rule``) holds exactly the persons its expression selects, as person-level
tags written with source ``rule``: each refresh adds it to persons who now match and removes it
from persons who no longer do, through the tag service's single-writer path (so every change is a
``tag_added`` / ``tag_removed`` event with who and why). People cannot tag or untag a rule tag by
hand; the tag service refuses.

Rule tags and saved segments may read each other (``has tag``, ``in segment``): a refresh brings them
current in dependency order (:func:`refresh_all`), and a definition that would refer to itself,
directly or through others, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from siyu.segments import to_text
from siyu.segments.membership import RefreshResult
from siyu.segments.saved import SavedSegmentError
from siyu.store.ops.schema import person_tags, tags
from siyu.tags.catalog import check_name, check_unused, tag_named
from siyu.tags.errors import TagError
from siyu.tags.holders import set_person_tags
from siyu.tags.references import Definitions, chain_text
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


def _tagger(service: Any) -> TagService:
    return TagService(service.runtime.ingestor, segments=service)


def create_rule_tag(service: Any, name: str, group: str, expression: str | Mapping[str, Any]) -> RuleTagResult:
    """Create a rule tag from a segment expression (validated like any segment) and fill it.

    Refused (:class:`~siyu.tags.errors.TagError`) when the expression would make the tag refer to
    itself, directly or through segments and other rule tags.
    """
    name = check_name("tag", name)
    tree = service.parse(expression)
    with service.runtime.engine.connect() as conn:
        check_unused(conn, name)
        graph = Definitions.load(conn)
    # Before validation: a rule naming its own tag is not yet known, and would read as unknown.
    loop = graph.find_loop(("tag", name), tree)
    if loop:
        raise TagError(f"规则标签循环引用 / rule tag {name} refers to itself: {chain_text(loop)}")
    service.validate(tree)
    _tagger(service).create_tag(name, group, kind="rule", rule=to_text(tree))  # drops the cached catalogue
    return refresh_rule_tag(service, name)


def refresh_rule_tag(service: Any, name: str, *, now: datetime | None = None) -> RuleTagResult:
    """Bring one rule tag's holders in line with its expression."""
    with service.runtime.engine.connect() as conn:
        row = conn.execute(select(tags.c.id, tags.c.kind, tags.c.rule).where(tags.c.name == name)).first()
    if row is None or row.kind != "rule" or not row.rule:
        raise SavedSegmentError(f'"{name}" 不是规则标签 / "{name}" is not a rule tag', 404)
    wanted = service.members(row.rule, now=now)
    tagger = _tagger(service)
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


def refresh_all(
    service: Any, *, now: datetime | None = None, full: bool = False, every_rule_tag: bool = True
) -> tuple[list[RefreshResult], list[RuleTagResult]]:
    """Refresh every dynamic segment and every rule tag in one pass, in dependency order, at one ``now``.

    A rule tag is refreshed after the rule tags it reads, a segment after the rule tags it reads
    (also through the segments it names), so nothing lags a refresh behind. Segments are refreshed
    in as few batches as that order allows, each batch written together (decision 017); a batch
    that cannot be evaluated writes nothing, but the steps before it stay written. With
    ``every_rule_tag`` false, only the rule tags some segment reads. Results in name order.
    """
    with service.runtime.engine.connect() as conn:
        graph = Definitions.load(conn)
    dynamic = sorted(n for n in graph.segments if n not in graph.static)
    if every_rule_tag:
        rule_names = sorted(graph.rules)
    else:
        rule_names = sorted(graph.rule_tags_behind(("segment", n) for n in dynamic))
    try:
        steps = graph.refresh_order(dynamic, rule_names)
    except ValueError as exc:
        raise SavedSegmentError(f"循环引用 / {exc}", 409) from exc
    at = now or datetime.now(UTC)
    saved = service.saved
    rows = {seg["name"]: seg for seg in saved.all()}
    segment_results: list[RefreshResult] = []
    tag_results: list[RuleTagResult] = []
    for kind, names in steps:
        if kind == "segment":
            segment_results += saved.refresh_batch([rows[n] for n in names if n in rows], now=at, full=full)
        else:
            tag_results += [refresh_rule_tag(service, n, now=at) for n in names]
    segment_results.sort(key=lambda r: r.name)
    tag_results.sort(key=lambda r: r.tag)
    return segment_results, tag_results


def tag_segment(
    service: Any, segment: str, tag: str, *, remove: bool = False, by: str = "api", reason: str | None = None
) -> int:
    """Add (or remove) a person-level ``tag`` for every current member of saved segment ``segment``."""
    ids = service.saved.members(segment)
    if not ids:
        return 0
    tagger = _tagger(service)
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
