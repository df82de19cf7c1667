"""`siyu simulate`'s output folder and arguments, `siyu import simulation`, and `siyu demo`'s home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siyu.cli.demo_home import STATE_FILE, DemoRun, DemoState, read_state, write_state
from siyu.cli.main import app
from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.simulate.folder import SIMULATION_FILES
from siyu.store.fingerprint import store_fingerprint

SMALL = ("--customers", "1000", "--months", "2", "--seed", "5", "--end", "2026-10-01")


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"SIYU_HOME": str(home)})
    return result.exit_code, result.stdout, result.stderr


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show that nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fingerprint(home: Path) -> tuple[str, int]:
    with Runtime.open(Settings(home=home)) as rt:
        with rt.engine.connect() as conn:
            staff = conn.exec_driver_sql("SELECT count(*) FROM staff").scalar_one()
        return store_fingerprint(rt.engine, rt.events), staff


# -- the output folder ---------------------------------------------------------------------------------
def test_out_that_is_a_file_or_under_one_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    code, _, err = run(tmp_path / "home", "simulate", *SMALL, "--out", str(afile))
    assert code == 1 and "is a file, not a folder" in err and "Traceback" not in err
    code, _, err = run(tmp_path / "home", "simulate", *SMALL, "--out", str(afile / "sub" / "sim"))
    assert code == 1 and f"{afile} is a file" in err
    assert afile.read_text() == "mine\n"


def test_a_folder_holding_other_files_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    before = tree(out)
    code, _, err = run(tmp_path / "home", "simulate", *SMALL, "--out", str(out))
    assert code == 1 and "not empty" in err and "notes.txt" in err and "--overwrite" in err
    code, _, err = run(tmp_path / "home", "simulate", *SMALL, "--out", str(out), "--overwrite")
    assert code == 1 and "not a simulation's (notes.txt)" in err
    assert tree(out) == before


def test_overwrite_replaces_a_previous_simulation(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    assert run(tmp_path / "home", "simulate", *SMALL, "--out", str(out))[0] == 0
    first = tree(out)
    assert {name.split("/")[0] for name in first} <= SIMULATION_FILES
    code, _, err = run(tmp_path / "home", "simulate", *SMALL, "--out", str(out), "--format", "jsonl")
    assert code == 1 and "not empty" in err and tree(out) == first
    code, _, err = run(tmp_path / "home", "simulate", *SMALL, "--out", str(out), "--format", "jsonl", "--overwrite")
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert "events.jsonl" in names and "events.parquet" not in names and "customers.parquet" not in names
    assert json.loads((out / "manifest.json").read_text())["format"] == "jsonl"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", "-1"), "--seed must be 0 or more, not -1"),
        (("--end", "2026-13-01"), "--end '2026-13-01': not a day as YYYY-MM-DD"),
        (("--months", "0"), "--months must be between 1 and 60, not 0"),
        (("--months", "61"), "--months must be between 1 and 60, not 61"),
    ],
)
def test_bad_arguments_name_their_option(tmp_path: Path, args: tuple[str, str], message: str) -> None:
    out = tmp_path / "sim"
    code, _, err = run(tmp_path / "home", "simulate", "--customers", "1000", *args, "--out", str(out))
    assert code == 1 and message in err
    assert not out.exists()


def test_a_period_outside_the_calendar_leaves_a_previous_simulation_alone(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    assert run(tmp_path / "home", "simulate", *SMALL, "--out", str(out))[0] == 0
    before = tree(out)
    code, _, err = run(
        tmp_path / "home", "simulate", "--customers", "1000", "--end", "2070-01-01", "--out", str(out), "--overwrite"
    )
    assert code == 1 and "--end 2070-01-01 --months 12" in err and "shopping calendar" in err
    assert tree(out) == before


# -- siyu import simulation ----------------------------------------------------------------------------
def test_importing_a_simulation_folder_gives_the_store_of_load(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    code, _, err = run(tmp_path / "loaded", "simulate", *SMALL, "--out", str(out), "--load")
    assert code == 0, err
    code, stdout, err = run(tmp_path / "imported", "import", "simulation", str(out), "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["staff"] > 0 and all(report[k]["rejected"] == 0 for k in ("customers", "events", "orders"))
    assert fingerprint(tmp_path / "imported") == fingerprint(tmp_path / "loaded")
    again = json.loads(run(tmp_path / "imported", "import", "simulation", str(out), "--json")[1])
    assert sum(again[k]["accepted"] for k in ("customers", "events", "orders")) == 0


def test_importing_a_folder_that_is_not_a_simulation_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    code, _, err = run(tmp_path / "home", "import", "simulation", str(folder))
    assert code == 1 and "not a `siyu simulate` output folder" in err
    code, _, err = run(tmp_path / "home", "import", "simulation", str(folder), "--source", "x")
    assert code == 1 and "--source does not apply" in err
    for manifest in ("{}", "[1]", "{not json", '{"format": "csv"}'):
        (folder / "manifest.json").write_text(manifest)
        code, _, err = run(tmp_path / "home", "import", "simulation", str(folder))
        assert code == 1 and "manifest.json" in err and "Traceback" not in err, manifest


# -- siyu demo -------------------------------------------------------------------------------------------
DEMO = ("demo", "--no-serve", "--customers", "1000", "--months", "2", "--seed", "5")


def test_a_demo_load_that_stopped_is_finished_to_the_same_store(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    code, _, err = run(clean, *DEMO)
    assert code == 0, err
    state = read_state(clean)
    assert state is not None and state.complete and state.run.customers == 1000
    expected = fingerprint(clean)

    # A load that stopped after the customers: the state says so, the store holds them only.
    stopped = tmp_path / "stopped"
    sim = tmp_path / "sim"
    assert run(stopped, "simulate", *SMALL[:4], "--seed", "5", "--end", state.run.end, "--out", str(sim))[0] == 0
    assert run(stopped, "import", "customers", str(sim / "customers.parquet"), "--source", "simulator")[0] == 0
    write_state(stopped, DemoState(state.run, complete=False))
    partial = fingerprint(stopped)
    assert partial != expected

    code, _, err = run(stopped, "demo", "--no-serve", "--customers", "2000")
    assert code == 1 and "stopped before it finished" in err and "--customers 1000" in err
    assert fingerprint(stopped) == partial

    code, _, err = run(stopped, *DEMO)
    assert code == 0 and "finishing the demo load" in err
    assert fingerprint(stopped) == expected
    finished = read_state(stopped)
    assert finished is not None and finished.complete

    code, _, err = run(stopped, "demo", "--no-serve", "--customers", "3000")  # complete: nothing reloaded
    assert code == 0 and "holds the demo of" in err and fingerprint(stopped) == expected


def test_a_home_holding_other_data_is_served_as_it_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sim = tmp_path / "sim"
    assert run(home, "simulate", *SMALL, "--out", str(sim))[0] == 0
    assert run(home, "import", "customers", str(sim / "customers.parquet"))[0] == 0
    before = fingerprint(home)
    code, _, err = run(home, *DEMO)
    assert code == 0 and "no demo loaded" in err
    assert fingerprint(home) == before and not (home / STATE_FILE).exists()


def test_an_unreadable_demo_state_is_an_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / STATE_FILE).write_text("{not json")
    code, _, err = run(home, *DEMO)
    assert code == 1 and "not a demo state file" in err


def test_bad_demo_options_leave_no_state_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, _, err = run(home, "demo", "--no-serve", "--customers", "10")
    assert code == 1 and "--customers must be between 1,000 and 10,000,000, not 10" in err
    assert read_state(home) is None
    code, _, err = run(home, *DEMO)  # the next demo with good options loads
    assert code == 0, err
    state = read_state(home)
    assert state is not None and state.complete


def test_demo_runs_compare_their_options_not_their_day() -> None:
    run = DemoRun("母婴", 1000, 2, 5, "2026-01-01")
    assert run.same_options(DemoRun("母婴", 1000, 2, 5, "2026-02-01"))
    for other in (("美妆", 1000, 2, 5), ("母婴", 2000, 2, 5), ("母婴", 1000, 3, 5), ("母婴", 1000, 2, 6)):
        assert not run.same_options(DemoRun(*other, "2026-01-01"))
