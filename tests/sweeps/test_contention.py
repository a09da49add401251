"""A busy machine must not change what a sweep says about speed.

A fake clock stands in for the machine: every training step advances it by the step's passes
times a unit (so SAM costs exactly 2 SGD steps and LookSAM-k exactly 1 + 1/k), and a "load"
multiplies that for chosen trials, as a neighbour hogging the CPU would. Because the clock is
fake, the speeds the report derives are exact, and a slowed trial must leave them unchanged
while being flagged ``contended`` in the storage, the report and its JSON.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

import looksam.train.runner as runner
import looksam.train.timing as timing
from looksam.sweeps import _trial
from looksam.sweeps.results import load_sweep_data, save_report
from looksam.sweeps.spec import SweepSpec, parse_spec
from looksam.sweeps.study import run_sweep
from looksam.train.runner import TrainingSession

UNIT = 1e-3  # fake seconds per forward-backward pass at the reference batch size

#: (optimizer, stage, trial number) of the trial running now, and the order they ran in.
Current = tuple[str, str, int]


class FakeMachine:
    """A clock that only training steps advance, by passes × unit × batch share × load."""

    def __init__(self, load: Callable[[Current, int], float]) -> None:
        self.time = 0.0
        self.load = load
        self.current: Current = ("", "", -1)
        self.sequence: list[Current] = []

    def now(self) -> float:
        return self.time

    def step(self, session: TrainingSession, passes: int) -> None:
        share = session.batch_size / 64
        index = len(self.sequence) - 1
        self.time += passes * UNIT * share * self.load(self.current, index)


def install(
    monkeypatch: pytest.MonkeyPatch, load: Callable[[Current, int], float] = lambda c, i: 1.0
) -> FakeMachine:
    """Put a fake machine under every clock the runner and the paired timing read."""
    fake = FakeMachine(load)
    real_step = TrainingSession.train_step
    real_run = _trial.TrialRun.run

    def train_step(self: TrainingSession, *args: Any, **kwargs: Any) -> Any:
        before = self.passes
        loss = real_step(self, *args, **kwargs)
        fake.step(self, self.passes - before)
        return loss

    def run(self: _trial.TrialRun) -> Any:
        fake.current = (self.optimizer, self.stage, self.trial.number)
        fake.sequence.append(fake.current)
        return real_run(self)

    monkeypatch.setattr(TrainingSession, "train_step", train_step)
    monkeypatch.setattr(_trial.TrialRun, "run", run)
    monkeypatch.setattr(runner, "now", fake.now)
    monkeypatch.setattr(timing, "now", fake.now)
    return fake


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeMachine]:
    def make(load: Callable[[Current, int], float] = lambda c, i: 1.0) -> FakeMachine:
        return install(monkeypatch, load)

    return make


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepSpec, FakeMachine, dict]:
    """One sweep on a quiet fake machine: the reference the busy ones must reproduce."""
    folder = tmp_path_factory.mktemp("quiet")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake = install(monkeypatch)
        spec = spec_for(folder, f"quiet{uuid.uuid4().hex[:6]}")
        run_sweep(spec)
        return spec, fake, _report(spec, folder)


def spec_for(tmp_path: Path, name: str) -> SweepSpec:
    data = {
        "sweep": {"name": name},
        "workload": {"name": "digits-noisy", "epochs": 1, "device": "cpu"},
        "optimizers": {"names": ["sgd", "sam", "looksam"]},
        "space": {
            "common": {"lr": {"low": 0.02, "high": 0.1, "log": True}},
            "looksam": {"k": {"choices": [2, 4]}},
        },
        "budget": {"n_trials": 2},
        "confirm": {"seeds": 3},
        "timing": {"rounds": 3, "steps": 4},  # the fake clock is exact: few rounds suffice
        "storage": f"sqlite:///{tmp_path}/{name}.db",
    }
    return parse_spec(data, "contention", {"no_mlflow": True})


def _report(spec: SweepSpec, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{spec.name}.json"
    save_report(load_sweep_data(spec), json_path=path)
    return json.loads(path.read_text())


def _contended(spec: SweepSpec) -> dict[tuple[str, str, int], bool]:
    flags = {}
    for optimizer in spec.optimizers:
        for suffix, stage in (("", "search"), ("/confirm", "confirm")):
            study = optuna.load_study(
                study_name=spec.study_name(optimizer) + suffix, storage=spec.storage
            )
            for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
                flags[(optimizer, stage, t.number)] = bool(t.user_attrs["contended"])
    return flags


def test_paired_speeds_are_exact_and_a_quiet_sweep_flags_nothing(
    quiet: tuple[SweepSpec, FakeMachine, dict[str, Any]],
) -> None:
    spec, fake, report = quiet
    rows = {r["optimizer"]: r for r in report["leaderboard"]}
    assert rows["sgd"]["speed_vs_base"] == pytest.approx(1.0)
    assert rows["sam"]["speed_vs_base"] == pytest.approx(0.5)
    k = rows["looksam"]["best_params"]["k"]
    assert rows["looksam"]["speed_vs_base"] == pytest.approx(1 / (1 + 1 / k))
    assert rows["looksam"]["speed_iqr"] == pytest.approx([1 / (1 + 1 / k)] * 2)
    assert report["contended_trials"] == 0
    assert not any(_contended(spec).values())
    assert all(r["confirmed"] and r["seeds"] == 3 for r in rows.values())
    assert all(r["speed_method"].startswith("paired") for r in rows.values())
    # Interleaved: one search trial per optimizer in turn, then the confirmation runs in turn.
    search = [(o, s) for o, s, _ in fake.sequence if s == "search"]
    assert search == [(o, "search") for o in ("sgd", "sam", "looksam") * 2]
    confirm = [o for o, s, _ in fake.sequence if s == "confirm"]
    assert confirm == ["sgd", "sam", "looksam"] * 3
    assert fake.sequence.index(("sgd", "confirm", 0)) > max(
        i for i, (_, s, _) in enumerate(fake.sequence) if s == "search"
    )


def test_one_optimizer_slowed_tenfold_keeps_every_speed_and_is_flagged(
    tmp_path: Path,
    machine: Callable[..., FakeMachine],
    quiet: tuple[SweepSpec, FakeMachine, dict[str, Any]],
) -> None:
    expected = quiet[2]
    machine(lambda current, index: 10.0 if current[:2] == ("looksam", "search") else 1.0)
    busy = spec_for(tmp_path, f"b{uuid.uuid4().hex[:6]}")
    run_sweep(busy)
    got = _report(busy, tmp_path)

    for mine, theirs in zip(got["leaderboard"], expected["leaderboard"], strict=True):
        assert mine["speed_vs_base"] == pytest.approx(theirs["speed_vs_base"])
        assert mine["accuracy_mean"] == pytest.approx(theirs["accuracy_mean"])
    flags = _contended(busy)
    assert {key for key, flagged in flags.items() if flagged} == {
        key for key in flags if key[:2] == ("looksam", "search")
    }
    assert got["contended_trials"] == 2
    speed = [f for f in got["findings"] if f["kind"] == "speed"]
    assert [f["sentence"] for f in speed] == [
        f["sentence"] for f in expected["findings"] if f["kind"] == "speed"
    ]
    assert any(f["kind"] == "contention" for f in got["findings"])


def test_a_window_of_busy_trials_is_flagged_and_changes_no_speed(
    tmp_path: Path,
    machine: Callable[..., FakeMachine],
    quiet: tuple[SweepSpec, FakeMachine, dict[str, Any]],
) -> None:
    expected = quiet[2]
    fake = machine(lambda current, index: 8.0 if index in (3, 4) else 1.0)
    busy = spec_for(tmp_path, f"w{uuid.uuid4().hex[:6]}")
    run_sweep(busy)
    got = _report(busy, tmp_path)

    window = {(o, s, n) for o, s, n in fake.sequence[3:5]}
    flags = _contended(busy)
    assert {key for key, flagged in flags.items() if flagged} == window
    for mine, theirs in zip(got["leaderboard"], expected["leaderboard"], strict=True):
        assert mine["speed_vs_base"] == pytest.approx(theirs["speed_vs_base"])
