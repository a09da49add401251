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


def test_shared_options_say_what_the_registry_says_on_every_command() -> None:
    """`--rho`, `--k`, `--alpha` and `--base` take their words, ranges and defaults from the
    registry, so `run`, `bench` and `optimizers` cannot drift from it."""
    from looksam.cli._options import DEFAULT_K
    from looksam.optim import base_optimizers, list_optimizers, option_help, shared_hyperparameter

    for name in ("rho", "k", "alpha"):
        spec = next(hp for i in list_optimizers() for hp in i.hyperparameters if hp.name == name)
        assert shared_hyperparameter(name) is spec
        assert spec.help[1:] in option_help(name)
        assert spec.describe_range() in option_help(name)
    assert shared_hyperparameter("k").default == DEFAULT_K

    def shown(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        return " ".join(result.output.split())

    run_help = shown("run")
    assert option_help("k") in run_help
    assert all(base in run_help for base in base_optimizers())
    assert f"{option_help('k')} [default: {DEFAULT_K}]" in shown("bench")
