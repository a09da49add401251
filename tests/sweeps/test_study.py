"""Sweeps end to end on real stores: Optuna on SQLite, journal files and PostgreSQL; MLflow.

Worker processes are real subprocesses of the installed package (``python -m looksam sweep``);
they are killed with real signals. Waiting is always for a condition in the store, bounded.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.reports.leaderboard import leaderboard
from looksam.sweeps._liveness import counts_toward_budget
from looksam.sweeps._storage import open_storage
from looksam.sweeps.results import load_sweep_data
from looksam.sweeps.spec import SweepSpec, load_spec, parse_spec
from looksam.sweeps.study import run_sweep
from looksam.sweeps.tracking import MlflowTracker

TINY = {
    "workload": {"name": "digits-noisy", "epochs": 2, "device": "cpu"},
    "optimizers": {"names": ["sgd", "looksam"]},
    "space": {
        "common": {"lr": {"low": 0.01, "high": 0.1, "log": True}},
        "looksam": {"rho": {"low": 0.01, "high": 0.5, "log": True}, "k": {"low": 2, "high": 6}},
    },
    "budget": {"n_trials": 3},
    "timing": {"rounds": 3, "steps": 4},  # paired timing is tested elsewhere: keep trials short
}


def tiny_spec(tmp_path: Path, **overrides: object) -> SweepSpec:
    data = {**TINY, "sweep": {"name": f"t{uuid.uuid4().hex[:8]}"}}
    data["storage"] = f"sqlite:///{tmp_path}/optuna.db"
    data["tracking"] = {"uri": f"sqlite:///{tmp_path}/mlflow.db"}
    return parse_spec(data, "tiny", overrides)


def test_tiny_sweep_reads_back_from_optuna_and_mlflow(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    assert spec.tracking_uri is not None
    result = run_sweep(spec, tracker=MlflowTracker(spec.tracking_uri, experiment=spec.name))
    assert [s.optimizer for s in result.studies] == ["sgd", "looksam"]
    for summary in result.studies:
        study = optuna.load_study(study_name=summary.study_name, storage=spec.storage)
        trials = study.get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        assert len(trials[0].values) == 2  # pareto: accuracy, seconds
        assert trials[0].user_attrs["reference"] is True
        assert all("mlflow_run_id" in t.user_attrs for t in trials)
    looksam = optuna.load_study(study_name=spec.study_name("looksam"), storage=spec.storage)
    assert looksam.trials[0].params["k"] == 5  # the paper's point comes first
    mlflow.set_tracking_uri(spec.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[spec.name], output_format="list")
    parents = [r for r in runs if r.data.tags.get("looksam.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2
    assert len(children) == 6
    child = next(r for r in children if r.data.tags["looksam.study"] == spec.study_name("looksam"))
    assert {"rho", "k", "lr"} <= set(child.data.params)
    history = mlflow.MlflowClient().get_metric_history(child.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [1, 2]


def test_a_grid_sweep_runs_every_point_once_and_a_rerun_adds_none(tmp_path: Path) -> None:
    data = {
        **TINY,
        "sweep": {"name": f"g{uuid.uuid4().hex[:8]}"},
        "workload": {"name": "digits-noisy", "epochs": 1, "device": "cpu"},
        "space": {"looksam": {"k": {"choices": [1, 3]}, "alpha": {"choices": [0.0, 0.5, 1.0]}}},
        "budget": {},
        "sampler": {"name": "grid"},
        "storage": f"sqlite:///{tmp_path}/optuna.db",
    }
    spec = parse_spec(data, "grid", {"no_mlflow": True})
    run_sweep(spec)
    run_sweep(spec)  # the grid is done: nothing more runs
    looksam = optuna.load_study(study_name=spec.study_name("looksam"), storage=spec.storage)
    points = sorted((t.params["k"], t.params["alpha"]) for t in looksam.trials)
    assert points == [(k, a) for k in (1, 3) for a in (0.0, 0.5, 1.0)]
    assert all(t.state == TrialState.COMPLETE for t in looksam.trials)
    sgd = optuna.load_study(study_name=spec.study_name("sgd"), storage=spec.storage)
    assert len(sgd.trials) == 1  # nothing to vary: one fixed point


def test_rerun_resumes_without_duplicates_and_extends_the_budget(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, no_mlflow=True, optimizers=["sgd"])
    run_sweep(spec)
    run_sweep(spec)  # nothing left to do
    study = optuna.load_study(study_name=spec.study_name("sgd"), storage=spec.storage)
    assert len(study.trials) == 3
    bigger = parse_spec(
        {**TINY, "sweep": {"name": spec.name}, "storage": spec.storage},
        "tiny",
        {"n_trials": 5, "no_mlflow": True, "optimizers": ["sgd"]},
    )
    run_sweep(bigger)
    numbers = [t.number for t in study.get_trials()]
    assert numbers == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.get_trials())


def _spec_file(
    tmp_path: Path, name: str, epochs: int, n_trials: int, optimizer: str, extra: str = ""
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"[sweep]\nname = '{name}'\n"
        f"[workload]\nname = 'digits-noisy'\nepochs = {epochs}\ndevice = 'cpu'\n"
        f"[optimizers]\nnames = ['{optimizer}']\n"
        "[space.common]\nlr = {low = 0.01, high = 0.1, log = true}\n"
        f"[budget]\nn_trials = {n_trials}\n"
        "[timing]\nrounds = 3\nsteps = 4\n" + extra
    )
    return path


def _worker(
    spec: Path, storage: str, cwd: Path, *extra: str, mlflow: bool = False
) -> subprocess.Popen[str]:
    tracking = [] if mlflow else ["--no-mlflow"]
    command = ["-m", "looksam", "sweep", str(spec), "--storage", storage, *tracking, *extra]
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], limit: float) -> bool:
    """Poll the store until ``condition`` holds, the worker exits, or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        try:
            proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue
        return condition()
    return False


def _running(storage: str, study_name: str) -> bool:
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return False
    return any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def test_killed_worker_trial_is_failed_as_interrupted_and_the_budget_completed(
    tmp_path: Path,
) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    slow = _spec_file(tmp_path, "killed", epochs=2000, n_trials=2, optimizer="looksam")
    study_name = "killed/digits-noisy/looksam"
    proc = _worker(slow, storage, tmp_path)
    try:
        assert _wait_until(lambda: _running(storage, study_name), proc, 120), proc.stdout
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    stale = optuna.load_study(study_name=study_name, storage=storage).get_trials()[0]
    assert stale.state == TrialState.RUNNING  # nobody could mark it: the process died
    fast = parse_spec(
        {
            "sweep": {"name": "killed"},
            "workload": {"name": "digits-noisy", "epochs": 2, "device": "cpu"},
            "optimizers": {"names": ["looksam"]},
            "budget": {"n_trials": 2},
            "storage": storage,
            "space": {"common": {"lr": {"low": 0.01, "high": 0.1, "log": True}}},
        },
        "fast",
        {"no_mlflow": True},
    )
    run_sweep(fast)
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure_reason"] == "interrupted"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.params == trials[0].params
    assert sum(counts_toward_budget(t) for t in trials) == 2


def _confirm_trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def test_kill_9_during_confirmation_loses_and_repeats_no_run(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec_path = _spec_file(
        tmp_path, "confirm9", epochs=150, n_trials=1, optimizer="sgd",
        extra="[confirm]\nseeds = 3\n",
    )  # fmt: skip
    confirm = "confirm9/digits-noisy/sgd/confirm"

    def one_done_one_running() -> bool:
        states = [t.state for t in _confirm_trials(storage, confirm)]
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    proc = _worker(spec_path, storage, tmp_path)
    try:
        assert _wait_until(one_done_one_running, proc, 180), proc.stdout
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    killed = next(t for t in _confirm_trials(storage, confirm) if t.state == TrialState.RUNNING)
    run_sweep(load_spec(spec_path, {"storage": storage, "no_mlflow": True}))
    trials = _confirm_trials(storage, confirm)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["confirm_seed"] for t in done) == [1, 2, 3]  # once each
    assert {t.user_attrs["source_trial"] for t in done} == {0}
    stale = next(t for t in trials if t.number == killed.number)
    assert stale.state == TrialState.FAIL
    assert stale.user_attrs["failure_reason"] == "interrupted"
    retry = next(t for t in done if t.user_attrs.get("retry_of") == killed.number)
    assert retry.user_attrs["confirm_seed"] == killed.user_attrs["confirm_seed"]
    assert all(t.state != TrialState.WAITING for t in trials)  # nothing left queued
    data = load_sweep_data(load_spec(spec_path, {"storage": storage, "no_mlflow": True}))
    headline = leaderboard(data)[0].headline
    assert headline is not None
    assert headline.confirmed
    assert headline.seeds == (1, 2, 3)


def test_ctrl_c_fails_the_trial_requeues_it_and_exits_130(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    slow = _spec_file(tmp_path, "ctrlc", epochs=2000, n_trials=2, optimizer="sgd")
    study_name = "ctrlc/digits-noisy/sgd"
    proc = _worker(slow, storage, tmp_path)
    try:
        assert _wait_until(lambda: _running(storage, study_name), proc, 120)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert "no trial has finished yet" in out  # the only trial was the interrupted one
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure_reason"] == "interrupted"
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs.get("retry_of") for t in waiting] == [0]


def _two_workers(tmp_path: Path, storage: str, name: str, mlflow: bool = False) -> None:
    spec = _spec_file(tmp_path, name, epochs=3, n_trials=4, optimizer="sgd")
    workers = [_worker(spec, storage, tmp_path, mlflow=mlflow) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name=f"{name}/digits-noisy/sgd", storage=open_storage(storage))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(counts_toward_budget(t) for t in trials) == 4
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    workers_seen = {t.user_attrs.get("worker") for t in trials if t.state == TrialState.COMPLETE}
    assert workers_seen  # every completed trial names the process that ran it
    _assert_distinct_points(trials)
    # a third process resuming to a larger budget adds only new points
    third = _worker(spec, storage, tmp_path, "--n-trials", "6", mlflow=mlflow)
    assert third.wait(timeout=300) == 0, third.communicate()[0]
    trials = study.get_trials()
    assert sum(counts_toward_budget(t) for t in trials) == 6
    _assert_distinct_points(trials)


def _assert_distinct_points(trials: list[optuna.trial.FrozenTrial]) -> None:
    """No two trials that count hold the same parameters (a retry names what it repeats)."""
    points = [
        tuple(sorted(t.params.items()))
        for t in trials
        if counts_toward_budget(t) and "retry_of" not in t.user_attrs
    ]
    assert len(points) == len(set(points)), points


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_on_a_fresh_folder_share_one_budget_with_mlflow(
    tmp_path: Path, kind: str
) -> None:
    storage = (
        f"journal:{tmp_path}/journal.log" if kind == "journal" else f"sqlite:///{tmp_path}/o.db"
    )
    _two_workers(tmp_path, storage, kind, mlflow=True)
    assert (tmp_path / "runs" / "mlflow.db").exists()  # the default store, made by the race


@pytest.mark.skipif(
    not os.environ.get("LOOKSAM_TEST_POSTGRES_URL"),
    reason="no PostgreSQL: .ci/run starts one and sets LOOKSAM_TEST_POSTGRES_URL",
)
def test_two_workers_share_one_postgresql_budget(tmp_path: Path) -> None:
    _two_workers(tmp_path, os.environ["LOOKSAM_TEST_POSTGRES_URL"], f"pg{uuid.uuid4().hex[:8]}")


runner = CliRunner()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[sweep\nname = 'x'\n", "line 1"),
        ("[sweep]\nname = 'x'\nfoo = 1\n", "unknown key(s) foo"),
        ("pruner = 'median'\n", "pareto"),
        ("[space.looksam]\nk = {low = 0, high = 3}\n", "k must be"),
        ("[workload]\nname = 'synthetic-mlp'\n", "measures no accuracy"),
    ],
)
def test_bad_specs_exit_2_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.toml"
    spec.write_text(content)
    result = runner.invoke(app, ["sweep", str(spec)])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_unreachable_stores_exit_2_without_printing_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec_file(tmp_path, "secret", epochs=1, n_trials=1, optimizer="sgd")
    bad_storage = runner.invoke(
        app,
        ["sweep", str(spec), "--no-mlflow", "--storage", "postgresql://u:hunter2@127.0.0.1:9/x"],
    )
    assert bad_storage.exit_code == 2, bad_storage.output
    assert "cannot open storage" in bad_storage.output
    assert "hunter2" not in bad_storage.output
    bad_tracking = runner.invoke(
        app, ["sweep", str(spec), "--tracking-uri", "http://u:hunter2@127.0.0.1:9"]
    )
    assert bad_tracking.exit_code == 2, bad_tracking.output
    assert "hunter2" not in bad_tracking.output


def test_dry_run_prints_the_plan_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec_file(tmp_path, "plan", epochs=10, n_trials=7, optimizer="looksam")
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "plan/digits-noisy/looksam" in result.output
    assert "7 × 1" in result.output
    assert not (tmp_path / "runs").exists()


def test_diverging_trials_fail_with_their_reason_and_use_budget(tmp_path: Path) -> None:
    data = {
        **TINY,
        "sweep": {"name": "diverge"},
        "storage": f"sqlite:///{tmp_path}/optuna.db",
        "optimizers": {"names": ["sgd"]},
        "space": {"common": {"lr": {"low": 1e5, "high": 1e6, "log": True}}},
        "budget": {"n_trials": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    spec = parse_spec(data, "diverge")
    assert spec.tracking_uri is not None
    result = run_sweep(spec, tracker=MlflowTracker(spec.tracking_uri, experiment="diverge"))
    assert result.studies[0].failed == 2
    trials = optuna.load_study(study_name=spec.study_name("sgd"), storage=spec.storage).trials
    assert [t.user_attrs["failure_reason"] for t in trials] == ["diverged", "diverged"]
    mlflow.set_tracking_uri(spec.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["diverge"], output_format="list")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["looksam.failure_reason"] for r in children) == ["diverged"] * 2
    assert {r.info.status for r in children} == {"FAILED"}


def test_only_dead_workers_trials_are_reaped() -> None:
    """Liveness: a local PID that is gone, or a remote heartbeat older than the grace period."""
    import socket

    from looksam.sweeps._liveness import STALE_AFTER_SECONDS, reap_stale_trials

    study = optuna.create_study()
    just_asked = study.ask()  # no worker attribute yet: another worker just asked for it
    dead_local = study.ask()
    dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_proc.wait()
    dead_local.set_user_attr("worker", f"{socket.gethostname()}:{dead_proc.pid}")
    live_local = study.ask()
    live_local.set_user_attr("worker", f"{socket.gethostname()}:{os.getppid()}")
    silent_remote = study.ask()
    silent_remote.set_user_attr("worker", "elsewhere:123")
    silent_remote.set_user_attr("heartbeat", time.time() - 2 * STALE_AFTER_SECONDS)
    beating_remote = study.ask()
    beating_remote.set_user_attr("worker", "elsewhere:456")
    beating_remote.set_user_attr("heartbeat", time.time())

    reaped = reap_stale_trials(study)

    assert sorted(reaped) == [dead_local.number, silent_remote.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[just_asked.number] == TrialState.RUNNING
    assert states[live_local.number] == TrialState.RUNNING
    assert states[beating_remote.number] == TrialState.RUNNING
    assert reap_stale_trials(study) == []  # reaping twice changes nothing


def test_fixed_grid_trials_report_the_values_they_trained_with(tmp_path: Path) -> None:
    from looksam.sweeps.results import load_sweep_data

    spec = parse_spec(
        {
            "sweep": {"name": "grid"},
            "workload": {"name": "digits-noisy", "epochs": 1, "device": "cpu"},
            "optimizers": {"names": ["looksam"]},
            "fixed": {"common": {"lr": 0.07}, "looksam": {"rho": 0.3, "k": 4, "alpha": 0.5}},
            "objective": "accuracy",
            "budget": {"n_trials": 1, "seeds": 2},
            "storage": f"sqlite:///{tmp_path}/optuna.db",
        },
        "grid",
        {"no_mlflow": True},
    )
    run_sweep(spec)
    (trial,) = load_sweep_data(spec).studies[0].trials
    assert trial.params == {"lr": 0.07, "rho": 0.3, "k": 4, "alpha": 0.5}
    assert len(trial.seed_accuracies) == 2


def _start_order(spec: SweepSpec) -> list[str]:
    trials = [
        (t.datetime_start, o)
        for o in spec.optimizers
        for t in optuna.load_study(study_name=spec.study_name(o), storage=spec.storage).trials
        if t.state == TrialState.COMPLETE
    ]
    return [o for _, o in sorted(trials)]


def test_studies_take_turns_and_keep_taking_turns_after_a_resume(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, n_trials=1, no_mlflow=True)
    run_sweep(spec)
    run_sweep(dataclasses.replace(spec, n_trials=3))  # a resume to a larger budget
    assert _start_order(spec) == ["sgd", "looksam"] * 3


def test_sequential_order_fills_one_study_after_the_other(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, n_trials=2, no_mlflow=True, order="sequential")
    run_sweep(spec)
    assert _start_order(spec) == ["sgd", "sgd", "looksam", "looksam"]


def test_next_study_is_the_least_advanced_share_of_its_budget() -> None:
    from looksam.sweeps.study import next_study

    spec = parse_spec({**TINY, "sweep": {"name": "n"}}, "n", {"no_mlflow": True})
    budgets = {"sgd": 4, "looksam": 2}
    assert next_study(spec, {"sgd": 0, "looksam": 0}, budgets, "interleaved") == "sgd"
    assert next_study(spec, {"sgd": 1, "looksam": 0}, budgets, "interleaved") == "looksam"
    # 1/4 of sgd's budget against 1/2 of looksam's: sgd is further behind
    assert next_study(spec, {"sgd": 1, "looksam": 1}, budgets, "interleaved") == "sgd"
    assert next_study(spec, {"sgd": 2, "looksam": 1}, budgets, "interleaved") == "sgd"
    assert next_study(spec, {"sgd": 3, "looksam": 1}, budgets, "interleaved") == "looksam"
    assert next_study(spec, {"sgd": 4, "looksam": 2}, budgets, "interleaved") is None
    assert next_study(spec, {"sgd": 1, "looksam": 0}, budgets, "sequential") == "sgd"
    assert next_study(spec, {"sgd": 4, "looksam": 0}, budgets, "sequential") == "looksam"
    assert next_study(spec, {"sgd": 0, "looksam": 0}, {"looksam": 2}, "interleaved") == "looksam"
