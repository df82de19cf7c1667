"""Segments (人群): the segment language — tree, parser, canonical text, JSON form, validation.

::

    tree = parse('did order_paid >= 2 in last 90d where amount_fen >= 10000')
    validate(tree, catalogue)      # unknown names, type mismatches -> SegmentValidationError
    to_json(tree)                  # for the API and the console; from_json() reads it back
    to_text(tree)                  # canonical text; parse(to_text(tree)) == tree

Nothing here produces SQL: the compiler turns a validated tree into query-layer expressions.
"""

from siyu.segments.errors import (
    Problem,
    SegmentError,
    SegmentJsonError,
    SegmentLimitError,
    SegmentSyntaxError,
    SegmentValidationError,
)
from siyu.segments.jsonform import from_json, to_json
from siyu.segments.limits import DEFAULT_LIMITS, Limits
from siyu.segments.parser import RESERVED, parse
from siyu.segments.text import to_text
from siyu.segments.validate import (
    BUILTIN_EVENTS,
    ORDER_FIELDS,
    Catalogue,
    check,
    referenced_segments,
    suggest,
    validate,
)

__all__ = [
    "BUILTIN_EVENTS",
    "DEFAULT_LIMITS",
    "ORDER_FIELDS",
    "RESERVED",
    "Catalogue",
    "Limits",
    "Problem",
    "SegmentError",
    "SegmentJsonError",
    "SegmentLimitError",
    "SegmentSyntaxError",
    "SegmentValidationError",
    "check",
    "from_json",
    "parse",
    "referenced_segments",
    "suggest",
    "to_json",
    "to_text",
    "validate",
]
