"""A real, tiny sweep (SQLite + MLflow) shared by the report tests: reports never re-train."""

from __future__ import annotations

from pathlib import Path

import pytest

from looksam.reports.model import SweepData
from looksam.sweeps.results import load_sweep_data
from looksam.sweeps.spec import SweepSpec, parse_spec
from looksam.sweeps.study import run_sweep
from looksam.sweeps.tracking import MlflowTracker

TINY_SWEEP = {
    "sweep": {"name": "tiny"},
    "workload": {"name": "digits-noisy", "epochs": 3, "device": "cpu"},
    "optimizers": {"names": ["sgd", "sam", "looksam"]},
    "space": {
        "common": {"lr": {"low": 0.02, "high": 0.1, "log": True}},
        "sam": {"rho": {"low": 0.05, "high": 0.5, "log": True}},
        "looksam": {
            "rho": {"low": 0.05, "high": 0.5, "log": True},
            "k": {"low": 2, "high": 6},
            "alpha": {"low": 0.3, "high": 1.0},
        },
    },
    "budget": {"n_trials": 4, "seeds": 2},
    "confirm": {"seeds": 3},
    "timing": {"rounds": 3, "steps": 4},
}


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepSpec, Path]:
    """Run the tiny sweep once per test session; returns its spec and folder."""
    folder = tmp_path_factory.mktemp("tiny-sweep")
    data = {
        **TINY_SWEEP,
        "storage": f"sqlite:///{folder}/optuna.db",
        "tracking": {"uri": f"sqlite:///{folder}/mlflow.db"},
    }
    spec = parse_spec(data, "tiny")
    assert spec.tracking_uri is not None
    run_sweep(spec, tracker=MlflowTracker(spec.tracking_uri, experiment=spec.name))
    return spec, folder


@pytest.fixture(scope="session")
def tiny_sweep_data(tiny_sweep: tuple[SweepSpec, Path]) -> SweepData:
    """The tiny sweep read back as the reports' data model."""
    return load_sweep_data(tiny_sweep[0])
