"""File import: CSV, JSONL and Parquet through the same checks, dedupe and identity path as the API.

Valid rows are stored; rejected rows go, with their reasons, to ``FILE.rejects.jsonl`` beside the
input. Rows without a ``messageId`` get one derived from their content, so importing the same
file again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from siyu import jsontext
from siyu.ingest.pipeline import Ingestor, IngestResult
from siyu.ingest.validate import FieldError

Kind = Literal["events", "orders", "customers"]
IDENTITY_COLUMNS = ("wecom_external_userid", "unionid", "openid", "phone", "member_id", "email")
_ALIASES = {
    "message_id": "messageId",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "event_name": "event",
    "previous_id": "previousId",
}
_MESSAGE_FIELDS = {
    "type",
    "messageId",
    "event",
    "userId",
    "anonymousId",
    "previousId",
    "timestamp",
    "properties",
    "traits",
    "identities",
    "context",
}
_ORDER_INT_FIELDS = {"amount_fen", "discount_fen", "refund_fen"}
_ORDER_FIELDS = {
    "order_id",
    "status",
    "userId",
    "anonymousId",
    "identities",
    "paid_at",
    "updated_at",
    "amount_fen",
    "discount_fen",
    "refund_fen",
    "items",
    "channel",
}


class ImportFileError(ValueError):
    """The file as a whole cannot be read (missing, unknown format, bad header)."""


@dataclass
class ImportReport:
    """Outcome of importing one file."""

    path: Path
    rows: int = 0
    rejected: int = 0
    result: IngestResult = field(default_factory=IngestResult)
    rejects_path: Path | None = None

    def as_dict(self) -> dict[str, int]:
        """The ``--json`` summary."""
        return {"accepted": self.result.accepted, "rejected": self.rejected, "duplicates": self.result.duplicates}


Row = tuple[int, Any]  # (line or row number, raw record or a reading error string)


def _format(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ImportFileError(f"{path.name}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")


def _parquet_file(path: Path) -> pq.ParquetFile:
    """The Parquet file at ``path``, its footer read; a file that is not one (corrupt, cut short,
    another format named .parquet) is an :class:`ImportFileError` saying so."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{path.name}: not a readable Parquet file ({exc})") from None


def _named_twice(names: Iterable[str], what: str) -> str | None:
    """Why ``names`` name one field twice, directly or through an alias (``messageId`` and
    ``message_id``), or None; ``what`` is "column" or "key"."""
    seen: dict[str, str] = {}
    for name in names:
        field = _ALIASES.get(name, name)
        first = seen.get(field)
        if first is None:
            seen[field] = name
        elif first == name:
            return f"the {what} {name!r} appears twice"
        else:
            return f"the {what}s {first!r} and {name!r} both mean {field!r}; keep one"
    return None


def check_columns(path: Path, names: Sequence[str]) -> None:
    """A CSV header or Parquet schema naming one field twice is an :class:`ImportFileError`:
    which of the two a row means cannot be known."""
    why = _named_twice(names, "column")
    if why is not None:
        raise ImportFileError(f"{path.name}: {why}")


def count_rows(path: Path) -> int:
    """Rows in the file (for progress)."""
    fmt = _format(path)
    if fmt == "parquet":
        return int(_parquet_file(path).metadata.num_rows)
    with path.open("rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    return max(lines - 1, 0) if fmt == "csv" else lines


def read_rows(path: Path) -> Iterator[Row]:
    """Raw records with their line (JSONL / CSV) or row (Parquet) number, 1-based."""
    fmt = _format(path)
    if fmt == "jsonl":
        with path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, jsontext.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield number, f"not valid UTF-8 JSON: {exc}"
    elif fmt == "csv":
        # utf-8-sig: a byte-order mark (Excel writes one before "CSV UTF-8") is not part of the first column's name
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise ImportFileError(f"{path.name}: empty CSV (no header line)")
            check_columns(path, reader.fieldnames)
            for row in reader:
                number = reader.line_num
                if None in row:
                    yield number, "more fields than the header has"
                    continue
                if any(_has_surrogate(v) for v in row.values()) or any(_has_surrogate(k) for k in row):
                    yield number, "not valid UTF-8"
                    continue
                yield number, {k: v for k, v in row.items() if v not in ("", None)}
    else:
        parquet = _parquet_file(path)
        number = 0
        for batch in parquet.iter_batches(batch_size=20_000):
            for record in batch.to_pylist():
                number += 1
                yield number, {k: v for k, v in record.items() if v is not None}


def _has_surrogate(text: str | None) -> bool:
    return bool(text) and any("\udc80" <= ch <= "\udcff" for ch in text)  # type: ignore[union-attr]


def _json_field(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return jsontext.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _scalar(value: Any) -> Any:
    """CSV cells are text: digit-only values become integers (except ones with a leading zero)."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 15 and (value == "0" or value[0] != "0"):
        return int(value)
    return value


def _content_id(kind: str, record: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
    return f"{kind}-{digest[:32]}"


def to_message(kind: Kind, record: Any, *, flat: bool) -> Any:
    """Shape one file record into a ``/v1/batch`` message (events, customers) or an order."""
    if not isinstance(record, dict):
        return record
    rec: dict[str, Any] = {_ALIASES.get(str(k), str(k)): v for k, v in record.items()}
    if kind == "orders":
        order = {k: v for k, v in rec.items() if k in _ORDER_FIELDS}
        ids = {k: str(v) for k, v in rec.items() if k in IDENTITY_COLUMNS}
        if ids:
            order["identities"] = {**ids, **(order.get("identities") or {})}
        for key in _ORDER_INT_FIELDS:
            if isinstance(order.get(key), str) and order[key].lstrip("-").isdigit():
                order[key] = int(order[key])
        if "items" in order:
            order["items"] = _json_field(order["items"])
        # Unknown columns go through as they are, so the schema rejects each one by its name.
        order.update({k: v for k, v in rec.items() if k not in _ORDER_FIELDS and k not in IDENTITY_COLUMNS})
        return order
    message: dict[str, Any]
    if not flat:
        message = dict(rec)
    else:
        message = {k: _json_field(v) for k, v in rec.items() if k in _MESSAGE_FIELDS}
        ids = {k: str(v) for k, v in rec.items() if k in IDENTITY_COLUMNS}
        if ids:
            message["identities"] = {**ids, **(message.get("identities") or {})}
        rest = {k: _scalar(v) for k, v in rec.items() if k not in _MESSAGE_FIELDS and k not in IDENTITY_COLUMNS}
        if kind == "customers":
            message["traits"] = {**rest, **(message.get("traits") or {})}
        elif rest:
            message["properties"] = {**rest, **(message.get("properties") or {})}
        for key in ("userId", "anonymousId"):
            if key in message and not isinstance(message[key], str):
                message[key] = str(message[key])
    message.setdefault("type", "identify" if kind == "customers" else "track")
    if "messageId" not in message:
        message["messageId"] = _content_id(kind, message)
    return message


def rejects_file(path: Path) -> Path:
    """Where the rejected rows of importing ``path`` are written: ``FILE.rejects.jsonl`` beside it."""
    return path.with_name(path.name + ".rejects.jsonl")


def import_file(
    ingestor: Ingestor,
    path: Path,
    kind: Kind,
    *,
    chunk_rows: int = 5000,
    source: str | None = None,
    progress: Callable[[int], None] | None = None,
    vectorised: bool = True,
) -> ImportReport:
    """Import one file; returns counts and where the rejects went.

    Flat Parquet event files take the vectorised path (:mod:`siyu.ingest.bulk`), flat Parquet
    customer and order files the columnar one (:mod:`siyu.ingest.columnar`), unless ``vectorised``
    is False; everything else is checked row by row.
    """
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    fmt = _format(path)
    if fmt == "parquet":  # before any path reads it: one clear error for a file that is not Parquet
        check_columns(path, _parquet_file(path).schema_arrow.names)
    flat = fmt != "jsonl"
    report = ImportReport(path)
    rejects_path = rejects_file(path)
    rejects: list[bytes] = []
    source = source or f"file:{path.name}"
    ingestor.refresh_plan()
    if vectorised and fmt == "parquet" and kind == "events":
        from siyu.ingest.bulk import import_parquet_events

        fast = import_parquet_events(ingestor, path, source=source, progress=progress)
        if fast is not None:
            report.result, report.rejected, rejects = fast
            report.rows = count_rows(path)
            _write_rejects(rejects_path, rejects, report)
            return report
    if vectorised and fmt == "parquet" and kind in ("customers", "orders"):
        from siyu.ingest.columnar import import_parquet_columnar

        columnar = import_parquet_columnar(
            ingestor, path, kind, source=source, chunk_rows=chunk_rows, progress=progress
        )
        if columnar is not None:
            report.result, report.rejected, rejects = columnar
            report.rows = count_rows(path)
            _write_rejects(rejects_path, rejects, report)
            return report

    def flush(numbers: list[int], raws: list[Any]) -> None:
        if not raws:
            return
        check = ingestor.validator.orders if kind == "orders" else ingestor.validator.messages
        checked = check(raws)
        bad: dict[int, list[FieldError]] = {}
        for err in checked.errors:
            bad.setdefault(err.index, []).append(err)
        for index, errors in bad.items():
            rejects.append(
                orjson.dumps(
                    {
                        "line": numbers[index],
                        "errors": [{"field": e.field, "reason": e.reason} for e in errors],
                        "record": raws[index],
                    },
                    default=str,
                )
            )
        report.rejected += len(bad)
        if kind == "orders":
            report.result.add(ingestor.ingest_orders(checked.orders, source=source))
        else:
            report.result.add(ingestor.ingest_messages(checked.messages, source=source))
        if progress:
            progress(len(raws))

    numbers: list[int] = []
    raws: list[Any] = []
    for number, record in read_rows(path):
        report.rows += 1
        # A line that could not be read, or a JSONL object with messageId and message_id (which one is meant?)
        problem = record if isinstance(record, str) else None
        if problem is None and not flat and isinstance(record, dict):
            problem = _named_twice(map(str, record), "key")
        if problem is not None:
            report.rejected += 1
            rejects.append(orjson.dumps({"line": number, "errors": [{"field": "", "reason": problem}]}))
            if progress:
                progress(1)
            continue
        numbers.append(number)
        raws.append(to_message(kind, record, flat=flat))
        if len(raws) >= chunk_rows:
            flush(numbers, raws)
            numbers, raws = [], []
    flush(numbers, raws)
    _write_rejects(rejects_path, rejects, report)
    return report


def _write_rejects(rejects_path: Path, rejects: list[bytes], report: ImportReport) -> None:
    if rejects:
        rejects_path.write_bytes(b"\n".join(rejects) + b"\n")
        report.rejects_path = rejects_path
    elif rejects_path.exists():
        rejects_path.unlink()
