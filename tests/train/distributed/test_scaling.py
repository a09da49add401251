"""`looksam-bench bench --nproc N`: scaling efficiency from alternating 1- and N-process runs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_workers import loopback_env
from typer.testing import CliRunner

from looksam.bench.scaling import ScalingSpec, measure_scaling, run_command
from looksam.cli.app import app
from looksam.train.runner import RunConfig, run_training

runner = CliRunner()


def test_efficiency_is_the_median_of_paired_ratios() -> None:
    template = run_training(RunConfig(workload="synthetic-mlp", optimizer="sgd", max_steps=2,
                                      device="cpu", batch_size=64))  # fmt: skip
    # (single, parallel, per-rank) per launch, in the order they must happen: 1, N, 1, N, 1, N
    script = iter(
        [(100.0, (), ()), (150.0, (75.0, 75.0), 2), (200.0, (), ()), (100.0, (40.0, 60.0), 2),
         (100.0, (), ()), (180.0, (90.0, 90.0), 2)]
    )  # fmt: skip
    launched: list[list[str]] = []

    def fake_launch(command: list[str], env: dict[str, str]) -> None:
        sps, per_rank, world = next(script)
        launched.append(command)
        assert ("--nproc" in command) == bool(world)
        result = dataclasses.replace(
            template, samples_per_second=sps, per_rank_samples_per_second=per_rank,
            world_size=world or 1,
        )  # fmt: skip
        Path(command[command.index("--json") + 1]).write_text(json.dumps(result.to_dict()))

    spec = ScalingSpec(workload="synthetic-mlp", optimizers=("sgd",), nproc=2, batch_size=64,
                       steps=5, repeats=3)  # fmt: skip
    (row,) = measure_scaling(spec, launch=fake_launch)
    assert len(launched) == 6
    assert row.single == (100.0, 200.0, 100.0)
    assert row.parallel == (150.0, 100.0, 180.0)
    # pair ratios 150/200 = 0.75, 100/400 = 0.25, 180/200 = 0.9 → median 0.75
    assert row.efficiency == pytest.approx(0.75)
    assert row.per_rank == (75.0, 75.0)  # medians of (75, 40, 90) and (75, 60, 90)


def test_k_goes_only_to_the_k_step_variants() -> None:
    spec = ScalingSpec(optimizers=("sgd", "looksam"), k=3)
    sgd = run_command(spec, "sgd", 2, Path("r.json"))
    look = run_command(spec, "looksam", 1, Path("r.json"))
    assert "--k" not in sgd
    assert sgd[-2:] == ["--nproc", "2"]
    assert look[look.index("--k") + 1] == "3"
    assert "--nproc" not in look


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nproc", "1"], "at least 2"),
        (["--nproc", "2", "-b", "255"], "does not divide by the 2 processes"),
        (["--nproc", "2", "-o", "adagrad"], "unknown optimizer 'adagrad'"),
        (["--nproc", "2", "--repeats", "0"], "repeats must be at least 1"),
        (["--nproc", "2", "-w", "imagenet-9000"], "unknown workload"),
    ],
)
def test_bad_scaling_requests_exit_2(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["bench", "-w", "synthetic-mlp", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_two_processes_against_one_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in loopback_env().items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "scaling.json"
    result = runner.invoke(
        app,
        ["bench", "-w", "synthetic-mlp", "-o", "looksam", "--nproc", "2", "-b", "256",
         "--steps", "12", "--repeats", "1", "--device", "cpu", "--json", str(out)],
        env={"COLUMNS": "200", **os.environ},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "efficiency" in result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["optimizer"] == "looksam"
    assert len(row["per_rank"]) == 2
    assert all(v > 0 for v in row["per_rank"])
    assert row["efficiency"] == pytest.approx(row["parallel"][0] / (2 * row["single"][0]))


def test_bench_launched_by_torchrun_measures_its_own_launch(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "looksam", "bench", "-w", "synthetic-mlp", "-o", "sgd", "-b", "128",
         "--steps", "12", "--repeats", "1", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, **loopback_env(), "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Data-parallel scaling") == 1  # rank 0 alone reports
    (row,) = json.loads(out.read_text())["rows"]
    assert row["nproc"] == 2
    assert len(row["per_rank"]) == 2
    assert row["single"][0] > 0
    assert row["efficiency"] == pytest.approx(row["parallel"][0] / (2 * row["single"][0]))
