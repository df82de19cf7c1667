"""What `siyu demo` has done in a SIYU_HOME, kept in ``HOME/demo.json``.

The demo simulates and loads a brand once. Loading 50k customers takes a while, and a load that
stopped half-way (Ctrl+C, a closed laptop) leaves a store with customers but no orders, which
looks loaded. So the demo writes what it is about to load, with ``complete: false``, before it
starts, and ``complete: true`` when the load has finished; a later `siyu demo` finishes a load
that stopped, with the same options and the same last day (the simulation is deterministic and
imports are idempotent, so the store is the one an uninterrupted load gives).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "demo.json"


@dataclass(frozen=True)
class DemoRun:
    """The options of one demo load; ``end`` is the simulation's last day (exclusive), ISO."""

    brand: str
    customers: int
    months: int
    seed: int
    end: str

    def describe(self) -> str:
        """The options as a reader would type them."""
        return (
            f"--brand {self.brand} --customers {self.customers} --months {self.months} "
            f"--seed {self.seed} (ending {self.end})"
        )

    def same_options(self, other: DemoRun) -> bool:
        """Whether two runs were asked for with the same options (the last day aside)."""
        return (self.brand, self.customers, self.months, self.seed) == (
            other.brand,
            other.customers,
            other.months,
            other.seed,
        )


@dataclass(frozen=True)
class DemoState:
    """A demo load begun in a home, and whether it finished."""

    run: DemoRun
    complete: bool


class DemoStateError(ValueError):
    """``demo.json`` exists but cannot be read."""


def read_state(home: Path) -> DemoState | None:
    """The demo state of ``home``, or ``None`` if no demo has begun a load there."""
    path = home / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DemoState(DemoRun(**data["run"]), bool(data["complete"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DemoStateError(f"{path}: not a demo state file ({exc}); remove it to load the demo again") from exc


def write_state(home: Path, state: DemoState) -> None:
    """Record ``state`` in ``home`` (written to a temporary file, then renamed: never half-written)."""
    path = home / STATE_FILE
    scratch = path.with_suffix(".json.tmp")
    text = json.dumps({"run": asdict(state.run), "complete": state.complete}, ensure_ascii=False) + "\n"
    scratch.write_text(text, encoding="utf-8")
    scratch.replace(path)
