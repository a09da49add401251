"""Long measurements report progress in a log too: Rich's live bar is drawn only on a terminal,
so `bench` and `check` write plain lines on stderr there (CliRunner's output is not a terminal)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from _logs import progress_lines
from typer.testing import CliRunner

from looksam.cli import _console
from looksam.cli._console import LogPacer, ProgressLog, err_console
from looksam.cli.app import app
from looksam.cli.sweep import LiveDisplay
from looksam.optim import DEFAULT_BASE
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
    assert [ln.split(": ")[1].split(" ")[0] for ln in lines[1:]] == ["1/3", "2/3", "3/3"]
    assert all(" spent · ETA " in ln for ln in lines[1:])
    assert "timing synthetic-mlp" not in result.stdout  # the table stays clean on stdout


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock every log line is paced by, set by the test."""
    now = [1000.0]
    monkeypatch.setattr(_console, "_clock", lambda: now[0])
    return now


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What is printed on stderr."""
    lines: list[str] = []
    monkeypatch.setattr(err_console, "print", lambda text, **_: lines.append(str(text)))
    return lines


def test_a_line_after_each_tenth_and_at_the_end(fake_clock: list[float], seen: list[str]) -> None:
    """The boundary: 25 rounds report at 2, 4, …, 24 and 25, not at every round."""
    tell = ProgressLog("x", 25)
    for done in range(1, 26):
        tell(done)
    counts = [line.split(": ")[1].split(" ")[0] for line in seen[1:]]
    assert counts == [f"{n}/25" for n in (*range(2, 25, 2), 25)]


def test_a_line_at_least_every_30_seconds_and_not_before(
    fake_clock: list[float], seen: list[str]
) -> None:
    """Between the tenths, a line once 30 s have passed since the last one: 29.9 s is not yet."""
    tell = ProgressLog("timing w", 1000, "rounds")
    assert seen == ["timing w: started"]
    for at, done in ((29.9, 1), (30.0, 2), (59.9, 3), (60.0, 4), (75.0, 5)):
        fake_clock[0] = 1000.0 + at
        tell(done)
    assert seen[1:] == [
        "timing w: 2/1000 rounds · 30s spent · ETA 4h9m30s",
        "timing w: 4/1000 rounds · 1m spent · ETA 4h9m",
    ]


def test_the_pacer_counts_from_its_last_line(fake_clock: list[float]) -> None:
    pacer = LogPacer()
    fake_clock[0] += 29.9
    assert not pacer.due()
    fake_clock[0] += 0.1
    assert pacer.due()
    assert pacer.stamp(0, 10) == " · 30s spent"  # nothing done yet: no ETA
    assert not pacer.due()
    fake_clock[0] += 30.0
    assert pacer.due()
    assert pacer.stamp(5, 10) == " · 1m spent · ETA 1m"


def test_advise_in_a_log_shows_life_while_a_run_trains(
    fake_clock: list[float], seen: list[str]
) -> None:
    from looksam.cli.advise import AdviseDisplay

    display = AdviseDisplay()
    display.log = True
    display.phase("search", "4 trials per candidate")
    for at, step in ((10.0, 1), (29.9, 2), (30.0, 3), (45.0, 4)):
        fake_clock[0] = 1000.0 + at
        display.epoch(DEFAULT_BASE, 0, step, 100)
    assert seen == [f"search: {DEFAULT_BASE} seed 0: step 3/100 · 30s spent · ETA 16m10s"]


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


# ---------------------------------------------------------------------- real processes, in a log


def _logged(*args: str, cwd: Path) -> str:
    """The real command with stdout and stderr pipes (``2>&1 | tee``); returns its stderr."""
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    command = str(Path(sys.executable).parent / "looksam-bench")
    done = subprocess.run(
        [command, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
        check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: check's verdict on a busy machine
    return done.stderr


# bench and check in a log: tests/cli/test_narrow_tables.py runs them with both pipes and
# checks their progress lines beside their tables (one real process each, not two).


@pytest.mark.slow
def test_diagnose_in_a_log_says_its_steps_with_an_eta(tmp_path: Path) -> None:
    html = str(tmp_path / "d.html")
    stderr = _logged("diagnose", "-w", "digits-noisy", "--k", "1", "--steps", "12",
                     "--device", "cpu", "--html", html, cwd=tmp_path)  # fmt: skip
    lines = progress_lines(stderr, "diagnose: ")
    assert lines, stderr
    assert lines[-1].split(": ")[-1].startswith("12/12 steps"), stderr


@pytest.mark.slow
def test_advise_in_a_log_says_its_cost_bench_with_an_eta(tmp_path: Path) -> None:
    from looksam.optim import full_sam
    from looksam.sweeps.advise import default_candidates

    names = default_candidates(full_sam().name, DEFAULT_BASE)[:3]
    stderr = _logged("advise", "-w", "digits-noisy", "--budget", "10m", "--dry-run",
                     "--optimizers", ",".join(names), cwd=tmp_path)  # fmt: skip
    assert progress_lines(stderr, "cost bench: "), stderr
