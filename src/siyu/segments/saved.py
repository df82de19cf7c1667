"""Saved segments (人群): definitions in the ops store, membership and history in the event store.

* **dynamic** segments follow their definition: ``refresh`` recomputes them (incrementally when the
  definition does not read the time, see :mod:`siyu.segments.membership`), and ``in segment`` reads
  the definition itself, so it is always current;
* **static** segments are a snapshot taken when they are created; ``in segment`` reads the stored
  members.

A segment that would refer to itself, directly or through others (segments and rule tags alike), is
refused; a segment another segment or a rule tag refers to cannot be deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from siyu.segments import parse, to_json, to_text
from siyu.segments.compile import Context, SegmentCompileError
from siyu.segments.membership import (
    Membership,
    RefreshItem,
    RefreshResult,
    anchor_ranges,
    merge_spans,
    needs_full_refresh,
    time_anchors,
)
from siyu.segments.nodes import Node
from siyu.store.ops.schema import segments
from siyu.tags.references import Definitions, chain_text, label

KINDS = ("dynamic", "static")
NAME_LIMIT = 64
DESCRIPTION_LIMIT = 256


def with_tree(seg: dict[str, Any]) -> dict[str, Any]:
    """A saved segment's row with its definition's JSON form, ``tree``, beside the (canonical) text."""
    return {**seg, "tree": to_json(parse(seg["expression"]))}


class SavedSegmentError(ValueError):
    """A saved-segment request that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def check_name(name: str) -> str:
    """A segment name: 1–64 printable characters, trimmed."""
    if not isinstance(name, str) or not name.strip():
        raise SavedSegmentError("name: 人群名称不能为空 / a segment needs a name")
    name = name.strip()
    if len(name) > NAME_LIMIT or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise SavedSegmentError(f"name: 最多 {NAME_LIMIT} 个可打印字符 / at most {NAME_LIMIT} printable characters")
    return name


def _row(r: Any) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()

    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "expression": r.expression,
        "description": r.description,
        "created_by": r.created_by,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "refreshed_at": iso(r.refreshed_at),
        "member_count": r.member_count,
    }


class SavedSegments:
    """Saved segments of one installation (used through ``SegmentService.saved``)."""

    def __init__(self, service: Any) -> None:
        self.service = service  # siyu.segments.service.SegmentService
        self.runtime = service.runtime
        self.membership = Membership(self.runtime.events)

    # -- reading -----------------------------------------------------------------------------------
    def _all(self, conn: Connection | None = None) -> list[dict[str, Any]]:
        if conn is None:
            with self.runtime.engine.connect() as c:
                return self._all(c)
        return [_row(r) for r in conn.execute(select(segments).order_by(segments.c.name))]

    def all(self) -> list[dict[str, Any]]:
        """Every saved segment."""
        return self._all()

    def get(self, name: str) -> dict[str, Any]:
        """One saved segment by name; :class:`SavedSegmentError` (404) if there is none."""
        with self.runtime.engine.connect() as conn:
            row = conn.execute(select(segments).where(segments.c.name == name)).first()
        if row is not None:
            return _row(row)
        known = [s["name"] for s in self._all()]
        raise SavedSegmentError(
            f'未知的人群 "{name}" / unknown segment "{name}" (known: {", ".join(known) or "none"})', 404
        )

    def definitions(self) -> dict[str, Node]:
        """Name → parsed definition, for every saved segment."""
        return {s["name"]: parse(s["expression"]) for s in self._all()}

    def references(self) -> tuple[Callable[[str], Node | None], Callable[[str], str | None]]:
        """What ``in segment`` needs, from one read: a saved segment's definition (parsed when first
        asked for) and a static segment's id."""
        rows = {s["name"]: s for s in self._all()}
        parsed: dict[str, Node] = {}

        def definition(name: str) -> Node | None:
            if name not in rows:
                return None
            if name not in parsed:
                parsed[name] = parse(rows[name]["expression"])
            return parsed[name]

        def static_id(name: str) -> str | None:
            seg = rows.get(name)
            return seg["id"] if seg is not None and seg["kind"] == "static" else None

        return definition, static_id

    # -- writing -----------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        expression: str | Mapping[str, Any],
        *,
        kind: str = "dynamic",
        description: str | None = None,
        by: str = "api",
        now: datetime | None = None,
    ) -> tuple[dict[str, Any], RefreshResult]:
        """Save a segment and compute its members; refuses a name in use or a self-reference."""
        name = check_name(name)
        if kind not in KINDS:
            raise SavedSegmentError(f"kind: dynamic 或 static / must be dynamic or static, not {kind!r}")
        if description is not None and len(description) > DESCRIPTION_LIMIT:
            raise SavedSegmentError(
                f"description: 最多 {DESCRIPTION_LIMIT} 字 / at most {DESCRIPTION_LIMIT} characters"
            )
        tree = self.service.parse(expression)
        with self.runtime.engine.connect() as conn:
            graph = Definitions.load(conn)
        if name in graph.segments:
            raise SavedSegmentError(f'人群 "{name}" 已存在 / a segment named "{name}" exists', 409)
        # Before validation: a segment naming itself is not yet known, and would read as unknown.
        loop = graph.find_loop(("segment", name), tree)
        if loop:
            raise SavedSegmentError(f"人群循环引用 / segment {name} refers to itself: {chain_text(loop)}")
        self.service.validate(tree)
        at = now or datetime.now(UTC)
        sid = hashlib.sha256(f"segment:{name}:{at.isoformat()}".encode()).hexdigest()[:24]
        with self.runtime.engine.begin() as conn:
            conn.execute(
                segments.insert().values(
                    id=sid,
                    name=name,
                    kind=kind,
                    expression=to_text(tree),
                    description=description,
                    created_by=by[:128],
                    created_at=at,
                    updated_at=at,
                )
            )
        self.service.forget_catalogue()
        try:
            result = self.refresh_one(self.get(name), now=now, full=True)
        except Exception:
            with self.runtime.engine.begin() as conn:
                conn.execute(delete(segments).where(segments.c.id == sid))
            self.membership.forget(sid)
            self.service.forget_catalogue()
            raise
        return self.get(name), result

    def delete(self, name: str) -> None:
        """Delete a segment and its membership (its past events stay); refused while referred to."""
        seg = self.get(name)
        with self.runtime.engine.connect() as conn:
            users = Definitions.load(conn).users_of_segment(name)
        if users:
            shown = ", ".join(label(u) for u in users)
            raise SavedSegmentError(f'人群 "{name}" 仍被引用 / segment "{name}" is used by: {shown}', 409)
        with self.runtime.engine.begin() as conn:
            conn.execute(delete(segments).where(segments.c.id == seg["id"]))
        self.membership.forget(seg["id"])
        self.service.forget_catalogue()

    # -- membership --------------------------------------------------------------------------------
    def _touch(
        self, segs: list[dict[str, Any]], trees: Sequence[Node], definitions: dict[str, Node], ctx: Context, full: bool
    ) -> tuple[tuple[tuple[datetime, datetime], ...], bool, set[str]]:
        """The time spans to re-evaluate for ``segs`` refreshed together at ``ctx.now`` (their union,
        so that one copy of the touched persons' rows serves all), and which of them can be
        refreshed incrementally (computed before, at a ``now`` not after this one)."""
        ranges: set[tuple[datetime, datetime]] = set()
        traits = False
        incremental: set[str] = set()
        for seg, tree in zip(segs, trees, strict=True):
            previous = self.membership.previous_now(seg["id"])
            if full or previous is None or previous > ctx.now or needs_full_refresh(tree, definitions.get):
                continue
            anchors, on_traits = time_anchors(tree, definitions.get)
            ranges.update(anchor_ranges(anchors, previous, ctx.now, ctx.tz))
            traits = traits or on_traits
            incremental.add(seg["id"])
        return merge_spans(ranges), traits, incremental

    def refresh_one(self, seg: dict[str, Any], *, now: datetime | None = None, full: bool = False) -> RefreshResult:
        """Recompute one segment (a static one only when it has no members yet)."""
        return self._refresh([seg], now=now, full=full)[0]

    def refresh(
        self, name: str | None = None, *, now: datetime | None = None, full: bool = False
    ) -> list[RefreshResult]:
        """Refresh one segment, or every dynamic one.

        Every dynamic one: the rule tags they read (``has tag``, also through the segments they name)
        are refreshed first, in dependency order, so one refresh brings every segment current
        (:func:`siyu.segments.tagging.refresh_all`, which also refreshes the other rule tags and
        reports on them). Results in name order.
        """
        if name is not None:
            return [self.refresh_one(self.get(name), now=now, full=full)]
        from siyu.segments.tagging import refresh_all

        return refresh_all(self.service, now=now, full=full, every_rule_tag=False)[0]

    def refresh_batch(
        self, segs: list[dict[str, Any]], *, now: datetime | None = None, full: bool = False
    ) -> list[RefreshResult]:
        """Refresh ``segs`` together (decision 017); the caller orders batches after the rule tags they read."""
        return self._refresh(segs, now=now, full=full)

    def _refresh(self, segs: list[dict[str, Any]], *, now: datetime | None, full: bool) -> list[RefreshResult]:
        """Refresh ``segs`` at one ``now``: evaluated one by one, written in one transaction per store."""
        if not segs:
            return []
        definitions = self.definitions()
        ctx = self.service.engine(fresh=False).context(now)
        trees = [parse(seg["expression"]) for seg in segs]
        ranges, traits, incremental = self._touch(segs, trees, definitions, ctx, full)
        items = [
            RefreshItem(seg, tree, seg["id"] in incremental, static=seg["kind"] == "static")
            for seg, tree in zip(segs, trees, strict=True)
        ]
        try:
            results = self.membership.refresh_many(items, ctx, ranges=ranges, trait_ranges=traits)
        except SegmentCompileError as exc:
            raise SavedSegmentError(str(exc)) from exc
        with self.runtime.engine.begin() as conn:
            for result in results:
                conn.execute(
                    update(segments)
                    .where(segments.c.id == result.segment_id)
                    .values(refreshed_at=ctx.now, member_count=result.members)
                )
        return results

    def members(self, name: str) -> list[str]:
        """The current members of a saved segment, sorted."""
        return sorted(self.membership.current(self.get(name)["id"]))

    def history(self, name: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Who entered and exited, newest first."""
        return self.membership.history(self.get(name)["id"], limit)
