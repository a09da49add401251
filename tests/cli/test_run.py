"""`looksam-bench run` / `workloads`: summary printed, JSON written, bad input exits 2 cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.bench.workloads import list_workloads
from looksam.cli.app import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_run_prints_a_summary_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = runner.invoke(
        app,
        [
            "run",
            "-w",
            "digits-noisy",
            "-o",
            "looksam",
            "--rho",
            "0.5",
            "--k",
            "2",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert "Run summary" in result.output
    assert "fwd-bwd passes" in result.output
    data = json.loads(out.read_text())
    assert data["status"] == "ok"
    assert data["config"]["hyperparameters"] == {"rho": 0.5, "k": 2}
    assert len(data["history"]) == 2
    steps = data["steps"]
    assert data["forward_backward_passes"] == steps + (steps + 1) // 2


def test_workloads_lists_the_registry() -> None:
    result = runner.invoke(app, ["workloads"], env=WIDE)
    assert result.exit_code == 0
    for info in list_workloads():
        assert info.name in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-w", "nope"], "unknown workload"),
        (["-o", "adagrad"], "unknown optimizer"),
        (["--k", "0"], "k must be"),
        (["--rho", "-1"], "rho must be"),
        (["--alpha", "-0.5"], "alpha must be"),
        (["--batch-size", "0"], "batch size"),
        (["-o", "sgd", "--rho", "0.1"], "unknown hyperparameter"),
        (["--amp", "fp8"], "amp"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    out = tmp_path / "never.json"
    result = runner.invoke(app, ["run", *args, "--json", str(out)], env=WIDE)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_json_into_missing_directory_fails_before_training(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "--json", str(tmp_path / "no" / "such" / "r.json")], env=WIDE
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_batch_larger_than_the_data_exits_2() -> None:
    result = runner.invoke(app, ["run", "-o", "sgd", "--batch-size", "100000"], env=WIDE)
    assert result.exit_code == 2
    assert "exceeds" in result.output
