"""Size limits of segment expressions and trees, so hostile input fails fast and clearly."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The limits the parser and :func:`~siyu.segments.jsonform.from_json` enforce.

    ``max_depth`` counts nested parentheses, ``not``, ``and`` / ``or`` levels; it stays far below
    Python's recursion limit, so no input can crash the recursive-descent parser.
    """

    max_length: int = 10_000
    max_nodes: int = 2_000
    max_depth: int = 32
    max_list_items: int = 1_000


DEFAULT_LIMITS = Limits()
