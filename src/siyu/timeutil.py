"""Time helpers: everything siyu stores is UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime; naive values are taken to be UTC already.

    SQLite and DuckDB's TIMESTAMP hand back naive datetimes for what siyu stored as UTC.
    """
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
