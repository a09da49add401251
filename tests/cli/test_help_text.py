"""Every command's --help prints its option texts whole: Rich reads `[…]` as markup and drops
it unless escaped, which once turned "[default: the SAM family]." into "to time .".
"""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from looksam.cli.app import app

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
#: What a dropped markup tag leaves: a space before a full stop or comma, or "()".
DROPPED_TAG = re.compile(r"\w \.(\s|$)|\w ,|\(\)")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_loses_no_bracketed_text(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if DROPPED_TAG.search(line)]
    assert not lines, lines


def test_the_check_catches_a_dropped_tag() -> None:
    """The boundary: the pattern fires on what Rich leaves of an unescaped tag, not on prose."""
    assert DROPPED_TAG.search("Optimizer(s) to time .")
    assert not DROPPED_TAG.search("Optimizer(s) to time [default: the SAM family].")
