"""The CLI surface: help, version, the optimizers table, user errors exit 2 without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.optim import list_optimizers

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "optimizers" in result.output
    assert "bench" in result.output
    assert "check" in result.output


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "optimizers" in result.output


def test_version() -> None:
    from looksam import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"looksam-bench {__version__}"


def test_optimizers_lists_every_registered_name_with_its_cost() -> None:
    result = runner.invoke(app, ["optimizers"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for info in list_optimizers():
        row = next(line for line in lines if line.startswith(f"│ {info.name} "))
        low, high = info.pass_range({"k": 5} if info.takes_k else None)
        assert (f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}") in row
        assert info.paper.split(",")[0] in result.output  # the paper it implements
    assert "1 + 1/k = 1.20" in result.output  # k-step variants at the default k=5
    sam = next(line for line in lines if line.startswith("│ sam "))
    assert "2.00" in sam
    assert "rho=0.05" in sam
    # what the contract's methods need from the loop, from the registry's flags
    needs = [line for line in lines if "needs: " in line]
    assert len(needs) == sum(1 for i in list_optimizers() if not i.drop_in)
    assert any("sample ids" in line for line in needs)


def test_optimizers_cost_follows_k() -> None:
    result = runner.invoke(app, ["optimizers", "--k", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "1 + 1/k = 1.50" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["optimizers", "--k", "0"],
        ["bench", "--workload", "resnet9000"],
        ["bench", "--optimizer", "adagrad"],
        ["bench", "--k", "0"],
        ["bench", "--rounds", "0"],
        ["bench", "--batch-size", "0"],
        ["bench", "--amp", "fp8"],
        ["check", "--baseline", "does/not/exist.json"],
    ],
)
def test_user_errors_exit_2_with_one_line(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output


def test_bench_unknown_optimizer_lists_valid_names() -> None:
    result = runner.invoke(app, ["bench", "--optimizer", "adagrad"])
    assert "looksam" in result.output


def test_bench_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            "-w",
            "synthetic-mlp",
            "-o",
            "looksam",
            "--rounds",
            "2",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "Step cost on synthetic-mlp" in result.output
    data = json.loads(out.read_text())
    rows = data["costs"]
    assert [r["optimizer"] for r in rows] == ["sgd", "looksam"]
    assert rows[0]["ratio"] == 1.0
    assert rows[1]["floor"] == pytest.approx(1.2)
    assert rows[1]["overhead"] == pytest.approx(rows[1]["ratio"] - 1.2)
    assert data["environment"]["torch_version"]
    # What each step is made of, on screen and in the file: LookSAM holds two flat rows and w + ε.
    assert "extra memory" in result.output
    profiles = {p["optimizer"]: p for p in data["profiles"]}
    assert profiles["sgd"]["extra_bytes"] == 0
    assert profiles["looksam"]["extra_bytes"] > 2 * profiles["sgd"]["state_bytes"]
    assert profiles["looksam"]["look_ops"] > profiles["looksam"]["plain_ops"]


def test_installed_entry_point_runs() -> None:
    """One real process through the console script, as a user would call it."""
    exe = shutil.which("looksam-bench") or str(Path(sys.executable).parent / "looksam-bench")
    proc = subprocess.run(
        [exe, "optimizers"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "layerlooksam" in proc.stdout
    bad = subprocess.run(
        [exe, "optimizers", "--k", "-3"], capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
