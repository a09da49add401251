"""Tables read whole at 80 columns in a pipe (a CI log, a default terminal): nothing is cut."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from looksam.optim import list_optimizers


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
