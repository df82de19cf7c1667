"""Errors of the tag service and the checks of user-written names."""

from __future__ import annotations

from typing import Any

#: WeCom's corp tag library allows tag and group names of at most 30 characters.
NAME_LIMIT = 30
ACTOR_LIMIT = 128
REASON_LIMIT = 256


class TagError(ValueError):
    """A tag request that cannot be applied; nothing was written.

    ``errors`` lists per-item problems of a bulk request (``{"line"/"index", "column", "reason"}``).
    """

    status = 422

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


class TagNotFound(TagError):
    """An unknown tag, group, person, staff member or relation."""

    status = 404


class TagConflict(TagError):
    """A name already taken, or a group / tag still in use."""

    status = 409


def has_control(value: str) -> bool:
    """Whether ``value`` holds a control character (C0, DEL or C1)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)


def check_text(field: str, value: object, limit: int, *, required: bool = True) -> str | None:
    """``value`` stripped, or a :class:`TagError` naming ``field`` when it is not acceptable text."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise TagError(f"{field}: 须为文本 must be text")
    value = value.strip()
    if not value:
        if not required:
            return None
        raise TagError(f"{field}: 不能为空 must not be empty")
    if len(value) > limit:
        raise TagError(f"{field}: 最多 {limit} 个字符 at most {limit} characters, got {len(value)}")
    if has_control(value):
        raise TagError(f"{field}: 不能包含控制字符 must not contain control characters")
    return value


def check_name(field: str, value: object) -> str:
    """A tag or group name: 1–30 printable characters, surrounding spaces removed."""
    name = check_text(field, value, NAME_LIMIT)
    assert name is not None
    return name
