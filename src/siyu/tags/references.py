"""Who refers to whom: saved segments and rule tags, through ``in segment`` and ``has tag``.

Saved segments (人群) and rule tags (规则标签) are both definitions written in the segment language,
and each may name the other: ``in segment "S"``, ``has tag "R"``. This module reads every definition
from the ops store and answers what the tag service and the segment engine need to know about that
graph:

* which definitions use a tag (a tag in use cannot be deleted; a rename rewrites them);
* whether a new definition would refer to itself, directly or through others (a loop);
* the order in which a refresh must bring them current (a rule tag before whatever reads it).

A node is ``("segment", name)`` or ``("tag", name)``. A definition has an edge to every saved segment
it names and to every **rule** tag it names; a manual or event tag has no definition, so it ends a path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import Connection, select

from siyu.segments import parse, referenced_segments
from siyu.segments.nodes import And, Compare, Condition, Did, HasTags, InList, Node, Not, Or, Sequence, walk
from siyu.store.ops.schema import segments, tags

Kind = Literal["segment", "tag"]
Ref = tuple[Kind, str]

#: Change events that name a tag in their ``tag`` property.
TAG_EVENTS = ("$tag_added", "$tag_removed")


def tag_names(tree: Node) -> set[str]:
    """Names of the tags ``tree`` tests with ``has tag`` / ``has any|all|no tag in (…)``."""
    return {name for node in walk(tree) if isinstance(node, HasTags) for name in node.names}


def label(ref: Ref) -> str:
    """``segment "S"`` or ``rule tag "R"``, for messages."""
    return f'segment "{ref[1]}"' if ref[0] == "segment" else f'rule tag "{ref[1]}"'


def chain_text(chain: Iterable[Ref]) -> str:
    """A loop as ``S → R → S``."""
    return " → ".join(name for _, name in chain)


@dataclass(frozen=True)
class Definitions:
    """Every saved segment's and every rule tag's definition, parsed."""

    segments: Mapping[str, Node]
    static: frozenset[str]
    rules: Mapping[str, Node]

    @classmethod
    def load(cls, conn: Connection) -> Definitions:
        """Read (and parse) them from the ops store, in ``conn``'s transaction."""
        segs = conn.execute(select(segments.c.name, segments.c.kind, segments.c.expression)).all()
        rules = conn.execute(select(tags.c.name, tags.c.rule).where(tags.c.kind == "rule")).all()
        return cls(
            segments={r.name: parse(r.expression) for r in segs},
            static=frozenset(r.name for r in segs if r.kind == "static"),
            rules={r.name: parse(r.rule) for r in rules if r.rule},
        )

    def tree(self, ref: Ref) -> Node | None:
        """The definition of ``ref``; None for an unknown segment or a tag that is not a rule tag."""
        return (self.segments if ref[0] == "segment" else self.rules).get(ref[1])

    def with_definition(self, ref: Ref, tree: Node) -> Definitions:
        """These definitions with ``ref`` defined as ``tree`` (a definition about to be saved)."""
        if ref[0] == "segment":
            return dataclasses.replace(self, segments={**self.segments, ref[1]: tree})
        return dataclasses.replace(self, rules={**self.rules, ref[1]: tree})

    def refs(self) -> list[Ref]:
        """Every node, segments first, each kind in name order."""
        return [("segment", n) for n in sorted(self.segments)] + [("tag", n) for n in sorted(self.rules)]

    def edges(self, tree: Node) -> list[Ref]:
        """What ``tree`` refers to: saved segments, then rule tags, each in name order."""
        out: list[Ref] = [("segment", n) for n in sorted(referenced_segments(tree)) if n in self.segments]
        return out + [("tag", n) for n in sorted(tag_names(tree)) if n in self.rules]

    def definition(self, ref: Ref) -> Node:
        """The definition of a known ``ref`` (one of :meth:`refs`)."""
        tree = self.tree(ref)
        if tree is None:
            raise KeyError(ref)
        return tree

    def with_rule_renamed(self, old: str, new: str) -> Definitions:
        """These definitions with rule tag ``old`` (if it is one) called ``new``."""
        if old not in self.rules:
            return self
        rules = {new if name == old else name: tree for name, tree in self.rules.items()}
        return dataclasses.replace(self, rules=rules)

    def users_of_tag(self, name: str) -> list[Ref]:
        """Every definition that tests ``name`` with ``has tag``."""
        return [ref for ref in self.refs() if name in tag_names(self.definition(ref))]

    def users_of_segment(self, name: str) -> list[Ref]:
        """Every other definition that names segment ``name`` with ``in segment``."""
        return [
            ref for ref in self.refs() if ref != ("segment", name) and name in referenced_segments(self.definition(ref))
        ]

    def find_loop(self, start: Ref, tree: Node | None = None) -> list[Ref] | None:
        """The chain ``[start, …, start]`` if ``start`` (defined as ``tree``, or as it is stored) reaches
        itself through ``in segment`` and rule-tag ``has tag`` edges; else None."""
        graph = self if tree is None else self.with_definition(start, tree)
        first = graph.tree(start)
        if first is None:
            return None
        stack: list[tuple[Ref, list[Ref]]] = [(ref, [start, ref]) for ref in reversed(graph.edges(first))]
        seen: set[Ref] = set()
        while stack:
            current, chain = stack.pop()
            if current == start:
                return chain
            if current in seen:
                continue
            seen.add(current)
            other = graph.tree(current)
            if other is not None:
                stack.extend((ref, [*chain, ref]) for ref in reversed(graph.edges(other)))
        return None

    def any_loop(self) -> list[Ref] | None:
        """Some loop among all the definitions, or None."""
        for ref in self.refs():
            loop = self.find_loop(ref)
            if loop is not None:
                return loop
        return None

    # -- refresh order -----------------------------------------------------------------------------
    def rule_tags_read(self, ref: Ref) -> set[str]:
        """The rule tags whose current holders evaluating ``ref`` reads: those it names, and those the
        **dynamic** segments it names read in turn (their definition is evaluated in place, while a
        static segment's stored members are read). Rule tags named by a rule tag are not followed:
        that rule tag's holders are read, not its definition."""
        found: set[str] = set()
        seen: set[str] = set()
        stack = [self.definition(ref)]
        while stack:
            tree = stack.pop()
            found.update(t for t in tag_names(tree) if t in self.rules)
            for name in referenced_segments(tree):
                if name in self.segments and name not in self.static and name not in seen:
                    seen.add(name)
                    stack.append(self.segments[name])
        return found

    def rule_tags_behind(self, refs: Iterable[Ref]) -> set[str]:
        """Every rule tag that evaluating ``refs`` reads, directly or through other rule tags."""
        found: set[str] = set()
        pending = [tag for ref in refs for tag in self.rule_tags_read(ref)]
        while pending:
            name = pending.pop()
            if name not in found:
                found.add(name)
                pending.extend(self.rule_tags_read(("tag", name)))
        return found

    def refresh_order(self, segment_names: Iterable[str], rule_names: Iterable[str]) -> list[tuple[Kind, list[str]]]:
        """The steps that bring ``segment_names`` and ``rule_names`` current in one pass: batches of
        segments (refreshed together, decision 017) and single rule tags, each rule tag after every
        rule tag it reads, each segment after every rule tag it reads.

        Segments go in as few batches as the rule tags they read allow: a segment that reads no rule
        tag is in the first batch; one that reads rule tags refreshed at step k is in the batch after.
        Raises :class:`ValueError` naming a loop if the stored definitions have one.
        """
        level: dict[str, int] = {}

        def tag_level(name: str) -> int:
            # Iterative depth-first levels: a rule tag's level is one more than the highest level
            # among the rule tags it reads (0 when it reads none).
            path: list[str] = []
            stack: list[tuple[str, bool]] = [(name, False)]
            while stack:
                current, done = stack.pop()
                if done:
                    path.pop()
                    reads = self.rule_tags_read(("tag", current))
                    level[current] = 1 + max((level[r] for r in reads), default=-1)
                    continue
                if current in level:
                    continue
                if current in path:
                    loop = [*path[path.index(current) :], current]
                    raise ValueError(f"rule tags refer to themselves: {' → '.join(loop)}")
                path.append(current)
                stack.append((current, True))
                stack.extend((r, False) for r in sorted(self.rule_tags_read(("tag", current)), reverse=True))
            return level[name]

        rounds: dict[int, tuple[list[str], list[str]]] = {}
        for name in sorted(set(rule_names)):
            rounds.setdefault(tag_level(name), ([], []))[1].append(name)
        for name in sorted(set(segment_names)):
            reads = self.rule_tags_read(("segment", name))
            stage = 1 + max((tag_level(r) for r in reads), default=-1)
            rounds.setdefault(stage, ([], []))[0].append(name)
        steps: list[tuple[Kind, list[str]]] = []
        for k in sorted(rounds):
            batch, rule_tags = rounds[k]
            if batch:
                steps.append(("segment", batch))
            steps += [("tag", [name]) for name in rule_tags]
        return steps


# -- renaming a tag ----------------------------------------------------------------------------------
def rename_tag_in(tree: Node, old: str, new: str) -> Node:
    """``tree`` with every ``has tag`` name ``old`` written ``new`` (the rest unchanged)."""
    if isinstance(tree, HasTags):
        if old not in tree.names:
            return tree
        return dataclasses.replace(tree, names=tuple(new if n == old else n for n in tree.names))
    if isinstance(tree, And | Or):
        items = tuple(cast(Condition, rename_tag_in(i, old, new)) for i in tree.items)
        return dataclasses.replace(tree, items=items)
    if isinstance(tree, Not):
        return dataclasses.replace(tree, item=cast(Condition, rename_tag_in(tree.item, old, new)))
    return tree


def names_tag_in_events(tree: Node, name: str) -> bool:
    """Whether ``tree`` filters the tag-change events (``$tag_added`` / ``$tag_removed``) by the tag
    name ``name``: a rename cannot carry such a definition over (the history keeps the old name, and
    the rename itself is written as a removal and an addition for every holder)."""
    for node in walk(tree):
        steps = [node] if isinstance(node, Did) else list(node.steps) if isinstance(node, Sequence) else []
        for step in steps:
            if step.event not in TAG_EVENTS:
                continue
            for cond in step.where:
                if cond.field.name != "tag":
                    continue
                values = (cond.value,) if isinstance(cond, Compare) else cond.values if isinstance(cond, InList) else ()
                if name in values:
                    return True
    return False
