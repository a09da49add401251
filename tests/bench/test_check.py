"""The CI regression check: it passes on honest baselines and fails (exit 1) on regressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.bench.suite import Baseline, SuiteSpec, compare, measure_suite
from looksam.cli.app import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
FAST = {"workload": "synthetic-mlp", "device": "cpu", "rounds": 3, "optimizers": ["sgd", "sam"]}


def _write(path: Path, ratios: dict[str, float], tolerance: float = 0.1) -> Path:
    path.write_text(
        json.dumps({"tolerance": tolerance, "suites": [{"suite": FAST, "ratios": ratios}]})
    )
    return path


def test_doctored_baseline_makes_check_fail(tmp_path: Path) -> None:
    """SAM cannot cost 1.0 SGD steps: a baseline claiming so must be reported as a regression."""
    path = _write(tmp_path / "doctored.json", {"sgd": 1.0, "sam": 1.0}, tolerance=0.05)
    result = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output
    assert "re-measuring" in result.output  # confirmed before failing


def test_generous_baseline_passes(tmp_path: Path) -> None:
    path = _write(tmp_path / "generous.json", {"sgd": 1.0, "sam": 10.0})
    result = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "no regression" in result.output


def test_update_rewrites_the_ratios(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.json", {"sgd": 1.0, "sam": 10.0}, tolerance=0.2)
    result = runner.invoke(app, ["check", "--baseline", str(path), "--update"])
    assert result.exit_code == 0, result.output
    fresh = Baseline.read(path)
    assert fresh.tolerance == 0.2
    assert fresh.ratios[0]["sgd"] == 1.0
    assert 1.0 < fresh.ratios[0]["sam"] < 10.0
    assert fresh.measured_on["torch_version"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"suites": []}', "lacks"),
        ('{"tolerance": -1, "suites": []}', "tolerance must be"),
        ('{"tolerance": 0.1, "suites": [{"suite": {"k": 0}, "ratios": {}}]}', "k must be"),
    ],
)
def test_malformed_baselines_exit_2(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = runner.invoke(app, ["check", "--baseline", str(path)])
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_compare_flags_only_ratios_above_the_limit() -> None:
    report = measure_suite(SuiteSpec(**{**FAST, "optimizers": ("sgd", "sam")}))
    sam = next(c.ratio for c in report.costs if c.optimizer == "sam")
    tight = Baseline((report.spec,), ({"sam": sam / 1.5},), tolerance=0.1)
    loose = Baseline((report.spec,), ({"sam": sam},), tolerance=0.1)
    assert compare(tight, [report])[0].regressed
    assert not compare(loose, [report])[0].regressed


def test_committed_baseline_is_readable_and_names_the_cpu_suites() -> None:
    baseline = Baseline.read(REPO / "bench" / "baselines" / "cpu.json")
    assert {s.workload for s in baseline.suites} >= {"synthetic-mlp"}
    for spec, ratios in zip(baseline.suites, baseline.ratios, strict=True):
        assert spec.device == "cpu"
        assert set(ratios) == set(spec.optimizers)
        assert ratios["sam"] > 1.5  # SAM really costs about two steps
