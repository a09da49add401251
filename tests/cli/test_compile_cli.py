"""`run --compile-mode`: CUDA-graph modes are refused up front for optimizers that move weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.optim import list_optimizers
from looksam.train.runner import CUDA_GRAPH_MODES, RunConfig, validate_config

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.mark.parametrize("mode", CUDA_GRAPH_MODES)
def test_cuda_graph_mode_with_a_sam_optimizer_exits_2_before_anything(
    tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "never.json"
    result = runner.invoke(
        app,
        ["run", "-o", "looksam", "--compile-mode", mode, "--device", "cpu", "--json", str(out)],
        env=WIDE,
    )
    assert result.exit_code == 2, result.output
    assert f"--compile-mode {mode} captures CUDA graphs" in result.output
    assert "max-autotune-no-cudagraphs" in result.output  # what to use instead
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_compile_mode_exits_2() -> None:
    result = runner.invoke(app, ["run", "--compile-mode", "fastest"], env=WIDE)
    assert result.exit_code == 2
    assert "unknown --compile-mode 'fastest'" in result.output


def test_the_registry_decides_which_optimizers_may_use_cuda_graphs() -> None:
    """Base optimizers keep their weights in place and may; every wrapper here may not. The
    boundary is the mode: the same wrapper with a mode without CUDA graphs is accepted."""
    for info in list_optimizers():
        config = RunConfig(
            workload="digits-noisy",
            optimizer=info.name,
            compile=True,
            compile_mode="reduce-overhead",
        )
        if info.cuda_graphs:
            validate_config(config)
        else:
            with pytest.raises(ValueError, match="captures CUDA graphs"):
                validate_config(config)
            for mode in ("default", "max-autotune-no-cudagraphs"):
                validate_config(
                    RunConfig("digits-noisy", info.name, compile=True, compile_mode=mode)
                )
    assert {i.cuda_graphs for i in list_optimizers()} == {True, False}
