"""Tables read whole at 80 columns in a pipe (a CI log, a default terminal): nothing is cut."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _logs import progress_lines

from looksam.optim import DEFAULT_BASE, list_optimizers
from looksam.reports.terminal import TERMINAL_COLUMNS
from looksam.sweeps.spec import SweepSpec
from looksam.train.runner import environment, resolve_device


@pytest.mark.slow
def test_optimizers_reads_whole_at_80_columns_in_a_pipe() -> None:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "looksam", "optimizers"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in done.stdout  # no cell was cut short
    text = " ".join(" ".join(line.replace("│", " ").split()) for line in lines)
    for info in list_optimizers():
        assert f" {info.name} " in f" {text} ", info.name
        # every word of the description is there, none squeezed into fragments
        for word in info.summary.split():
            assert word in text, (info.name, word)


# ---------------------------------------------------------------------- bench, check, report

#: Rich's box-drawing characters: what separates the cells of a table.
BOX = re.compile(r"[\u2500-\u257f]")
COMMAND = str(Path(sys.executable).parent / "looksam-bench")


def _narrow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command with stdout a pipe, as a CI log or ``| tee`` runs it, at 80 columns."""
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [COMMAND, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
        check=False,
    )  # fmt: skip


def _assert_reads_whole(stdout: str, words: list[str]) -> None:
    """Every line fits 80 columns, nothing is cut, and each word shows whole as one cell word."""
    lines = stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in stdout  # no cell was cut short
    tokens = set(BOX.sub(" ", stdout).split())
    for word in words:
        assert word in tokens, f"{word!r} is not whole in:\n{stdout}"


def _lineup() -> list[str]:
    """The base and the SAM-family optimizer with the longest name (the widest cell)."""
    family = [info.name for info in list_optimizers() if info.wraps_base]
    return [DEFAULT_BASE, max(family, key=len)]


@pytest.mark.slow
def test_bench_tables_read_whole_at_80_columns_in_a_pipe() -> None:
    names = _lineup()
    done = _narrow("bench", "-w", "synthetic-mlp", "--rounds", "2", "--device", "cpu",
                   *(a for name in names for a in ("-o", name)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    headers = "optimizer median step samples/s ratio (IQR) floor overhead"
    profile = "ops plain look |θ| extra memory"
    _assert_reads_whole(done.stdout, [*names, *headers.split(), *profile.split()])
    # stderr is a pipe too (``2>&1 | tee``): the rounds show as plain lines with an ETA
    assert progress_lines(done.stderr, "timing synthetic-mlp"), done.stderr


def _baseline(tmp_path: Path, names: list[str]) -> Path:
    """A baseline with ratios and absolute samples/s on this CPU (a metric column), written
    directly: no measuring to make it."""
    suite = {"workload": "synthetic-mlp", "device": "cpu", "rounds": 2, "optimizers": names}
    device_name = environment(resolve_device("cpu")).device_name
    absolute = {"device_name": device_name, "tolerance": 0.5,
                "samples_per_second": dict.fromkeys(names, 1.0)}  # fmt: skip
    entry = {"suite": suite, "ratios": dict.fromkeys(names, 1.0), "absolute": absolute}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"tolerance": 0.1, "suites": [entry]}))
    return path


@pytest.mark.slow
def test_check_table_reads_whole_at_80_columns_in_a_pipe(tmp_path: Path) -> None:
    names = _lineup()
    done = _narrow("check", "--baseline", str(_baseline(tmp_path, names)))
    assert done.returncode in (0, 1), done.stderr  # a verdict either way, not a refusal
    headers = "workload optimizer metric baseline measured change limit verdict"
    _assert_reads_whole(done.stdout, [*names, "synthetic-mlp", "ratio", "samples/s",
                                      *headers.split()])  # fmt: skip
    assert progress_lines(done.stderr, "timing synthetic-mlp"), done.stderr  # as in a log


@pytest.mark.slow
def test_report_leaderboard_reads_whole_at_80_columns_in_a_pipe(
    tiny_sweep: tuple[SweepSpec, Path], tmp_path: Path
) -> None:
    spec, _ = tiny_sweep
    done = _narrow("report", "--sweep", spec.name, "--storage", spec.storage,
                   "--html", str(tmp_path / "r.html"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    headers = " ".join(TERMINAL_COLUMNS) + " passes/step confirmed hyperparameters"
    _assert_reads_whole(done.stdout, [*spec.optimizers, *headers.split()])
