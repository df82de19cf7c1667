"""Keep ``docs/`` honest: the reference pages must match the code they describe.

Three parts of the docs are generated from the code and checked here byte for byte:

* the command reference in ``docs/cli.md`` (from the Typer app),
* the settings table in ``docs/settings.md`` (from :class:`siyu.config.Settings`),
* ``docs/openapi.json`` (from the FastAPI app).

After changing a command, a setting or an endpoint, regenerate them with::

    .venv/bin/python tests/test_docs.py

The other checks are looser: every setting, command and API path is mentioned, every ``SIYU_*``
variable and every ``siyu …`` command the docs mention exists, and relative links resolve.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic_core import PydanticUndefined

from siyu.api.app import create_app
from siyu.cli.main import app as cli_app
from siyu.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
REGENERATE = ".venv/bin/python tests/test_docs.py"

#: ``SIYU_*`` environment variables the docs may mention that are not settings (test scripts use them).
NON_SETTING_VARS = {"SIYU_TEST_PG_URL", "SIYU_TEST_PG_PORT"}
#: Docs owned by others, which may not exist yet; links to them are not checked.
OTHERS_DOCS = ("docs/benchmarks.md", "docs/decisions")
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


# -- generators ---------------------------------------------------------------------------------
def _cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def iter_commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the CLI, depth first in registration order, as (path, command)."""

    def walk(path: tuple[str, ...], command: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                yield from walk((*path, name), sub)

    yield from walk(("siyu",), typer.main.get_command(cli_app))


def _visible_params(command: Any) -> list[Any]:
    return [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]


def _usage(path: tuple[str, ...], command: Any) -> str:
    parts = [*path, "[OPTIONS]"]
    parts += [p.name.upper() for p in command.params if p.param_type_name == "argument"]
    if hasattr(command, "commands"):
        parts.append("COMMAND [ARGS]...")
    return " ".join(parts)


def _param_name(p: Any) -> str:
    if p.param_type_name == "argument":
        return p.name.upper()
    names = ", ".join(p.opts)
    if p.secondary_opts:
        return f"{names} / {', '.join(p.secondary_opts)}"
    return names if p.is_flag else f"{names} {p.name.upper()}"


def _param_default(p: Any) -> str:
    if p.param_type_name == "argument":
        return "required" if p.required else ""
    if p.secondary_opts:
        return _code(p.opts[0] if p.default else p.secondary_opts[0])
    if p.is_flag or p.default is None or callable(p.default):
        return ""
    return _code(str(p.default))


def cli_reference() -> str:
    """The generated part of docs/cli.md."""
    out: list[str] = []
    for path, command in iter_commands():
        level = "#" * min(len(path) + 1, 4)
        out += [f"{level} `{' '.join(path)}`", ""]
        if command.help:
            out += [command.help.strip(), ""]
        out += ["```", _usage(path, command), "```", ""]
        params = _visible_params(command)
        if params:
            out += ["| argument / option | description | default |", "|---|---|---|"]
            out += [f"| {_code(_param_name(p))} | {_cell(p.help or '')} | {_param_default(p)} |" for p in params]
            out.append("")
        subs = getattr(command, "commands", {})
        if subs:
            out += ["| command | what it does |", "|---|---|"]
            for name, sub in subs.items():
                first = (sub.help or "").strip().splitlines()[0] if sub.help else ""
                out.append(f"| {_code(' '.join((*path, name)))} | {_cell(first)} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _type_name(annotation: Any) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "")


def _default(field: Any) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    return field.default_factory()


def settings_reference() -> str:
    """The generated part of docs/settings.md."""
    out = ["| setting | environment variable | type | default | description |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(field)
        if default is None:
            shown = "none"
        elif isinstance(default, (list, dict)):
            shown = _code(json.dumps(default, ensure_ascii=False))
        else:
            shown = _code(str(default))
        out.append(
            f"| `{name}` | `SIYU_{name.upper()}` | {_code(_type_name(field.annotation))} | {shown} "
            f"| {_cell(field.description or '')} |"
        )
    return "\n".join(out) + "\n"


def openapi_spec() -> dict[str, Any]:
    """The API's OpenAPI document (building the app opens no store)."""
    return create_app(Settings(home=Path("/nonexistent/siyu-docs"))).openapi()


def openapi_text() -> str:
    return json.dumps(openapi_spec(), indent=2, ensure_ascii=False) + "\n"


# -- generated blocks ---------------------------------------------------------------------------
def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- BEGIN GENERATED {name}: edit the code, then run {REGENERATE} -->", f"<!-- END GENERATED {name} -->")


def read_block(path: Path, name: str) -> str:
    begin, end = _markers(name)
    text = path.read_text(encoding="utf-8")
    assert begin in text and end in text, f"{path.relative_to(ROOT)} lost its generated-block markers ({begin})"
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def write_block(path: Path, name: str, body: str) -> None:
    begin, end = _markers(name)
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n\n{body}\n{end}{tail}", encoding="utf-8")


def regenerate() -> None:
    """Rewrite every generated part of the docs."""
    write_block(DOCS / "cli.md", "cli", cli_reference())
    write_block(DOCS / "settings.md", "settings", settings_reference())
    (DOCS / "openapi.json").write_text(openapi_text(), encoding="utf-8")


# -- checks -------------------------------------------------------------------------------------
def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _all_docs() -> list[Path]:
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "decisions" not in p.parts)]


def test_every_setting_is_documented() -> None:
    text = _doc("settings.md")
    missing = [n for n in Settings.model_fields if f"`{n}`" not in text or f"SIYU_{n.upper()}" not in text]
    assert not missing, f"settings missing from docs/settings.md: {missing} (run {REGENERATE})"


def test_settings_table_is_current() -> None:
    assert read_block(DOCS / "settings.md", "settings") == settings_reference(), (
        f"docs/settings.md is out of date with siyu.config.Settings: run {REGENERATE}"
    )


def test_every_command_is_documented() -> None:
    text = _doc("cli.md")
    missing = [" ".join(path) for path, _ in iter_commands() if f"`{' '.join(path)}`" not in text]
    assert not missing, f"commands missing from docs/cli.md: {missing} (run {REGENERATE})"


def test_cli_reference_is_current() -> None:
    assert read_block(DOCS / "cli.md", "cli") == cli_reference(), (
        f"docs/cli.md is out of date with the Typer app: run {REGENERATE}"
    )


def test_every_api_path_is_documented() -> None:
    text = _doc("api.md")
    missing = [
        f"{method.upper()} {path}"
        for path, ops in openapi_spec()["paths"].items()
        for method in ops
        if method in HTTP_METHODS and f"{method.upper()} {path}" not in text
    ]
    assert not missing, f"endpoints missing from docs/api.md: {missing}"


def test_openapi_json_is_current() -> None:
    committed = json.loads(_doc("openapi.json"))
    assert committed == openapi_spec(), f"docs/openapi.json is out of date with the API: run {REGENERATE}"


def test_readme_has_both_commands() -> None:
    text = README.read_text(encoding="utf-8")
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in text, f"README.md must show `{command}`"
    assert text.index("bash scripts/demo.sh") < text.index("bash scripts/test.sh"), "demo first, tests second"


def test_every_siyu_variable_in_the_docs_exists() -> None:
    known = {f"SIYU_{n.upper()}" for n in Settings.model_fields} | NON_SETTING_VARS
    for path in _all_docs():
        unknown = set(re.findall(r"\bSIYU_[A-Z_]+[A-Z]\b", path.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{path.relative_to(ROOT)} mentions settings that do not exist: {sorted(unknown)}"


def _command_lines(text: str) -> Iterator[str]:
    """Code that may run ``siyu``: inline code spans, and the lines of fenced blocks (only the
    ``$ ``-prompted ones when a block shows a session with output)."""
    fences = re.split(r"^```.*$", text, flags=re.MULTILINE)
    for i, part in enumerate(fences):
        if i % 2:  # inside a fenced block
            lines = part.splitlines()
            prompted = [line.split("$ ", 1)[1] for line in lines if line.lstrip().startswith("$ ")]
            yield from prompted or lines
        else:
            yield from re.findall(r"`([^`\n]+)`", part)


#: ``siyu`` (or ``.venv/bin/siyu``) run as a command: at the start of a line after optional
#: ``VAR=value`` assignments, or inside ``$( … )``; then its sub-command words.
SIYU_COMMAND = re.compile(r"(?:^\s*(?:[A-Z_]+=\S* )*|\$\()(?:\.venv/bin/)?siyu((?: [a-z][a-z-]*)+)")


def test_every_siyu_command_in_the_docs_exists() -> None:
    tree = {path: cmd for path, cmd in iter_commands()}
    for path in _all_docs():
        for code in _command_lines(path.read_text(encoding="utf-8")):
            for match in SIYU_COMMAND.finditer(code):
                words = match.group(1).split()
                current: tuple[str, ...] = ("siyu",)
                for word in words:
                    if not hasattr(tree[current], "commands"):
                        break  # a leaf command: the rest are its arguments
                    assert (*current, word) in tree, (
                        f"{path.relative_to(ROOT)} shows `siyu{match.group(1)}`, but "
                        f"`{' '.join(current)}` has no command {word!r}"
                    )
                    current = (*current, word)


def test_relative_links_resolve() -> None:
    for path in _all_docs():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if any(str(resolved).startswith(str(ROOT / o)) for o in OTHERS_DOCS):
                continue
            assert resolved.exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"


@pytest.mark.parametrize("name", ["cli", "settings"])
def test_generated_blocks_have_markers(name: str) -> None:
    read_block(DOCS / f"{name}.md", name)


if __name__ == "__main__":
    regenerate()
    sys.stdout.write("regenerated docs/cli.md, docs/settings.md and docs/openapi.json\n")
