"""The README's CLI reference lists every command and every flag the parsers have.

The parsers are walked, not a list kept beside them, so a flag added to a
command without its README row fails here.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Iterator

import pytest

from bus.cli import build_parser
from bus.worker.__main__ import build_parser as build_worker_parser
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
_SECTION = README.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
# A row's first cell: the command words after the program, up to the first
# argument, option, bracket or quote.
_ROW = re.compile(r"^\| `python -m (?P<prog>bus(?:\.worker)?)(?P<words>(?: [a-z]+)*)")


def _rows() -> dict[tuple[str, ...], str]:
    rows: dict[tuple[str, ...], str] = {}
    for line in _SECTION.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        path = (match.group("prog"), *match.group("words").split())
        assert path not in rows, f"two README rows for {' '.join(path)}"
        rows[path] = line
    return rows


ROWS = _rows()


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Yield (command path, long options) of a parser and of each of its subcommands."""
    options = [
        option
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        for option in action.option_strings
        if option.startswith("--")
    ]
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if options or not subcommands:
        yield path, options
    for group in subcommands:
        for name, sub in group.choices.items():
            yield from _leaves(sub, (*path, name))


COMMANDS = [*_leaves(build_parser(), ("bus",)), *_leaves(build_worker_parser(), ("bus.worker",))]


@pytest.mark.parametrize(
    ("path", "options"), COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS]
)
def test_every_command_has_a_readme_row_naming_each_of_its_flags(
    path: tuple[str, ...], options: list[str]
) -> None:
    """Each command's README row names every one of its --flags."""
    row = ROWS.get(path)
    assert row is not None, f"README's CLI reference has no row for python -m {' '.join(path)}"
    missing = [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", row)]
    assert not missing, f"README row of python -m {' '.join(path)} lacks {', '.join(missing)}"


def test_the_readme_has_no_row_for_a_command_that_does_not_exist() -> None:
    """A README row names a real command (a removed one cannot linger)."""
    known = {path for path, _ in COMMANDS}
    assert set(ROWS) <= known, sorted(set(ROWS) - known)


def test_every_console_script_is_named_in_the_cli_reference() -> None:
    """The console scripts of pyproject.toml (taskbus) are mentioned in the CLI reference."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts = project["project"]["scripts"]
    assert scripts
    for name in scripts:
        assert f"`{name}`" in _SECTION, name
