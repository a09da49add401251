"""`check` for a team's own CI: --init, --json/--markdown, absolute mode, the accuracy guard."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from looksam.bench.check_summary import summary_dict, summary_markdown
from looksam.bench.suite import (
    AbsoluteExpectation,
    AccuracyExpectation,
    Baseline,
    BenchReport,
    CheckRow,
    StepCost,
    SuiteSpec,
    compare,
    compare_accuracy,
    settle,
)
from looksam.cli.app import app
from looksam.train.runner import environment, resolve_device, run_training

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
ENV = {"COLUMNS": "200"}
#: One thread: on a busy two-core machine, two threads per process mostly wait for each other.
THREADS = 1
#: The smallest honest suite: two optimizers, few rounds, on the CPU.
TINY = ["-w", "synthetic-mlp", "-o", "sgd", "-o", "sam", "--rounds", "2", "--device", "cpu"]


#: Loaded by every Python the real-process tests start (``sitecustomize``): a fake clock on which
#: SAM's step costs exactly two of SGD's, so what passes or fails never depends on how busy the
#: machine is. The steps still train for real; only the clock that times them is scripted.
FAKE_CLOCK = """
import looksam.train.timing as timing
from looksam.train.runner import TrainingSession

_clock = [0.0]
_seconds = {"sgd": 1e-3, "sam": 2e-3}
_real_step = TrainingSession.train_step


def _scripted_step(self, *args, **kwargs):
    _clock[0] += _seconds[self.config.optimizer]
    return _real_step(self, *args, **kwargs)


TrainingSession.train_step = _scripted_step
timing.now = lambda: _clock[0]
"""


def _cli(*args: str, clock: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, as a CI job runs it (``clock``: a folder holding
    the fake clock's ``sitecustomize.py``)."""
    env = {**os.environ, **ENV, "OMP_NUM_THREADS": str(THREADS)}
    if clock is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clock), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "looksam", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _fake_clock_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "clock"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FAKE_CLOCK)
    return folder


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env=ENV)


def _one_line_error(result: Any, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert needle in lines[0]


def _doctor(path: Path, out: Path, edit: Any) -> Path:
    data = json.loads(path.read_text())
    edit(data["suites"][0])
    out.write_text(json.dumps(data, indent=2))
    return out


# ------------------------------------------------------------------ real processes


def test_init_check_and_a_doctored_baseline_in_real_processes(tmp_path: Path) -> None:
    base = tmp_path / "ci.json"
    clock = _fake_clock_folder(tmp_path)
    init = _cli(
        "check",
        "--init",
        str(base),
        *TINY,
        "--tolerance",
        "3",
        "--absolute",
        "--absolute-tolerance",
        "0.95",
        clock=clock,
    )
    assert init.returncode == 0, init.stderr
    recorded = Baseline.read(base)
    assert recorded.ratios[0] == {"sgd": 1.0, "sam": 2.0}  # the fake clock's, exactly
    assert recorded.suites[0].device == "cpu"
    assert set(recorded.ratios[0]) == {"sgd", "sam"}
    absolute = recorded.absolute[0]
    assert absolute is not None
    assert absolute.device_name == environment(resolve_device("cpu")).device_name
    assert absolute.samples_per_second["sgd"] > 0
    assert recorded.accuracy == (None,)

    ok = _cli(
        "check",
        "--baseline",
        str(base),
        "--json",
        str(tmp_path / "ok.json"),
        "--markdown",
        str(tmp_path / "ok.md"),
        clock=clock,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    summary = json.loads((tmp_path / "ok.json").read_text())
    assert summary["passed"] is True
    assert summary["regressions"] == 0
    assert [(r["optimizer"], r["metric"]) for r in summary["rows"]] == [
        ("sgd", "ratio"),
        ("sam", "ratio"),
        ("sgd", "samples/s"),
        ("sam", "samples/s"),
    ]
    sam = summary["rows"][1]
    assert sam["baseline"] == recorded.ratios[0]["sam"]
    assert sam["max"] == pytest.approx(4 * recorded.ratios[0]["sam"])
    assert sam["min"] is None
    assert sam["passed"] is True
    assert summary["environment"]["device"] == "cpu"
    markdown = (tmp_path / "ok.md").read_text()
    assert markdown.startswith("### looksam-bench check: ✅ no regression")
    assert "| synthetic-mlp | sam | ratio |" in markdown

    def shrink(entry: dict[str, Any]) -> None:
        entry["ratios"]["sam"] = 0.05  # SAM cannot cost a twentieth of an SGD step

    doctored = _doctor(base, tmp_path / "doctored.json", shrink)
    bad = _cli(
        "check",
        "--baseline",
        str(doctored),
        "--json",
        str(tmp_path / "bad.json"),
        "--markdown",
        str(tmp_path / "bad.md"),
        clock=clock,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "re-measuring" in bad.stdout  # confirmed once more before failing
    failed = json.loads((tmp_path / "bad.json").read_text())
    assert failed["passed"] is False
    assert [(r["optimizer"], r["metric"]) for r in failed["rows"] if not r["passed"]] == [
        ("sam", "ratio")
    ]
    markdown = (tmp_path / "bad.md").read_text()
    assert markdown.startswith("### looksam-bench check: ❌ 1 regression")
    assert "❌ REGRESSION" in markdown
    assert "- synthetic-mlp · sam · ratio: measured" in markdown
    assert (
        "- synthetic-mlp · sam · ratio: measured 2.000, allowed ≤ 0.200 (baseline 0.050)"
        in markdown
    )


# ------------------------------------------------------------------ refusals, before measuring


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-w", "synthetic-mlp"], "--workload only applies with --init PATH"),
        (["--absolute", "--accuracy-steps", "3"], "--absolute, --accuracy-steps only apply"),
        (["--init", "X", "--update"], "give one"),
        (["--init", "X", "--baseline", "b.json"], "leave out --baseline"),
        (["--init", "X", "--json", "r.json"], "--json and --markdown record a check"),
        (["--update", "--markdown", "-"], "--json and --markdown record a check"),
        (["--init", "X", "--absolute-tolerance", "0.2"], "only applies with --absolute"),
        (["--init", "X", "--accuracy-tolerance", "0.1"], "only applies with --accuracy-steps"),
        (["--init", "X", "--tolerance", "-0.1"], "--tolerance must be >= 0"),
        (["--init", "X", "--absolute", "--absolute-tolerance", "1"], "must be in [0, 1)"),
        (["--init", "X", "-w", "nope"], "unknown workload 'nope'"),
        (["--init", "X", "-o", "nope"], "nope"),
        (["--init", "X", "--amp", "fp8"], "unknown --amp"),
        (["--init", "X", "--rounds", "0"], "rounds must be >= 1"),
        (["--init", "X", "--device", "tpu"], "unknown device"),
        (
            ["--init", "X", "-w", "synthetic-mlp", "--accuracy-steps", "5"],
            "synthetic-mlp trains on random data and measures no accuracy",
        ),
        (["--init", "X", "-w", "digits-noisy", "--accuracy-steps", "0"], "must be >= 1"),
    ],
)
def test_unusable_requests_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [str(tmp_path / "new.json") if a == "X" else a for a in args]
    result = _invoke("check", *args)
    _one_line_error(result, needle)
    assert not (tmp_path / "new.json").exists()


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("keep me")
    _one_line_error(_invoke("check", "--init", str(path), *TINY), "pass --force to overwrite")
    assert path.read_text() == "keep me"
    result = _invoke("check", "--init", str(path), *TINY, "--force")
    assert result.exit_code == 0, result.output
    assert Baseline.read(path).suites[0].optimizers == ("sgd", "sam")


def test_init_refuses_a_missing_directory(tmp_path: Path) -> None:
    _one_line_error(
        _invoke("check", "--init", str(tmp_path / "no" / "b.json"), *TINY), "does not exist"
    )


def test_timm_synthetic_workloads_refuse_the_accuracy_guard(tmp_path: Path) -> None:
    result = _invoke(
        "check",
        "--init",
        str(tmp_path / "b.json"),
        "-w",
        "timm:resnet10t",
        "--data",
        "synthetic",
        "--accuracy-steps",
        "5",
    )
    _one_line_error(result, "measures no accuracy")


# ------------------------------------------------------------------ absolute mode


def _baseline_file(path: Path, **entry: Any) -> Path:
    suite = {"workload": "synthetic-mlp", "device": "cpu", "rounds": 2, "optimizers": ["sgd"]}
    path.write_text(
        json.dumps({"tolerance": 0.1, "suites": [{"suite": suite, "ratios": {}, **entry}]})
    )
    return path


def _here() -> str:
    return environment(resolve_device("cpu")).device_name


def test_absolute_baseline_from_another_device_is_refused(tmp_path: Path) -> None:
    path = _baseline_file(
        tmp_path / "b.json",
        absolute={
            "device_name": "Imaginary TPU v9",
            "tolerance": 0.1,
            "samples_per_second": {"sgd": 1.0},
        },
    )
    result = _invoke("check", "--baseline", str(path), "--json", str(tmp_path / "r.json"))
    _one_line_error(result, "measured on 'Imaginary TPU v9'")
    assert repr(_here()) in result.output
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("samples", "exit_code"),
    [(1.0, 0), (1e12, 1)],  # far below anything measured / far above
)
def test_absolute_samples_per_second_pass_and_fail(
    tmp_path: Path, samples: float, exit_code: int
) -> None:
    path = _baseline_file(
        tmp_path / "b.json",
        absolute={
            "device_name": _here(),
            "tolerance": 0.5,
            "samples_per_second": {"sgd": samples},
        },
    )
    result = _invoke("check", "--baseline", str(path), "--markdown", "-")
    assert result.exit_code == exit_code, result.output
    assert "| synthetic-mlp | sgd | samples/s |" in result.output  # Markdown on stdout
    assert ("- synthetic-mlp · sgd · samples/s: measured" in result.output) == bool(exit_code)


# ------------------------------------------------------------------ accuracy guard


@pytest.fixture(scope="module")
def accuracy_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One --init with the accuracy guard on digits-noisy, shared by the tests below."""
    path = tmp_path_factory.mktemp("accuracy") / "acc.json"
    result = _invoke(
        "check",
        "--init",
        str(path),
        "-w",
        "digits-noisy",
        "-o",
        "sgd",
        "-o",
        "looksam",
        "--rounds",
        "1",
        "--device",
        "cpu",
        "--tolerance",
        "100",
        "--accuracy-steps",
        "12",
    )
    assert result.exit_code == 0, result.output
    assert "final accuracy after 12 steps" in result.output
    return path


def test_accuracy_guard_is_recorded_bit_for_bit_on_cpu(accuracy_baseline: Path) -> None:
    guard = Baseline.read(accuracy_baseline).accuracy[0]
    assert guard is not None
    assert (guard.steps, guard.seed, guard.tolerance, guard.threads) == (12, 0, 0.0, THREADS)
    assert set(guard.final_accuracy) == {"sgd", "looksam"}
    assert all(0.0 <= v <= 1.0 for v in guard.final_accuracy.values())


def test_accuracy_guard_passes_unchanged(
    accuracy_baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """...and trains with the threads it was recorded with, whatever the process uses."""
    threads_seen: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads_seen.append(torch.get_num_threads())
        return run_training(*args, **kwargs)

    monkeypatch.setattr("looksam.bench.suite.run_training", spy)
    out = tmp_path / "r.json"
    torch.set_num_threads(THREADS + 1)
    try:
        result = _invoke("check", "--baseline", str(accuracy_baseline), "--json", str(out))
        assert torch.get_num_threads() == THREADS + 1  # restored
    finally:
        torch.set_num_threads(THREADS)
    assert result.exit_code == 0, result.output
    assert threads_seen == [THREADS, THREADS]
    rows = [r for r in json.loads(out.read_text())["rows"] if r["metric"] == "accuracy"]
    guard = Baseline.read(accuracy_baseline).accuracy[0]
    assert guard is not None
    assert {r["optimizer"]: r["measured"] for r in rows} == guard.final_accuracy  # exactly
    assert all(r["min"] == r["max"] == r["baseline"] for r in rows)


def test_accuracy_guard_fails_on_a_doctored_accuracy(
    accuracy_baseline: Path, tmp_path: Path
) -> None:
    def nudge(entry: dict[str, Any]) -> None:
        entry["accuracy"]["final_accuracy"]["looksam"] += 1e-9  # not even a whole sample

    doctored = _doctor(accuracy_baseline, tmp_path / "doctored.json", nudge)
    md = tmp_path / "r.md"
    result = _invoke("check", "--baseline", str(doctored), "--markdown", str(md))
    assert result.exit_code == 1, result.output
    text = md.read_text()
    assert "- digits-noisy · looksam · accuracy: measured" in text
    assert "| digits-noisy | sgd | accuracy |" in text
    assert text.count("❌ REGRESSION") == 1


def test_accuracy_guard_within_its_tolerance_passes(
    accuracy_baseline: Path, tmp_path: Path
) -> None:
    def loosen(entry: dict[str, Any]) -> None:
        entry["accuracy"]["tolerance"] = 0.01
        entry["accuracy"]["final_accuracy"]["looksam"] -= 0.005

    doctored = _doctor(accuracy_baseline, tmp_path / "doctored.json", loosen)
    result = _invoke("check", "--baseline", str(doctored))
    assert result.exit_code == 0, result.output


def test_accuracy_guard_on_a_synthetic_workload_is_refused(tmp_path: Path) -> None:
    path = _baseline_file(
        tmp_path / "b.json",
        accuracy={"steps": 5, "seed": 0, "tolerance": 0.0, "final_accuracy": {"sgd": 0.5}},
    )
    _one_line_error(_invoke("check", "--baseline", str(path)), "measures no accuracy")


# ------------------------------------------------------------------ thresholds, exactly


def test_samples_per_second_exactly_at_the_limit_passes() -> None:
    at = CheckRow("w", "sgd", 100.0, 75.0, None, metric="samples/s", lower=75.0)
    below = CheckRow(
        "w", "sgd", 100.0, math.nextafter(75.0, 0), None, metric="samples/s", lower=75.0
    )
    assert not at.regressed
    assert below.regressed


def test_accuracy_exactly_at_either_edge_passes() -> None:
    def row(measured: float, tol: float = 0.25) -> CheckRow:
        return CheckRow("w", "sgd", 0.5, measured, 0.5 + tol, metric="accuracy", lower=0.5 - tol)

    assert not row(0.25).regressed
    assert not row(0.75).regressed
    assert row(math.nextafter(0.25, 0)).regressed
    assert row(math.nextafter(0.75, 1)).regressed
    assert not row(0.5, tol=0.0).regressed  # tolerance 0: equal passes...
    assert row(math.nextafter(0.5, 1), tol=0.0).regressed  # ...and the last bit fails
    assert row(math.nan).regressed  # a run that did not finish


def _report(samples: dict[str, float]) -> BenchReport:
    spec = SuiteSpec(workload="synthetic-mlp", optimizers=tuple(samples))
    costs = tuple(
        StepCost(name, 1 / s, s, 1.0, 1.0, 1.0, floor=1.0) for name, s in samples.items()
    )
    return BenchReport(spec, 1, costs, environment(resolve_device("cpu")))


def test_compare_puts_the_absolute_limit_at_baseline_times_one_minus_tolerance() -> None:
    report = _report({"sgd": 75.0})
    baseline = Baseline(
        (report.spec,),
        ({"sgd": 1.0},),
        tolerance=0.0,
        absolute=(AbsoluteExpectation("cpu", 0.25, {"sgd": 100.0}),),
    )
    rows = compare(baseline, [report])
    assert [(r.metric, r.baseline, r.measured, r.lower, r.limit) for r in rows] == [
        ("ratio", 1.0, 1.0, None, 1.0),
        ("samples/s", 100.0, 75.0, 75.0, None),
    ]
    assert not any(r.regressed for r in rows)  # both exactly at their limit


def test_compare_accuracy_puts_the_band_at_baseline_plus_minus_tolerance() -> None:
    spec = SuiteSpec(workload="digits-noisy", optimizers=("sgd",))
    guard = AccuracyExpectation(steps=5, seed=0, tolerance=0.25, final_accuracy={"sgd": 0.5})
    baseline = Baseline((spec,), ({"sgd": 1.0},), tolerance=0.1, accuracy=(guard,))
    (row,) = compare_accuracy(baseline, [{"sgd": 0.75}])
    assert (row.metric, row.lower, row.limit, row.regressed) == ("accuracy", 0.25, 0.75, False)
    with pytest.raises(ValueError, match="not run"):
        compare_accuracy(baseline, [None])


def test_settle_keeps_the_higher_samples_per_second() -> None:
    first = [CheckRow("w", "a", 100.0, 10.0, None, metric="samples/s", lower=90.0)]
    second = [CheckRow("w", "a", 100.0, 95.0, None, metric="samples/s", lower=90.0)]
    assert [r.measured for r in settle(first, second)] == [95.0]
    assert [r.measured for r in settle(second, first)] == [95.0]


# ------------------------------------------------------------------ the baseline file


def test_old_baselines_read_and_write_unchanged(tmp_path: Path) -> None:
    committed = REPO / "bench" / "baselines" / "cpu.json"
    baseline = Baseline.read(committed)
    assert baseline.absolute == (None,) * len(baseline.suites)
    assert baseline.accuracy == (None,) * len(baseline.suites)
    baseline.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(committed.read_text())


def test_new_keys_round_trip(tmp_path: Path) -> None:
    spec = SuiteSpec(workload="digits-noisy", optimizers=("sgd", "sam"))
    baseline = Baseline(
        (spec,),
        ({"sgd": 1.0, "sam": 2.0},),
        tolerance=0.1,
        absolute=(AbsoluteExpectation("x86_64", 0.2, {"sgd": 1e4, "sam": 5e3}),),
        accuracy=(AccuracyExpectation(40, 0, 0.0, {"sgd": 0.7462962962962963, "sam": 0.75}),),
    )
    baseline.write(tmp_path / "b.json")
    assert Baseline.read(tmp_path / "b.json") == baseline


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            {"absolute": {"device_name": "x", "tolerance": 1.5, "samples_per_second": {}}},
            "suites[0].absolute.tolerance must be in [0, 1), got 1.5",
        ),
        (
            {"absolute": {"tolerance": 0.1, "samples_per_second": {}}},
            "suites[0].absolute.device_name is missing",
        ),
        (
            {"absolute": {"device_name": "x", "tolerance": 0.1, "samples_per_second": {}}},
            "suites[0].absolute.samples_per_second is empty",
        ),
        (
            {"accuracy": {"steps": 0, "seed": 0, "tolerance": 0, "final_accuracy": {}}},
            "suites[0].accuracy.steps must be an integer >= 1, got 0",
        ),
        (
            {"accuracy": {"steps": 5, "seed": 0, "tolerance": -1, "final_accuracy": {}}},
            "suites[0].accuracy.tolerance must be >= 0, got -1",
        ),
        (
            {"accuracy": {"steps": 5, "seed": 0, "tolerance": 0, "final_accuracy": [1]}},
            "suites[0].accuracy.final_accuracy must be an object {optimizer: number}, not a "
            "JSON list",
        ),
        (
            {"accuracy": {"steps": 5, "seed": 0, "tolerance": 0, "final_accuracy": {"sgd": 2}}},
            "suites[0].accuracy.final_accuracy.sgd must be in [0, 1], got 2",
        ),
    ],
)
def test_malformed_new_keys_exit_2(tmp_path: Path, entry: dict[str, Any], needle: str) -> None:
    path = _baseline_file(tmp_path / "b.json", **entry)
    _one_line_error(_invoke("check", "--baseline", str(path)), needle)


# ------------------------------------------------------------------ summaries


def test_markdown_and_json_name_every_regression() -> None:
    rows = [
        CheckRow("mlp", "sam", 2.0, 2.5, 2.2),
        CheckRow("mlp", "sgd", 1000.0, 10.0, None, metric="samples/s", lower=900.0),
        CheckRow("digits", "sam", 0.75, math.nan, 0.75, metric="accuracy", lower=0.75),
        CheckRow("digits", "sgd", 0.5, 0.5, 0.5, metric="accuracy", lower=0.5),
    ]
    what: dict[str, Any] = {"baseline": "b.json", "tolerance": 0.1}
    text = summary_markdown(rows, **what)
    assert text.startswith("### looksam-bench check: ❌ 3 regressions")
    assert "- mlp · sam · ratio: measured 2.500, allowed ≤ 2.200 (baseline 2.000)" in text
    assert "- mlp · sgd · samples/s: measured 10, allowed ≥ 900 (baseline 1,000)" in text
    assert "- digits · sam · accuracy: measured -, allowed = 0.7500 (baseline 0.7500)" in text
    assert "| digits | sgd | accuracy | 0.5000 | 0.5000 | +0.00 pp | = 0.5000 | ✅ ok |" in text
    data = summary_dict(rows, **what)
    assert data["passed"] is False
    assert data["regressions"] == 3
    assert data["rows"][2]["measured"] is None  # NaN is no JSON
    json.dumps(data, allow_nan=False)


# ------------------------------------------------------------------ the documented CI commands


def _workflow_commands() -> list[list[str]]:
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "looksam-check.yml").read_text())
    commands = []
    for job in ("init", "check"):  # the order a team runs them in
        for step in workflow["jobs"][job]["steps"]:
            run = step.get("run", "")
            if "looksam-bench check" in run:
                commands.append(shlex.split(run.replace("$GITHUB_STEP_SUMMARY", "SUMMARY.md")))
    return commands


def test_the_documented_ci_commands_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (init, check) = _workflow_commands()
    assert init[:3] == ["looksam-bench", "check", "--init"]
    assert check[:3] == ["looksam-bench", "check", "--baseline"]
    cli_docs = (REPO / "docs" / "cli.md").read_text()  # where the README sends a CI user
    assert "docs/ci/looksam-check.yml" in cli_docs
    assert '--markdown "$GITHUB_STEP_SUMMARY"' in cli_docs
    assert "docs/ci/looksam-check.yml" in (REPO / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench" / "baselines").mkdir(parents=True)
    # Shorter, looser timing only: a shared test machine's noise is not what this tests.
    result = runner.invoke(app, [*init[1:], "--rounds", "2", "--tolerance", "100"], env=ENV)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, check[1:], env=ENV)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "check.json").read_text())["passed"] is True
    assert "✅ no regression" in (tmp_path / "SUMMARY.md").read_text()


@pytest.mark.slow
def test_a_timm_model_on_synthetic_data(tmp_path: Path) -> None:
    """The issue's acceptance workload, at a small input size to keep the test short."""
    path = tmp_path / "timm.json"
    result = _invoke(
        "check",
        "--init",
        str(path),
        "-w",
        "timm:resnet10t",
        "--data",
        "synthetic",
        "--img-size",
        "32",
        "--batch-size",
        "2",
        "-o",
        "sgd",
        "-o",
        "looksam",
        "--rounds",
        "1",
        "--device",
        "cpu",
        "--tolerance",
        "100",
        "--absolute",
        "--absolute-tolerance",
        "0.99",
    )
    assert result.exit_code == 0, result.output
    recorded = Baseline.read(path)
    assert recorded.suites[0].workload == "timm:resnet10t,data=synthetic,img_size=32"
    out = tmp_path / "r.json"
    result = _invoke("check", "--baseline", str(path), "--json", str(out))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert {(r["optimizer"], r["metric"]) for r in rows} == {
        (name, metric) for name in ("sgd", "looksam") for metric in ("ratio", "samples/s")
    }
