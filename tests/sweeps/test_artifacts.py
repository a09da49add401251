"""The end of `looksam-bench sweep`: its report and spec are attached to each study's MLflow parent
run, kept beside the tracking store (never in ./mlruns), with any URL password masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from looksam.cli.app import app

runner = CliRunner()
SECRET = "hunter2-not-for-artifacts"


def test_a_tiny_sweep_attaches_its_report_and_spec_to_every_parent_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "art.toml"
    spec.write_text(
        f"# results also go to postgresql://optuna:{SECRET}@db.internal/optuna\n"
        "[sweep]\nname = 'art'\n"
        "[workload]\nname = 'digits-noisy'\nepochs = 1\ndevice = 'cpu'\n"
        "[optimizers]\nnames = ['sgd']\n"
        "[space.common]\nlr = {low = 0.01, high = 0.1, log = true}\n"
        "[budget]\nn_trials = 1\n[timing]\nrounds = 2\nsteps = 2\n"
    )
    # Absolute: MLflow caches a store per URI in the process (a relative one would follow
    # this test into other folders); the sweep still runs in tmp_path.
    store = f"sqlite:///{tmp_path}/runs/mlflow.db"
    result = runner.invoke(
        app, ["sweep", str(spec), "--tracking-uri", store], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "--sweep art" in result.output  # how to open its experiment

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("art")
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], "tags.`looksam.role` = 'study'")
    assert [r.info.run_name for r in parents] == ["art/digits-noisy/sgd"]
    folder = tmp_path / "runs" / "mlartifacts" / "art"
    for parent in parents:
        names = sorted(f.path for f in client.list_artifacts(parent.info.run_id))
        assert names == ["art.html", "art.toml"]
        kept = folder / parent.info.run_id / "artifacts"
        assert (kept / "art.html").read_bytes() == (tmp_path / "reports" / "art.html").read_bytes()
        uploaded = (kept / "art.toml").read_text()
        assert SECRET not in uploaded
        assert "postgresql://***@db.internal/optuna" in uploaded
    trials = client.search_runs([experiment.experiment_id], "tags.`looksam.role` = 'trial'")
    assert trials
    assert all(not client.list_artifacts(t.info.run_id) for t in trials)
    assert not (tmp_path / "mlruns").exists()
