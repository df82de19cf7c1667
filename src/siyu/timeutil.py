"""Time helpers: everything siyu stores is UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

import numpy as np
import pyarrow as pa


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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def column_micros(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Microseconds since the epoch (UTC) of a timestamp column, as int64."""
    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    if isinstance(micros, pa.ChunkedArray):
        micros = micros.combine_chunks()
    return np.asarray(micros.to_numpy(zero_copy_only=False), np.int64)


def micros_datetimes(micros: np.ndarray) -> list[datetime]:
    """Aware UTC datetimes of microseconds since the epoch (much cheaper than Arrow's ``to_pylist``)."""
    return [_EPOCH + timedelta(microseconds=m) for m in micros.tolist()]
