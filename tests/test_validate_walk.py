"""The JSON-value checks of properties / traits, against a plain recursive reference.

``Validator._walk`` checks flat values one level down without recursing (a speed-up); the
reference below is the straightforward rule set. Both must report the same problems, in the
same order, for any JSON value.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from siyu.config import Settings
from siyu.ingest.validate import Validator

LIMITS = Settings(max_string_chars=5, max_json_depth=3)
INT64 = 2**63


def reference(value: Any, where: str, depth: int, errors: list[str]) -> None:
    if depth > LIMITS.max_json_depth:
        errors.append(f"{where}\x00nested deeper than {LIMITS.max_json_depth} levels")
        return
    if isinstance(value, str):
        if len(value) > LIMITS.max_string_chars:
            errors.append(f"{where}\x00string longer than {LIMITS.max_string_chars} characters")
        elif "\x00" in value:
            errors.append(f"{where}\x00contains a NUL character")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -INT64 <= value < INT64:
            errors.append(f"{where}\x00integer out of the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            errors.append(f"{where}\x00not a finite number")
    elif isinstance(value, dict):
        if len(value) > 1000:
            errors.append(f"{where}\x00more than 1000 keys")
            return
        for k, v in value.items():
            if not k or len(k) > 128 or "\x00" in k:
                errors.append(f"{where}\x00invalid key {k[:40]!r} (1–128 characters, no NUL)")
                continue
            reference(v, f"{where}.{k}", depth + 1, errors)
    elif isinstance(value, list):
        if len(value) > 1000:
            errors.append(f"{where}\x00more than 1000 items")
            return
        for i, v in enumerate(value):
            reference(v, f"{where}[{i}]", depth + 1, errors)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\x01", "字"]), max_size=8)
)
keys = st.text(alphabet=st.sampled_from(["k", "\x00", "é"]), max_size=3)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=25
)


@settings(max_examples=400, deadline=None)
@given(value=st.dictionaries(keys, json_values, max_size=6), depth=st.integers(min_value=1, max_value=4))
def test_walk_reports_what_the_plain_rules_report(value: dict[str, Any], depth: int) -> None:
    expected: list[str] = []
    reference(value, "properties", depth, expected)
    got: list[str] = []
    Validator(LIMITS)._walk(value, "properties", depth, got)
    assert got == expected
