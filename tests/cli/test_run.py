"""`looksam-bench run` / `workloads`: summary printed, JSON written, bad input exits 2 cleanly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from looksam.cli import _console
from looksam.cli import run as run_module
from looksam.cli.app import app
from looksam.train.distributed import LaunchError
from looksam.train.workloads import list_workloads

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


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--k", "1.5"], "'--k'"),
        (["-k", "two"], "'--k'"),
        (["--epochs", "1.5"], "'--epochs'"),
        (["--max-steps", "x"], "'--max-steps'"),
        (["--seed", "0.5"], "'--seed'"),
        (["--batch-size", "6.4"], "'--batch-size'"),
        (["--nproc", "0"], "'--nproc'"),
        (["--replica-check-every", "-1"], "'--replica-check-every'"),
        (["--rho", "big"], "'--rho'"),
    ],
)
def test_an_unusable_option_value_is_one_red_line_and_exit_2(
    tmp_path: Path, args: list[str], option: str
) -> None:
    out = tmp_path / "never.json"
    result = runner.invoke(app, ["run", *args, "--json", str(out)], env=WIDE)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output  # no usage box
    assert lines[0].startswith(f"error: Invalid value for {option}")
    assert "Usage" not in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_one_line_is_red(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, color_system="standard")
    monkeypatch.setattr(_console, "err_console", console)
    result = runner.invoke(app, ["run", "--k", "1.5"], env=WIDE)
    assert result.exit_code == 2
    assert terminal.getvalue().startswith("\x1b[1;31merror:\x1b[0m Invalid value for '--k'")


def test_nproc_hands_the_launch_to_the_library_and_exits_as_the_run_did(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[list[str], int, Path | None]] = []

    def diverged(args: list[str], nproc: int, json_path: Path | None) -> str:
        calls.append((args, nproc, json_path))
        assert json_path is not None
        json_path.write_text("{}")  # the library moves rank 0's file into place
        return "diverged"

    monkeypatch.setattr(run_module, "launch_locally", diverged)
    out = tmp_path / "r.json"
    result = runner.invoke(
        app, ["run", "-o", "sgd", "--device", "cpu", "--nproc", "2", "--json", str(out)], env=WIDE
    )
    assert result.exit_code == 1, result.output  # the run diverged: not a success
    assert f"wrote {out}" in result.output
    ((args, nproc, json_path),) = calls
    assert (args[0], nproc, json_path) == ("run", 2, out)
    assert "--nproc" not in args
    assert "--json" not in args


@pytest.mark.parametrize(
    ("raised", "exit_code", "needle"),
    [
        (KeyboardInterrupt(), 130, "interrupted: no result was written"),
        (LaunchError("no CIFAR-10 data in /x", users_fault=True), 2, "error: no CIFAR-10"),
        (LaunchError("distributed run failed: rank 1 ...", users_fault=False), 1, "rank 1"),
    ],
)
def test_a_failed_launch_is_one_line_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, exit_code: int, needle: str
) -> None:
    def launch(args: list[str], nproc: int, json_path: Path | None) -> str:
        raise raised

    monkeypatch.setattr(run_module, "launch_locally", launch)
    result = runner.invoke(app, ["run", "-o", "sgd", "--device", "cpu", "--nproc", "2"], env=WIDE)
    assert result.exit_code == exit_code, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert needle in result.output
