"""Parsing JSON from outside: fast, and never silently inexact about integers."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# An integer literal orjson may read as a float: past 64 bits it gives one, silently dropping
# digits. The shortest texts that can be one: twenty digits (2**64 has 20), or a minus sign and
# nineteen (-2**63 - 1 has 19).
_LONG_DIGITS = re.compile(rb"\d{20}|-\d{19}")
# What orjson reads exactly: signed 64-bit and, above it, unsigned (which the checks then refuse
# by its field: stored integers are signed).
_SMALLEST, _LARGEST = -(2**63), 2**64 - 1


def loads(data: bytes | str) -> Any:
    """``data`` as JSON, as :func:`orjson.loads` reads it, except that an integer outside the
    64-bit range is refused (:class:`orjson.JSONDecodeError`, saying so) instead of read as a float
    with its digits dropped (orjson reads ``100000000000000000000`` as ``1e+20``).

    Only text holding such a run of digits is read a second time, by the standard library (which
    keeps integers exact; orjson has already refused what is not strict JSON, such as ``NaN``).
    """
    value = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        return value

    try:
        json.loads(raw, parse_int=_integer)
    except RecursionError:  # nesting the standard parser cannot follow: the checks refuse its depth
        return value
    except _TooLarge as exc:
        raise orjson.JSONDecodeError(str(exc), raw.decode("utf-8", "replace"), 0) from None
    return value


class _TooLarge(Exception):
    """An integer literal outside the 64-bit range."""


def _integer(text: str) -> int:
    number = int(text)
    if not _SMALLEST <= number <= _LARGEST:
        raise _TooLarge(f"integer out of the 64-bit range: {text[:40]}{'…' if len(text) > 40 else ''}")
    return number
