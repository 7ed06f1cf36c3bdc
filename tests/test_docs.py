"""The README documents every command, every flag and every public name."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import gsckit
from gsckit.cli import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_command_and_flag_is_in_the_readme(name):
    parser = _subcommands()[name]
    assert f"gsckit {name}" in README
    assert parser.description, f"gsckit {name} has no description"
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in README, f"gsckit {name} {flag} is not documented"
                assert action.help, f"gsckit {name} {flag} has no help text"


@pytest.mark.parametrize("name", [n for n in gsckit.__all__ if n != "__version__"])
def test_every_public_name_is_in_the_readme(name):
    assert name in README, f"gsckit.{name} is not documented in the README"


def test_the_readme_exit_code_table_matches_the_cli():
    from gsckit.cli import EXIT_CODES

    table = README.split("#### Exit codes", 1)[1].split("\n\n")[1]
    documented = {int(m) for m in re.findall(r"^\| \*\*(\d+)\*\* \|", table, re.MULTILINE)}
    assert documented == set(EXIT_CODES)


def test_every_make_target_is_in_the_readme():
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    for target in phony.split(":", 1)[1].split():
        if target not in ("venv", "clean"):
            assert f"make {target}" in README, f"make {target} is not documented"
