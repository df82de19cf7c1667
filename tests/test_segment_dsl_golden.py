"""Golden files of the segment language: ``tests/golden/segments/*.txt``.

Each file is a list of cases::

    === input
    did order_paid >= 2 in last 90d where amount_fen >= 10000
    === tree
    { …the JSON form… }
    === text
    did order_paid >= 2 where amount_fen >= 10000 in last 90d

or, for input that must be refused, ``=== error`` followed by the error as JSON (kind, position,
both languages). Lines before the first ``===`` are comments. After a deliberate change to the
language, rewrite every expected section from the inputs with::

    .venv/bin/python tests/test_segment_dsl_golden.py --regenerate

and review the diff: the inputs are the specification, the outputs are what the code says.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from siyu.segments import SegmentError, from_json, parse, to_json, to_text

GOLDEN = Path(__file__).resolve().parent / "golden" / "segments"
SECTIONS = ("input", "tree", "text", "error")


@dataclass
class Case:
    file: str
    index: int
    sections: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.index}"


def read_cases(path: Path) -> tuple[str, list[Case]]:
    """The comment header of a golden file and its cases."""
    header: list[str] = []
    raw_cases: list[dict[str, list[str]]] = []
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("=== "):
            section = line[4:].strip()
            assert section in SECTIONS, f"{path.name}: unknown section {section!r}"
            if section == "input":
                raw_cases.append({})
            assert raw_cases, f"{path.name}: a case must start with === input"
            raw_cases[-1][section] = []
        elif not raw_cases:
            header.append(line)
        else:
            raw_cases[-1][section].append(line)
    cases = [
        Case(path.name, i + 1, {k: "\n".join(v).strip("\n") for k, v in raw.items()}) for i, raw in enumerate(raw_cases)
    ]
    return "\n".join(header), cases


def expected_sections(text: str) -> dict[str, str]:
    """What the code says about one input: its tree and canonical text, or its error."""
    try:
        tree = parse(text)
    except SegmentError as error:
        return {"error": json.dumps(error.to_dict(), ensure_ascii=False, indent=2)}
    return {"tree": json.dumps(to_json(tree), ensure_ascii=False, indent=2), "text": to_text(tree)}


def all_cases() -> list[Case]:
    return [case for path in sorted(GOLDEN.glob("*.txt")) for case in read_cases(path)[1]]


def regenerate() -> None:
    """Rewrite the expected sections of every golden file from its inputs."""
    for path in sorted(GOLDEN.glob("*.txt")):
        header, cases = read_cases(path)
        out = [header.rstrip("\n"), ""] if header.strip() else []
        for case in cases:
            out += ["=== input", case.sections["input"]]
            for name, body in expected_sections(case.sections["input"]).items():
                out += [f"=== {name}", body]
            out.append("")
        path.write_text("\n".join(out), encoding="utf-8")


CASES = all_cases()


def test_golden_files_exist_and_cover_the_issue_examples() -> None:
    inputs = {c.sections["input"] for c in CASES}
    assert len(CASES) >= 60
    assert "did add_contact then order_paid within 7d in last 60d" in inputs
    assert sum("error" in c.sections for c in CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden(case: Case) -> None:
    got = expected_sections(case.sections["input"])
    expected = {k: v for k, v in case.sections.items() if k != "input"}
    assert set(got) == set(expected), f"{case.id}: sections differ; run {sys.argv[0]} --regenerate and review"
    for name, body in expected.items():
        if name in ("tree", "error"):
            assert json.loads(got[name]) == json.loads(body), f"{case.id}: {name} differs"
        else:
            assert got[name] == body, f"{case.id}: {name} differs"
    if "tree" in expected:
        tree = parse(case.sections["input"])
        assert from_json(json.loads(expected["tree"])) == tree
        assert parse(expected["text"]) == tree


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(f"usage: {sys.argv[0]} --regenerate")
    regenerate()
    sys.stdout.write(f"regenerated {len(all_cases())} cases in {GOLDEN}\n")
