"""`looksam-bench sweep` catches what would otherwise surface after training, and reports
a sweep whose every trial failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def _spec(tmp_path: Path, lr: str = "{low = 0.01, high = 0.1, log = true}") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(
        "[sweep]\nname = 's'\n"
        "[workload]\nname = 'digits-noisy'\nepochs = 1\ndevice = 'cpu'\n"
        "[optimizers]\nnames = ['sgd']\n"
        f"[space.common]\nlr = {lr}\n"
        "[budget]\nn_trials = 2\n[timing]\nrounds = 2\nsteps = 2\n"
    )
    return path


@pytest.mark.parametrize("blocked", ["runs", "reports"])
def test_an_output_folder_that_is_a_file_fails_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)
    (tmp_path / blocked).write_text("not a folder")
    result = runner.invoke(app, ["sweep", str(spec)], env=WIDE)
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.output
    assert "is a file, not a folder" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.toml", blocked])
    dry = runner.invoke(app, ["sweep", str(spec), "--dry-run"], env=WIDE)
    assert dry.exit_code == 2  # the dry run makes the same checks


def test_an_unreachable_database_creates_no_mlflow_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)
    result = runner.invoke(
        app, ["sweep", str(spec), "--storage", "postgresql://u:p@127.0.0.1:9/x"], env=WIDE
    )
    assert result.exit_code == 2, result.output
    assert "cannot open storage" in result.output
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_a_sweep_whose_every_trial_diverges_still_reports_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, lr="{low = 1e5, high = 1e6, log = true}")
    result = runner.invoke(app, ["sweep", str(spec), "--no-mlflow"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Failed trials" in result.output
    assert "diverged ×2" in result.output
    assert (tmp_path / "reports" / "s.html").exists()
    again = runner.invoke(app, ["report", str(spec)], env=WIDE)
    assert again.exit_code == 0, again.output
    assert "diverged ×2" in again.output
