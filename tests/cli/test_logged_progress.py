"""Long measurements report progress in a log too: Rich's live bar is drawn only on a terminal,
so `bench` and `check` write plain lines on stderr there (CliRunner's output is not a terminal)."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from looksam.cli._console import err_console, logged_progress
from looksam.cli.app import app
from looksam.cli.sweep import LiveDisplay
from looksam.sweeps.spec import parse_spec
from looksam.sweeps.study import TrialOutcome

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


def _outcome(optimizer: str, number: int, accuracy: float | None, stage: str = "search") -> Any:
    from looksam.reports.model import TrialPoint

    point = SimpleNamespace(accuracy=accuracy)
    return TrialOutcome(
        optimizer, number, "COMPLETE", stage, {}, (accuracy or 0.0,), None,
        cast(TrialPoint, point),
    )  # fmt: skip


def test_a_sweep_in_a_log_says_what_it_did_and_shows_life_between_trials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One line per trial, and while a trial trains one at least every 30 s, never more."""
    seen: list[str] = []
    monkeypatch.setattr(err_console, "print", lambda text, **_: seen.append(str(text)))
    now = [100.0]
    display = LiveDisplay(parse_spec({"sweep": {"name": "q"}}, "q.toml"), clock=lambda: now[0])
    display.log = True
    monkeypatch.setattr(display, "_render", lambda: "")  # the live view is not drawn in a log
    display.study_started("sam", "search", 0, 4)
    display.study_started("sgd", "search", 0, 4)
    display.trial_started("sam", 0, {})
    for step, at in ((10, 110.0), (20, 129.9), (30, 130.0), (40, 150.0), (50, 160.0)):
        now[0] = at
        display.epoch("sam", 0, step, 100)
    assert seen == [
        "sweep q: sam seed 0: step 30/100 · 0/8 trials and seeds · 30s spent",
        "sweep q: sam seed 0: step 50/100 · 0/8 trials and seeds · 1m spent",
    ]
    now[0] = 180.0
    display.trial_finished(_outcome("sam", 0, 0.9612), 1, 4)
    assert seen[-1] == "sweep q: sam #0 96.12 % · 1/8 trials and seeds · 1m20s spent · ETA 9m20s"


def test_a_sweep_on_a_terminal_prints_no_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(err_console, "print", lambda text, **_: seen.append(str(text)))
    display = LiveDisplay(parse_spec({"sweep": {"name": "q"}}, "q.toml"), clock=lambda: 1e9)
    display.log = False
    monkeypatch.setattr(display, "_render", lambda: "")
    display.study_started("sam", "search", 0, 4)
    display.epoch("sam", 0, 1, 100)
    display.trial_finished(_outcome("sam", 0, 0.5), 1, 4)
    assert seen == []
