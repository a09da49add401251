"""The budget's arithmetic: which trials count, who gets the last slot, what a trial scores.

Sweeps run for real (digits-noisy, one epoch or a few, short paired timing) on SQLite; the
states other workers would leave behind are made with Optuna's own API before the sweep starts.
"""

from __future__ import annotations

import os
import socket
import statistics
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from looksam.sweeps import _trial
from looksam.sweeps._liveness import WORKER_ID, counts_toward_budget, lost_the_last_slot
from looksam.sweeps.spec import SweepSpec, parse_spec
from looksam.sweeps.study import run_sweep
from looksam.train.runner import RunConfig, RunResult

#: A live process on this host that is not us: the "other worker" of a race.
OTHER_WORKER = f"{socket.gethostname()}:{os.getppid()}"


def _spec(tmp_path: Path, **sections: Any) -> SweepSpec:
    data: dict[str, Any] = {
        "sweep": {"name": f"b{uuid.uuid4().hex[:8]}"},
        "workload": {"name": "digits-noisy", "epochs": 1, "device": "cpu"},
        "optimizers": {"names": ["sgd"]},
        "space": {"common": {"lr": {"low": 1e-4, "high": 0.2, "log": True}}},
        "objective": "accuracy",
        "budget": {"n_trials": 3},
        "timing": {"rounds": 3, "steps": 4},  # paired timing is tested elsewhere
        "storage": f"sqlite:///{tmp_path}/optuna.db",
    }
    data.update(sections)
    return parse_spec(data, "budget", {"no_mlflow": True})


def _study(spec: SweepSpec) -> optuna.Study:
    """The sweep's sgd study, created now as another worker would have (maximise accuracy)."""
    return optuna.create_study(
        study_name=spec.study_name("sgd"),
        storage=spec.storage,
        direction="maximize",
        load_if_exists=True,
    )


def _record_training(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """Every run a trial trains, in order (the runs themselves still happen)."""
    trained: list[RunConfig] = []
    real = _trial.run_training

    def spy(config: RunConfig, **kwargs: Any) -> RunResult:
        trained.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(_trial, "run_training", spy)
    return trained


# ---------------------------------------------------------------- pruned trials count


def test_a_pruned_trial_counts_toward_the_budget() -> None:
    pruned = optuna.trial.create_trial(state=TrialState.PRUNED)
    assert counts_toward_budget(pruned)


def test_a_sweep_whose_trial_is_pruned_runs_exactly_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Median pruner: two good learning rates first (its start-up trials), then one far too
    small, which is pruned after its first epoch. Three trials taken: the sweep is done."""
    spec = _spec(
        tmp_path,
        workload={"name": "digits-noisy", "epochs": 2, "device": "cpu"},
        pruner="median",
    )
    study = _study(spec)
    for lr in (0.1, 0.08, 1e-4):
        study.enqueue_trial({"lr": lr})
    trained = _record_training(monkeypatch)

    result = run_sweep(spec)

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert [c.lr for c in trained] == [0.1, 0.08, 1e-4]  # no fourth trial was run
    assert sum(counts_toward_budget(t) for t in trials) == spec.budget_for("sgd") == 3
    assert (result.studies[0].complete, result.studies[0].pruned) == (2, 1)


def test_pruned_trials_already_in_the_study_use_up_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    study = _study(spec)
    for _ in range(2):
        study.tell(study.ask(), state=TrialState.PRUNED)
    trained = _record_training(monkeypatch)

    run_sweep(spec)

    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.PRUNED] * 2 + [TrialState.COMPLETE]
    assert len(trained) == 1  # one trial to fill a budget of 3


# ---------------------------------------------------------------- the race for the last slot


def _finished(study: optuna.Study, n: int) -> None:
    for _ in range(n):
        study.tell(study.ask(), 0.5)


def test_the_slot_goes_to_the_lower_trial_number() -> None:
    budget = 3
    study = optuna.create_study()
    _finished(study, budget - 1)
    theirs = study.ask()  # another worker's trial, running: it holds the last slot
    ours = study.ask()
    assert lost_the_last_slot(study, ours.number, budget)
    assert not lost_the_last_slot(study, theirs.number, budget)  # ours does not count for it

    roomier = optuna.create_study()
    _finished(roomier, budget - 2)
    roomier.ask()  # running ahead of ours, but one slot is still free
    assert not lost_the_last_slot(roomier, roomier.ask().number, budget)


def _another_worker_asks_just_before_us(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The race: the next ``study.ask()`` first lets a live worker ask for a trial (RUNNING,
    one number lower than ours), then returns ours. Returns the other trial's number."""
    real_ask = optuna.Study.ask
    theirs: list[int] = []

    def ask(self: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        if not theirs:
            other = real_ask(self)
            other.set_user_attr("worker", OTHER_WORKER)
            theirs.append(other.number)
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", ask)
    return theirs


def test_the_trial_that_loses_the_last_slot_is_surplus_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    budget = spec.budget_for("sgd")
    study = _study(spec)
    _finished(study, budget - 1)
    trained = _record_training(monkeypatch)
    theirs = _another_worker_asks_just_before_us(monkeypatch)

    run_sweep(spec)

    trials = study.get_trials()
    other, ours = trials[theirs[0]], trials[theirs[0] + 1]
    assert len(trials) == budget + 1
    assert (other.state, other.user_attrs["worker"]) == (TrialState.RUNNING, OTHER_WORKER)
    assert ours.state == TrialState.FAIL
    assert ours.user_attrs["failure_reason"] == "surplus"
    assert ours.user_attrs["worker"] == WORKER_ID
    assert not counts_toward_budget(ours)
    assert trained == []


def test_with_one_slot_left_besides_the_running_trial_ours_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    budget = spec.budget_for("sgd")
    study = _study(spec)
    _finished(study, budget - 2)
    trained = _record_training(monkeypatch)
    theirs = _another_worker_asks_just_before_us(monkeypatch)

    run_sweep(spec)

    trials = study.get_trials()
    other, ours = trials[theirs[0]], trials[theirs[0] + 1]
    assert len(trials) == budget
    assert other.state == TrialState.RUNNING
    assert ours.state == TrialState.COMPLETE
    assert ours.user_attrs["worker"] == WORKER_ID
    assert len(trained) == 1


# ---------------------------------------------------------------- the objective of many seeds


def test_a_trials_objective_is_the_mean_over_its_seeds(tmp_path: Path) -> None:
    spec = _spec(tmp_path, budget={"n_trials": 1, "seeds": 2})
    run_sweep(spec)
    (trial,) = _study(spec).get_trials()
    accuracies = trial.user_attrs["seed_accuracies"]
    assert trial.user_attrs["seeds"] == [0, 1]
    assert len(accuracies) == 2
    assert accuracies[0] != accuracies[1]  # else the mean could not tell from either seed
    assert trial.values == [statistics.fmean(accuracies)]
