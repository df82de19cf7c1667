"""The output folder of a simulation, checked before anything is written into it.

A simulation writes a fixed set of files (:data:`SIMULATION_FILES`). Writing them into a folder
that holds other things would mix two runs (a Parquet run and a JSONL run side by side, say), so a
folder must be new or empty; ``overwrite`` clears a previous simulation's files, and only those.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from siyu.ingest.files import rejects_file
from siyu.simulate.load import FILES
from siyu.simulate.run import FORMATS

_DATA = [Path(f"{kind}.{fmt}") for kind in FILES for fmt in FORMATS]

#: Every name a simulation (and importing it: the rejects files) leaves in its folder.
SIMULATION_FILES: frozenset[str] = frozenset(
    {"manifest.json", "staff.parquet", "truth"} | {p.name for p in _DATA} | {rejects_file(p).name for p in _DATA}
)


class OutFolderError(ValueError):
    """The folder cannot take a new simulation (a file, under a file, or not empty)."""


def prepare_out(out: Path, *, overwrite: bool = False) -> None:
    """Check that ``out`` can take a new simulation; with ``overwrite``, remove a previous one's files.

    Raises :class:`OutFolderError`, naming the folder and what is in the way, and changes nothing,
    when ``out`` is a file, lies under a file, or is a folder holding anything (with
    ``overwrite``: anything but a simulation's own files)."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"--out {out}: is a file, not a folder")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutFolderError(f"--out {out}: cannot be made, {ancestor} is a file")
    if not out.is_dir():
        return
    entries = sorted(out.iterdir())
    if not entries:
        return
    names = [entry.name for entry in entries]
    if not overwrite:
        raise OutFolderError(
            f"--out {out}: not empty ({len(names)} entries: {_some(names)}); choose a new or empty folder, "
            "or pass --overwrite to replace a previous simulation"
        )
    foreign = [name for name in names if name not in SIMULATION_FILES]
    if foreign:
        raise OutFolderError(
            f"--out {out}: holds files that are not a simulation's ({_some(foreign)}); "
            "--overwrite only replaces a previous simulation's files"
        )
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _some(names: list[str], shown: int = 5) -> str:
    more = f", … {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
