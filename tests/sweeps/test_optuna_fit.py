"""What Optuna's tools see of a sweep: learning curves in multi-objective studies (where
``Trial.report`` raises), and importances from the evaluator the report names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import TrialState

from looksam.reports.html import render_html
from looksam.reports.model import StudyData, SweepData
from looksam.sweeps import _trial, results
from looksam.sweeps._trial import QuietObserver
from looksam.sweeps.spec import parse_spec
from looksam.sweeps.study import run_sweep


class RunningCurves(QuietObserver):
    """Reads the running trial's ``curve_accuracy`` from the storage at every progress call."""

    def __init__(self, storage: str, study_name: str) -> None:
        self.storage = optuna.storages.RDBStorage(storage)  # another connection: no cache
        self.study_name = study_name
        self.seen: list[list[float]] = []

    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None:
        study_id = self.storage.get_study_id_from_name(self.study_name)
        running = self.storage.get_all_trials(study_id, states=(TrialState.RUNNING,))
        for trial in running:
            curve = trial.user_attrs.get("curve_accuracy", [])
            if not self.seen or self.seen[-1] != curve:
                self.seen.append(list(curve))


@pytest.mark.parametrize(
    ("interval", "while_training"),
    [(0.0, "every epoch"), (3600.0, "first epoch only")],
)
def test_a_pareto_trial_shows_its_learning_curve_while_it_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float, while_training: str
) -> None:
    """The curve reaches the storage while the trial trains, at most every
    CURVE_WRITE_SECONDS (the first epoch always), and whole when it ends."""
    monkeypatch.setattr(_trial, "CURVE_WRITE_SECONDS", interval)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec = parse_spec(
        {
            "sweep": {"name": "curves"},
            "workload": {"name": "digits-noisy", "epochs": 3, "device": "cpu"},
            "optimizers": {"names": ["sgd"]},
            "space": {"common": {"lr": {"low": 0.02, "high": 0.1, "log": True}}},
            "budget": {"n_trials": 1},
            "timing": {"rounds": 2, "steps": 2},
            "storage": storage,
            "tracking": {"enabled": False},
        },
        "curves",
    )
    assert spec.objective == "pareto"
    observer = RunningCurves(storage, spec.study_name("sgd"))
    run_sweep(spec, observer=observer)

    study = optuna.load_study(study_name=spec.study_name("sgd"), storage=storage)
    assert len(study.directions) == 2  # multi-objective: Trial.report would raise
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    final = trial.user_attrs["curve_accuracy"]
    assert len(final) == 3
    assert trial.intermediate_values == {}
    # while it trained, the storage held the curve so far, one epoch longer each time
    expected = [[], final[:1], final[:2]] if while_training == "every epoch" else [[], final[:1]]
    assert observer.seen == expected


def _study(multi: bool) -> optuna.Study:
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(directions=directions)
    for i, (lr, rho) in enumerate([(0.01, 0.1), (0.02, 0.3), (0.05, 0.2), (0.1, 0.4), (0.2, 0.5)]):
        dists = {
            "lr": optuna.distributions.FloatDistribution(0.001, 1.0, log=True),
            "rho": optuna.distributions.FloatDistribution(0.01, 1.0),
        }
        accuracy = 0.9 - abs(lr - 0.05) + 0.01 * i * rho
        values = [accuracy, 1.0 + rho] if multi else [accuracy]
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr, "rho": rho}, distributions=dists,
                                      values=values)
        )  # fmt: skip
    return study


@pytest.mark.parametrize("multi", [True, False])
def test_importances_are_seeded_fanova_whatever_optunas_default(
    multi: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[Any] = []
    real = optuna.importance.get_param_importances

    def recording(study: optuna.Study, **kwargs: Any) -> dict[str, float]:
        used.append(kwargs.get("evaluator"))
        return real(study, **kwargs)

    monkeypatch.setattr(optuna.importance, "get_param_importances", recording)
    study = _study(multi)
    first = results._importances(study, multi=multi)
    assert set(first) == {"lr", "rho"}
    assert all(isinstance(e, FanovaImportanceEvaluator) for e in used)
    assert results._importances(study, multi=multi) == first  # seeded: the same report twice


def test_the_report_names_fanova() -> None:
    data = SweepData(
        name="hand", workload="digits-noisy", objective="pareto", base="sgd",
        target_accuracy=0.9,
        studies=(
            StudyData(optimizer="sgd", study_name="hand/sgd", passes_per_step=1.0, trials=(),
                      importances={"lr": 1.0}),
        ),
        spec={"name": "hand"}, environment={"device": "cpu"},
        generated_at="2026-01-01 00:00 UTC", reference_batch_size=1,
    )  # fmt: skip
    page = render_html(data)
    section = page[page.index('<section id="importances">') :]
    note = section[: section.index("</p>")]
    assert "fANOVA" in note
    assert "FanovaImportanceEvaluator" in note
