"""`looksam-bench advise`: bad input refused in one line before anything exists, the dry run,
and a whole run killed with -9 and continued by the same command (real processes)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.optim import full_sam, get_optimizer_info, list_optimizers
from looksam.sweeps.advise import default_candidates

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(args: list[str], needle: str) -> str:
    result = runner.invoke(app, ["advise", *args], env=WIDE)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # progress lines may come first (the cost bench); the refusal is one line
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("cost bench")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget", "soon"], "cannot read the budget 'soon'"),
        (["--budget", "0s"], "more than 0"),
        (["--budget=-5m"], "cannot read the budget"),
        (["--budget", "5m", "--margin", "0"], "--margin"),
        (["--budget", "5m", "--margin", "100"], "--margin"),
        (["--budget", "5m", "--optimizers", "sgd,sam,adagrad"], "unknown optimizer 'adagrad'"),
        (["--budget", "5m", "--optimizers", "sgd,looksam"], "the reference sam is not among"),
        (["--budget", "5m", "--optimizers", "sam,looksam"], "the base sgd is not among"),
        (["--budget", "5m", "--optimizers", "sgd,sam,sam"], "names sam more than once"),
        (["--budget", "5m", "--reference", "looksam", "--optimizers", "sgd,sam"], "looksam"),
        (["--budget", "5m", "--reference", "adamw"], "not a SAM-family optimizer"),
        (["--budget", "5m", "--base", "sam"], "is a SAM-family wrapper"),
        (["--budget", "5m", "--optimizers", "sgd,sam,adamw"], "adamw is a base optimizer"),
        (["--budget", "5m", "--optimizers", "sgd,sam,msam", "--base", "lamb"], "lamb"),
        (["--budget", "5m", "--optimizers", ","], "at least one name"),
        # digits-noisy trains at batch 64: 65 micro-batches cannot split it
        (["--budget", "5m", "--accumulate", "65"], "65 micro-batches cannot split a batch of 64"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
    in_tmp: Path, args: list[str], needle: str
) -> None:
    _refused(["-w", "digits-noisy", *args], needle)
    assert list(in_tmp.iterdir()) == []


def test_a_workload_without_accuracy_is_refused(in_tmp: Path) -> None:
    _refused(["-w", "synthetic-mlp", "--budget", "5m"], "measures no accuracy")
    assert list(in_tmp.iterdir()) == []


def test_a_budget_below_the_minimum_names_the_budget_it_needs(in_tmp: Path) -> None:
    line = _refused(
        ["-w", "digits-noisy", "--budget", "1s", "--optimizers", "sgd,sam,looksam"],
        "give --budget",
    )
    assert "cannot cover one search trial and 3 confirmation seeds" in line
    assert list(in_tmp.iterdir()) == []  # the cost bench created nothing either


def _steps_cost_their_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A virtual clock: each training step takes 1 ms per forward-backward pass its registry
    entry counts, so a paired cost is the entry's pass count whatever the machine is doing."""
    from looksam.train import timing
    from looksam.train.runner import TrainingSession

    clock = [0.0]
    real_step = TrainingSession.train_step

    def scripted(self: TrainingSession, *args: object, **kwargs: object) -> object:
        clock[0] += 1e-3 * get_optimizer_info(self.config.optimizer).passes_per_step()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(TrainingSession, "train_step", scripted)
    monkeypatch.setattr(timing, "now", lambda: clock[0])


def test_the_dry_run_prints_costs_and_plan_and_creates_nothing(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GSAM's 2 passes tie SAM's: a cost not *below* the reference's is never searched (the
    # boundary), while SAM-5's 1.2 is. A fake clock, so a busy machine cannot flip either.
    _steps_cost_their_passes(monkeypatch)
    result = runner.invoke(
        app,
        ["advise", "-w", "digits-noisy", "--budget", "10m", "--epochs", "20",
         "--optimizers", "sgd,sam,samk,gsam", "--dry-run"],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Step cost against the base" in result.output
    gsam = next(line for line in result.output.splitlines() if "│ gsam " in line)
    samk = next(line for line in result.output.splitlines() if "│ samk " in line)
    assert "no: 2.00× ≥ sam's 2.00×" in gsam  # GSAM costs what SAM costs: never searched
    assert "yes" in samk
    assert "no: " not in samk
    assert "search        " in result.output
    assert "trials × 3 candidates" in result.output
    assert "nothing was created or trained" in result.output
    assert list(in_tmp.iterdir()) == []


def test_default_candidates_come_from_the_registry_flags() -> None:
    names = default_candidates(full_sam().name, "sgd")
    assert names[:2] == ("sgd", "sam")
    cheap = {i.name for i in list_optimizers() if i.approximates_sam}
    assert set(names[2:]) == cheap
    assert "gsam" not in names  # a refinement that costs what SAM costs
    assert "msam" not in default_candidates("sam", "lamb")  # MSAM wraps only SGD and AdamW


def test_start_up_counts_only_when_the_cli_runs_as_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from looksam.cli import _console

    assert _console.startup_seconds() == 0.0  # called in-process: its budget starts at the call
    now = iter([100.0, 110.0])
    monkeypatch.setattr(_console, "_launched_at", None)
    monkeypatch.setattr(_console, "_process_age", lambda: 42.0)
    monkeypatch.setattr(_console.time, "monotonic", lambda: next(now))
    _console.mark_launch()  # at 100 s, 42 s after the process started
    assert _console.startup_seconds() == 52.0


def test_a_plugin_of_the_cheap_kind_is_a_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    from looksam.optim import _registry

    mine = dataclasses.replace(get_optimizer_info("looksam"), name="mylook", display_name="")
    monkeypatch.setitem(_registry._REGISTRY, "mylook", mine)  # undone after the test
    refinement = dataclasses.replace(mine, name="myrefined", sam_role="none")
    monkeypatch.setitem(_registry._REGISTRY, "myrefined", refinement)
    names = default_candidates("sam", "sgd")
    assert "mylook" in names
    assert "myrefined" not in names


# ---------------------------------------------------------------------- a real run


def _advise(tmp_path: Path, storage: str, out: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "looksam", "advise", "-w", "digits-noisy", "--epochs", "3",
        "--budget", "30s", "--optimizers", "sgd,sam,looksam", "--device", "cpu",
        "--storage", storage, "--no-mlflow", "--json", str(out),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )


def _search_done(storage: str) -> int:
    try:
        summaries = optuna.get_all_study_summaries(storage)
    except Exception:  # not created yet, or busy: look again
        return 0
    done = 0
    for s in summaries:
        if s.study_name.endswith("/confirm"):
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        done += len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return done


def _spent(storage: str) -> float:
    """The time the run has stored as spent (with the reference's study)."""
    study = optuna.load_study(study_name="advise-digits-noisy/digits-noisy/sam", storage=storage)
    return float(study.user_attrs["advise_spent_seconds"])


@pytest.mark.slow
def test_kill_9_mid_search_then_the_same_command_continues_it(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/runs/optuna.db"
    out = tmp_path / "advise.json"
    proc = _advise(tmp_path, storage, out)
    try:
        while _search_done(storage) < 2:  # mid-search: a round is 3 trials at least
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    killed_spent = _spent(storage)
    assert killed_spent > 0
    proc = _advise(tmp_path, storage, out)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "Resuming" in output
    payload = json.loads(out.read_text())
    # The killed attempt's time counts: the answer's clock starts where it stopped. (That the
    # budget holds is the planner's to show, on a fake clock: tests/sweeps/test_advise_budget.)
    assert payload["elapsed_seconds"] > killed_spent
    assert _spent(storage) > killed_spent  # and the resumed attempt's time was stored too
    assert payload["schema_version"] == 1
    assert payload["budget_seconds"] == 30
    assert payload["margin"] == 1.0
    assert (payload["reference"], payload["base"]) == ("sam", "sgd")
    recommendation = payload["recommendation"]
    assert recommendation["verdict"] in ("base", "variant", "sam", "inconclusive")
    assert recommendation["sentence"]
    by_name = {c["optimizer"]: c for c in payload["candidates"]}
    for name in {"sam", "sgd", recommendation["optimizer"]}:
        candidate = by_name[name]
        assert len(candidate["accuracies"]) >= 3, candidate
        for key in ("params", "accuracy_mean", "accuracy_ci95", "cost_vs_base", "alpha"):
            assert key in candidate
    # No run lost or repeated: equal search trials, every confirmation seed trained once.
    summaries = optuna.get_all_study_summaries(storage)
    counts = {}
    for s in summaries:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        if s.study_name.endswith("/confirm"):
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            keys = [(t.user_attrs["source_trial"], t.user_attrs["confirm_seed"]) for t in done]
            assert len(keys) == len(set(keys)), s.study_name
        else:
            counted = [
                t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or t.user_attrs.get("failure_reason") in ("diverged", "oom")
            ]  # fmt: skip
            counts[s.study_name] = len(counted)
            assert not [t for t in trials if t.state == TrialState.WAITING]
    assert len(set(counts.values())) == 1, counts
    # `report` rebuilds the same answer from the stores alone.
    rebuilt = runner.invoke(
        app,
        ["report", "--sweep", payload["sweep"], "--storage", storage,
         "--json", str(tmp_path / "report.json"), "--html", str(tmp_path / "r.html")],
        env=WIDE,
    )  # fmt: skip
    assert rebuilt.exit_code == 0, rebuilt.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["advice"]["recommendation"] == recommendation
    html = (tmp_path / "r.html").read_text()
    assert "Which SAM should I use?" in html
