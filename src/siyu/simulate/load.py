"""Load a simulator output folder into a siyu home through the ordinary import path."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from siyu.ingest.files import ImportReport, Kind, count_rows, import_file
from siyu.relations.service import RelationService
from siyu.runtime import Runtime
from siyu.simulate.run import FORMATS

#: Import order: profiles first (so registrations stitch before behaviour arrives), then events, then orders.
FILES: tuple[Kind, ...] = ("customers", "events", "orders")


class SimulationFolderError(ValueError):
    """The folder is not a simulator output."""


@dataclass
class LoadReport:
    """Counts per imported file."""

    reports: dict[str, ImportReport] = field(default_factory=dict)
    staff: int = 0

    def as_dict(self) -> dict[str, dict[str, int] | int]:
        """JSON-ready form."""
        return {"staff": self.staff, **{k: r.as_dict() for k, r in self.reports.items()}}


def data_files(folder: Path) -> list[tuple[Kind, Path]]:
    """The (kind, path) of each data file in import order; raises if the folder is not an output."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise SimulationFolderError(f"{folder}: no manifest.json — not a `siyu simulate` output folder")
    try:
        fmt = json.loads(manifest.read_text(encoding="utf-8"))["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SimulationFolderError(f"{manifest}: not a simulation's manifest ({exc!r})") from exc
    if fmt not in FORMATS:
        raise SimulationFolderError(f"{manifest}: unknown format {fmt!r}")
    found = []
    for kind in FILES:
        path = folder / f"{kind}.{fmt}"
        if not path.is_file():
            raise SimulationFolderError(f"{path}: missing")
        found.append((kind, path))
    return found


def total_rows(folder: Path) -> int:
    """Rows to import, for a progress bar."""
    return sum(count_rows(path) for _, path in data_files(folder))


def load_simulation(runtime: Runtime, folder: Path, *, progress: Callable[[int], None] | None = None) -> LoadReport:
    """Import the staff team, then customers, events and orders. Safe to repeat (imports dedupe)."""
    files = data_files(folder)
    report = LoadReport()
    load_staff(runtime, folder, report)
    for kind, path in files:
        load_file(runtime, kind, path, report, progress=progress)
    return report


def load_staff(runtime: Runtime, folder: Path, report: LoadReport) -> None:
    """Upsert the staff team of ``folder/staff.parquet``."""
    relations = RelationService(runtime.ingestor)
    for row in pq.read_table(folder / "staff.parquet").to_pylist():
        relations.upsert_staff(row["userid"], row["name"])
        report.staff += 1


def load_file(
    runtime: Runtime, kind: Kind, path: Path, report: LoadReport, *, progress: Callable[[int], None] | None = None
) -> None:
    """Import one data file of a simulation (source ``simulator``) and add its report."""
    report.reports[kind] = import_file(runtime.ingestor, path, kind, source="simulator", progress=progress)
