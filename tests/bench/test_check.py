"""The CI regression check: it passes on honest baselines and fails (exit 1) on regressions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from looksam.bench.suite import (
    Baseline,
    BenchReport,
    CheckRow,
    StepCost,
    SuiteSpec,
    check_baseline,
    compare,
    measure_suite,
    settle,
)
from looksam.cli.app import app
from looksam.optim import list_optimizers
from looksam.train import timing
from looksam.train.runner import Environment, TrainingSession

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
FAST = {"workload": "synthetic-mlp", "device": "cpu", "rounds": 3, "optimizers": ["sgd", "sam"]}


def _write(path: Path, ratios: dict[str, float], tolerance: float = 0.1) -> Path:
    path.write_text(
        json.dumps({"tolerance": tolerance, "suites": [{"suite": FAST, "ratios": ratios}]})
    )
    return path


def test_doctored_baseline_makes_check_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAM cannot cost 1.0 SGD steps: a baseline claiming so is reported as a regression, after
    a second measurement (the fake clock puts SAM at 2×, whatever the machine is doing)."""
    _fake_clock(monkeypatch, {"sgd": 1e-3, "sam": 2e-3})
    path = _write(tmp_path / "doctored.json", {"sgd": 1.0, "sam": 1.0}, tolerance=0.05)
    result = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output
    assert "re-measuring" in result.output  # confirmed before failing


def test_generous_baseline_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, {"sgd": 1e-3, "sam": 2e-3})
    path = _write(tmp_path / "generous.json", {"sgd": 1.0, "sam": 10.0})
    result = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "no regression" in result.output


def test_update_rewrites_the_ratios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, {"sgd": 1e-3, "sam": 2.5e-3})
    path = _write(tmp_path / "b.json", {"sgd": 1.0, "sam": 10.0}, tolerance=0.2)
    result = runner.invoke(app, ["check", "--baseline", str(path), "--update"])
    assert result.exit_code == 0, result.output
    fresh = Baseline.read(path)
    assert fresh.tolerance == 0.2
    assert fresh.ratios[0] == {"sgd": 1.0, "sam": 2.5}
    assert fresh.measured_on["torch_version"]


@pytest.mark.parametrize(
    ("sam_seconds", "accepted"),
    # SAM's floor is 2 passes; the least ratio a correct timing can give is 1.45 (floor_limit).
    [(0.35e-3, False), (1.44e-3, False), (1.45e-3, True), (2e-3, True)],
)
def test_init_refuses_a_ratio_below_the_pass_floor(
    sam_seconds: float, accepted: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy machine once wrote SAM at 0.35× SGD: it is measured again, then refused (exit 2,
    nothing written); at the limit it is a measurement like any other."""
    _fake_clock(monkeypatch, {"sgd": 1e-3, "sam": sam_seconds})
    path = tmp_path / "b.json"
    args = ["check", "--init", str(path), "-o", "sgd", "-o", "sam", "--rounds", "2"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    if accepted:
        assert result.exit_code == 0, result.output
        assert Baseline.read(path).ratios[0]["sam"] == pytest.approx(sam_seconds / 1e-3)
        return
    assert result.exit_code == 2, result.output
    assert "re-measuring" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: synthetic-mlp: sam measured"), last
    assert "below what 2.00 passes per step allow (1.45×), twice" in last
    assert not path.exists()


def test_update_keeps_the_baseline_when_a_ratio_is_below_the_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "b.json", {"sgd": 1.0, "sam": 2.0})
    before = path.read_bytes()
    _fake_clock(monkeypatch, {"sgd": 1e-3, "sam": 0.5e-3})
    result = runner.invoke(app, ["check", "--baseline", str(path), "--update"])
    assert result.exit_code == 2, result.output
    assert path.read_bytes() == before


def test_bench_marks_a_ratio_below_the_floor_contended(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, {"sgd": 1e-3, "samk": 0.9e-3, "sam": 2e-3})
    args = ["bench", "-o", "samk", "-o", "sam", "--rounds", "2", "--device", "cpu"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    flagged = [line for line in result.output.splitlines() if line.startswith("contended")]
    assert len(flagged) == 1, result.output  # SAM-k at 0.9× is below 1.05×; SAM at 2× is not
    assert "samk measured 0.90× sgd, below what 1.20 passes per step allow (1.05×)" in flagged[0]


_SUITE = {"workload": "synthetic-mlp", "optimizers": ["sgd", "sam"]}


def _entry(**changes: object) -> str:
    entry: dict[str, object] = {"suite": _SUITE, "ratios": {"sgd": 1.0, "sam": 2.0}}
    entry.update(changes)
    return json.dumps({"tolerance": 0.1, "suites": [entry]})


#: Every field of a baseline, wrong: one line naming the file and the key, exit 2, nothing timed.
MALFORMED = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", 'the file must be an object {"tolerance": 0.1, "suites": [...]}, not a JSON list'),
    ("null", "not a JSON null"),
    ('{"suites": []}', "tolerance is missing"),
    ('{"tolerance": "0.1", "suites": []}', 'tolerance must be a number, got "0.1"'),
    ('{"tolerance": -1, "suites": []}', "tolerance must be >= 0, got -1"),
    ('{"tolerance": NaN, "suites": []}', "tolerance must be a number, got NaN"),
    ('{"tolerance": 0.1}', "suites is missing"),
    ('{"tolerance": 0.1, "suites": {}}', "suites must be a list"),
    ('{"tolerance": 0.1, "suites": []}', "suites is empty: a gate that measures nothing"),
    ('{"tolerance": 0.1, "suites": [3]}', "suites[0] must be an object"),
    ('{"tolerance": 0.1, "suites": [{"ratios": {}}]}', "suites[0].suite is missing"),
    (_entry(suite={"k": 0}), "suites[0].suite: k must be"),
    (_entry(suite={**_SUITE, "colour": "red"}), "suites[0].suite.colour is not a suite setting"),
    (_entry(suite={**_SUITE, "optimizers": ["adagrad"]}), "unknown optimizer 'adagrad'"),
    (_entry(ratios={}), "suites[0].ratios is empty and the suite has no absolute or accuracy"),
    (_entry(ratios=[1.0]), "suites[0].ratios must be an object"),
    (_entry(ratios={"sgd": 1.0, "sam": "2"}), 'suites[0].ratios.sam must be a number, got "2"'),
    (_entry(ratios={"sgd": 1.0, "sam": True}), "suites[0].ratios.sam must be a number, got true"),
    (_entry(ratios={"sgd": 1.0, "sam": -2}), "suites[0].ratios.sam must be >= 0, got -2"),
    (
        _entry(ratios={"sgd": 1.0, "gsam": 2.0}),
        "suites[0].ratios.gsam: the suite does not measure",
    ),
    (
        json.dumps(
            {"tolerance": 0.1, "suites": [json.loads(_entry())["suites"][0]], "measured_on": 1}
        ),
        "measured_on must be an object",
    ),
]


@pytest.mark.parametrize(("content", "needle"), MALFORMED)
def test_malformed_baselines_exit_2(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "500"})
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert result.output.count("\n") == 1, result.output  # one line
    assert f"baseline {path}" in result.output
    assert "Traceback" not in result.output


def test_compare_flags_only_ratios_above_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, {"sgd": 1e-3, "sam": 2e-3})
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


def test_a_ratio_exactly_at_the_limit_is_not_a_regression() -> None:
    at = CheckRow("w", "sam", baseline=1.0, measured=1.1, limit=1.1)
    above = CheckRow("w", "sam", baseline=1.0, measured=math.nextafter(1.1, math.inf), limit=1.1)
    assert not at.regressed
    assert above.regressed


def test_compare_puts_the_limit_at_baseline_times_one_plus_tolerance() -> None:
    report = _report("synthetic-mlp", sam=2.5)
    baseline = Baseline((report.spec,), ({"sgd": 1.0, "sam": 2.0},), tolerance=0.25)
    rows = compare(baseline, [report])
    assert [(r.optimizer, r.baseline, r.measured, r.limit) for r in rows] == [
        ("sgd", 1.0, 1.0, 1.25),
        ("sam", 2.0, 2.5, 2.5),
    ]
    assert not any(r.regressed for r in rows)  # 2.5 is exactly the limit


ENV = Environment(
    device="cpu",
    device_name="test cpu",
    torch_version="0",
    timm_version=None,
    python_version="3",
    cpu_threads=1,
    platform="test",
    git_commit=None,
)


def _report(workload: str, **ratios: float) -> BenchReport:
    """A measured suite with chosen ratios (sgd, the reference, is 1.0)."""
    spec = SuiteSpec(workload=workload, optimizers=("sgd", *ratios))
    costs = tuple(
        StepCost(name, 0.01 * ratio, 100.0 / ratio, ratio, ratio, ratio, floor=1.0)
        for name, ratio in {"sgd": 1.0, **ratios}.items()
    )
    return BenchReport(spec, 64, costs, ENV)


class _Measurements:
    """Stands in for measuring: hands out scripted reports per workload, in order, and counts."""

    def __init__(self, **scripts: list[BenchReport]) -> None:
        self.scripts = {name: list(reports) for name, reports in scripts.items()}
        self.measured: list[str] = []

    def __call__(self, spec: SuiteSpec) -> BenchReport:
        self.measured.append(spec.workload)
        return self.scripts[spec.workload].pop(0)


def _two_suite_baseline() -> Baseline:
    suites = (SuiteSpec(workload="synthetic-mlp"), SuiteSpec(workload="digits-noisy"))
    return Baseline(suites, ({"sam": 2.0}, {"sam": 2.0}), tolerance=0.1)  # limit 2.2


def test_check_passes_when_only_the_first_measurement_regresses() -> None:
    measure = _Measurements(
        **{
            "synthetic-mlp": [
                _report("synthetic-mlp", sam=3.0),
                _report("synthetic-mlp", sam=2.1),
            ],
            "digits-noisy": [_report("digits-noisy", sam=2.0)],
        }
    )
    told: list[list[str]] = []
    rows = check_baseline(_two_suite_baseline(), measure, remeasuring=told.append)
    assert told == [["synthetic-mlp"]]
    assert measure.measured == ["synthetic-mlp", "digits-noisy", "synthetic-mlp"]  # suspect only
    assert [(r.workload, r.measured) for r in rows] == [
        ("synthetic-mlp", 2.1),
        ("digits-noisy", 2.0),
    ]
    assert not any(r.regressed for r in rows)


def test_check_fails_when_both_measurements_regress() -> None:
    measure = _Measurements(
        **{
            "synthetic-mlp": [
                _report("synthetic-mlp", sam=3.0),
                _report("synthetic-mlp", sam=2.5),
            ],
            "digits-noisy": [_report("digits-noisy", sam=2.0)],
        }
    )
    rows = check_baseline(_two_suite_baseline(), measure)
    assert [(r.workload, r.measured, r.regressed) for r in rows] == [
        ("synthetic-mlp", 2.5, True),  # the milder of 3.0 and 2.5, still above 2.2
        ("digits-noisy", 2.0, False),
    ]


def test_a_clean_first_measurement_is_not_repeated() -> None:
    measure = _Measurements(
        **{
            "synthetic-mlp": [_report("synthetic-mlp", sam=2.0)],
            "digits-noisy": [_report("digits-noisy", sam=1.9)],
        }
    )
    told: list[list[str]] = []
    rows = check_baseline(_two_suite_baseline(), measure, remeasuring=told.append)
    assert told == []
    assert measure.measured == ["synthetic-mlp", "digits-noisy"]
    assert [r.measured for r in rows] == [2.0, 1.9]


def test_settle_keeps_the_milder_measurement_of_each_row() -> None:
    first = [CheckRow("w", "a", 1.0, 3.0, 1.1), CheckRow("w", "b", 1.0, 1.0, 1.1)]
    second = [CheckRow("w", "a", 1.0, 1.05, 1.1), CheckRow("w", "b", 1.0, 1.2, 1.1)]
    assert [r.measured for r in settle(first, second)] == [1.05, 1.0]


# ---------------------------------------------------------------- the committed gate, fake timer

SAM_FAMILY = [info.name for info in list_optimizers() if info.wraps_base]


def _committed_mlp_suite(tmp_path: Path) -> tuple[Path, dict[str, float], float]:
    """The committed CPU baseline's synthetic-mlp suite, with a short protocol (the fake clock
    makes every round alike, so two rounds say what thirty would)."""
    committed = json.loads((REPO / "bench" / "baselines" / "cpu.json").read_text())
    entry = next(e for e in committed["suites"] if e["suite"]["workload"] == "synthetic-mlp")
    entry["suite"].update(rounds=2, steps_per_round=5, warmup_steps=1)
    path = tmp_path / "cpu-mlp.json"
    path.write_text(json.dumps({"tolerance": committed["tolerance"], "suites": [entry]}))
    return path, entry["ratios"], float(committed["tolerance"])


def _fake_clock(monkeypatch: pytest.MonkeyPatch, step_seconds: dict[str, float]) -> None:
    """Every real training step advances a virtual clock by its optimizer's scripted time."""
    clock = [0.0]
    real_step = TrainingSession.train_step

    def scripted(self: TrainingSession, *args: Any, **kwargs: Any) -> Any:
        clock[0] += step_seconds[self.config.optimizer]
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(TrainingSession, "train_step", scripted)
    monkeypatch.setattr(timing, "now", lambda: clock[0])


def test_the_committed_baseline_covers_every_sam_family_optimizer_on_the_mlp() -> None:
    baseline = Baseline.read(REPO / "bench" / "baselines" / "cpu.json")
    mlp = next(
        r
        for s, r in zip(baseline.suites, baseline.ratios, strict=True)
        if s.workload == "synthetic-mlp"
    )
    assert set(SAM_FAMILY) <= set(mlp)
    assert 0.1 <= baseline.tolerance <= 0.15  # wide enough for a shared CI machine


def _inside(ratios: dict[str, float], tolerance: float) -> dict[str, float]:
    """Scripted step times 1 % inside every optimizer's limit (baseline × (1 + tolerance))."""
    inside = {name: 1e-3 * ratio * (1 + tolerance) * 0.99 for name, ratio in ratios.items()}
    return {**inside, "sgd": 1e-3}


def test_every_optimizer_inside_its_limit_passes_the_committed_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boundary of the test below: every optimizer 1 % inside its limit passes."""
    path, ratios, tolerance = _committed_mlp_suite(tmp_path)
    _fake_clock(monkeypatch, _inside(ratios, tolerance))
    passed = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "200"})
    assert passed.exit_code == 0, passed.output


@pytest.mark.parametrize("slower", SAM_FAMILY)
def test_a_regression_beyond_the_tolerance_fails_the_committed_gate(
    slower: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One optimizer 1 % beyond its limit (baseline × (1 + tolerance)) fails `check` with exit
    1 and is the one flagged (the others 1 % inside theirs, which passes: the test above)."""
    path, ratios, tolerance = _committed_mlp_suite(tmp_path)
    inside = _inside(ratios, tolerance)
    _fake_clock(monkeypatch, {**inside, slower: 1e-3 * ratios[slower] * (1 + tolerance) * 1.01})
    failed = runner.invoke(app, ["check", "--baseline", str(path)], env={"COLUMNS": "200"})
    assert failed.exit_code == 1, failed.output
    flagged = [line for line in failed.output.splitlines() if "REGRESSION" in line]
    assert flagged, failed.output
    assert all(f" {slower} " in line for line in flagged), failed.output
