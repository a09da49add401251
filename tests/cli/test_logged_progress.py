"""Long measurements report progress in a log too: Rich's live bar is drawn only on a terminal,
so `bench` and `check` write plain lines on stderr there (CliRunner's output is not a terminal)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from looksam.cli._console import err_console, logged_progress
from looksam.cli.app import app

runner = CliRunner()


def test_bench_in_a_log_prints_its_rounds_on_stderr() -> None:
    result = runner.invoke(
        app,
        ["bench", "-w", "synthetic-mlp", "-o", "sgd", "--rounds", "3", "--device", "cpu"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("timing synthetic-mlp")]
    assert lines[0] == "timing synthetic-mlp (paired rounds): started"
    assert [re.sub(r" \(\d+ s\)$", "", ln).rsplit(" ", 1)[1] for ln in lines[1:]] == [
        "1/3",
        "2/3",
        "3/3",
    ]
    assert "timing synthetic-mlp" not in result.stdout  # the table stays clean on stdout


def test_a_line_after_each_tenth_and_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The boundary: 25 rounds report at 2, 4, …, 24 and 25, not at every round."""
    seen: list[str] = []
    monkeypatch.setattr(err_console, "print", lambda text, **_: seen.append(str(text)))
    tell = logged_progress("x", 25)
    for done in range(1, 26):
        tell(done)
    counts = [line.split(": ")[1].split(" ")[0] for line in seen[1:]]
    assert counts == [f"{n}/25" for n in (*range(2, 25, 2), 25)]
