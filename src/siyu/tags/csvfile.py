"""Reading a bulk-tagging CSV: ``person_id``, or ``external_userid`` with an optional ``staff_userid``.

``person_id`` takes a person id or ``type:value`` of an identity. Rows with ``staff_userid`` tag
the relation; rows without it tag the person. Lines are numbered as an editor shows them (the
header is line 1) so errors point at the right place; the file is checked whole before anything
is written.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from siyu.tags.errors import TagError
from siyu.tags.service import MAX_BULK
from siyu.tags.targets import Target

MAX_BYTES = 10 * 1024 * 1024
KNOWN = ("person_id", "external_userid", "staff_userid")


def read_targets(path: Path) -> tuple[list[Target], list[int]]:
    """The targets of a CSV file and their line numbers; a :class:`TagError` lists every bad line."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TagError(f"{path}: {exc.strerror or exc}") from exc
    if size > MAX_BYTES:
        raise TagError(f"{path}: {size:,} bytes; a tag import file may have at most {MAX_BYTES:,}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TagError(f"{path}: not UTF-8 text (byte {exc.start}) 文件须为 UTF-8 编码") from exc
    return parse_targets(text)


def parse_targets(text: str) -> tuple[list[Target], list[int]]:
    """Targets and line numbers from CSV text (see the module docstring)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise TagError(
            "the file is empty: it needs a header line (person_id, or external_userid[,staff_userid])"
        ) from (None)
    except csv.Error as exc:
        raise TagError(f"line 1: {exc}") from exc
    unknown = [h for h in header if h not in KNOWN]
    if unknown or len(set(header)) != len(header):
        raise TagError(
            f"line 1: columns must be person_id, or external_userid[,staff_userid]; got {header[:10]}",
            [{"line": 1, "column": h[:64], "reason": "unknown or repeated column"} for h in unknown[:20]],
        )
    has_person, has_ext = "person_id" in header, "external_userid" in header
    if has_person == has_ext:
        raise TagError("line 1: give either a person_id or an external_userid column (not both, not neither)")
    targets: list[Target] = []
    lines: list[int] = []
    errors: list[dict[str, Any]] = []
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines are allowed
            if len(targets) >= MAX_BULK:
                raise TagError(f"more than {MAX_BULK:,} rows: split the file 一次最多 {MAX_BULK:,} 行")
            if len(row) != len(header):
                errors.append(
                    {"line": line, "column": "*", "reason": f"{len(row)} fields; the header has {len(header)}"}
                )
                continue
            cells = {h: (v.strip() or None) for h, v in zip(header, row, strict=True)}
            main = "person_id" if has_person else "external_userid"
            if cells[main] is None:
                errors.append({"line": line, "column": main, "reason": "empty"})
                continue
            targets.append(
                Target(
                    person=cells.get("person_id"),
                    external_userid=cells.get("external_userid"),
                    staff_userid=cells.get("staff_userid"),
                )
            )
            lines.append(line)
    except csv.Error as exc:
        raise TagError(f"line {reader.line_num}: {exc}") from exc
    if errors:
        raise TagError(f"{len(errors)} bad line(s); nothing was written 未写入任何数据", errors[:200])
    if not targets:
        raise TagError("the file has no rows")
    return targets, lines
