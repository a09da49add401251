"""The trial schema: what the trial runner writes is what the reports read, old stores still
load, a store from a newer version is refused in one line, a ratio becomes a speed once."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from looksam.bench.paired import PairedCost
from looksam.reports.summary import speed_from_ratio
from looksam.sweeps.results import discover_spec, load_sweep_data, reference_k
from looksam.sweeps.schema import (
    METRIC,
    SCHEMA_VERSION,
    TAG,
    VERSION_ATTR,
    TrialAttrs,
    check_version,
    paired_metrics,
    read_trial_attrs,
    stamp_version,
    trial_attrs,
    with_paired_cost,
    write_trial_attrs,
)
from looksam.sweeps.spec import Dimension, SpecError

SWEEP = "schema-sweep"
STUDY = f"{SWEEP}/digits-noisy/looksam"
LOOKSAM_K = 5  # looksam's registry default (checked below, not assumed)


def _full_record() -> TrialAttrs:
    """Every field away from its default, so a field the round trip loses shows up."""
    return TrialAttrs(
        stage="confirm",
        seeds=(3, 4),
        seed_accuracies=(0.81, 0.83),
        seed_train_seconds=(1.5, 1.75),
        seed_samples_per_second=(900.0, 950.0),
        seed_time_to_target=(1.25, None),
        seed_samples=(1024.0, 2048.0),
        passes_per_step=1.2,
        curve_accuracy=(0.5, 0.7, 0.82),
        hyperparameters={"rho": 0.05, "k": 5, "lr": 0.1},
        source_params={"rho": 0.05},
        source_trial=7,
        failure_reason="diverged",
        paired_ratios=(1.25, 1.5, 1.75),
        paired_costs=(1.1, 1.2),
        reference_seconds_per_sample=0.002,
        cost=123.5,
        cost_to_target=99.0,
        contended=True,
        contention="plain step times drifted 2.0× during the run",
        mlflow_run_id="abc123",
    )


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_a_full_record_survives_the_round_trip_through_a_sqlite_store(tmp_path: Path) -> None:
    full = _full_record()
    assert all(  # the record really is full: no field left at its default
        getattr(full, f.name) != (f.default if f.default is not dataclasses.MISSING else {})
        for f in dataclasses.fields(TrialAttrs)
    )
    study = optuna.create_study(storage=_sqlite(tmp_path), study_name=STUDY)
    study.enqueue_trial({}, user_attrs={"source_trial": full.source_trial})  # the queue's
    trial = study.ask()
    write_trial_attrs(trial, full)
    study.tell(trial, 0.8)
    stored = optuna.load_study(study_name=STUDY, storage=_sqlite(tmp_path)).trials[0]
    assert read_trial_attrs(stored.user_attrs) == full


def test_the_writer_leaves_the_queues_source_trial_alone() -> None:
    assert "source_trial" not in _full_record().to_user_attrs()
    assert "mlflow_run_id" not in TrialAttrs().to_user_attrs()  # None is not written


def test_a_trial_that_stored_nothing_reads_as_unknown() -> None:
    assert read_trial_attrs({}) == TrialAttrs()


def test_the_paired_measurement_and_its_contention_are_stored() -> None:
    paired = PairedCost((1.5, 2.0, 2.5), (1.0, 3.0), 0.004, 0.01)
    calm = trial_attrs("search", (), (0.5,), {"k": 5})
    assert (calm.contended, calm.paired_ratios, calm.cost, calm.curve_accuracy) == (
        False,
        (),
        None,
        (0.5,),
    )
    found = with_paired_cost(calm, paired, (10.0, None), "busy")
    assert found.paired_ratios == paired.same_batch_ratios
    assert found.paired_costs == paired.per_sample_ratios
    timing = (found.reference_seconds_per_sample, found.cost, found.cost_to_target)
    assert timing == (0.004, 10.0, None)
    assert (found.contended, found.contention) == (True, "busy")
    agreed = with_paired_cost(calm, paired, (10.0, 8.0), None)
    assert (agreed.contended, agreed.contention, agreed.cost_to_target) == (False, None, 8.0)


@pytest.mark.parametrize("ratio", [None, 0.0, -1.0, math.nan, math.inf])
def test_no_ratio_or_a_ratio_that_is_not_positive_gives_no_speed(ratio: float | None) -> None:
    assert speed_from_ratio(ratio) is None


@pytest.mark.parametrize("ratio", [1e-9, 0.5, 1.0, 4.0])
def test_a_positive_ratio_is_its_inverse_as_a_speed(ratio: float) -> None:
    assert speed_from_ratio(ratio) == pytest.approx(1 / ratio)


def test_paired_metrics_have_a_speed_only_where_the_ratio_gives_one() -> None:
    timed = paired_metrics(PairedCost((2.0,), (3.0,), 0.001, 0.01))
    assert timed == {METRIC.paired_ratio: 2.0, METRIC.paired_cost: 3.0, METRIC.speed_vs_base: 0.5}
    zero = paired_metrics(PairedCost((0.0,), (3.0,), 0.001, 0.01))
    assert METRIC.speed_vs_base not in zero


def test_mlflow_names_are_distinct() -> None:
    for table in (TAG, METRIC):
        names = list(dataclasses.asdict(table).values())
        assert len(names) == len(set(names)), table


@pytest.mark.parametrize(
    ("stored", "version"), [({}, 0), ({VERSION_ATTR: SCHEMA_VERSION}, SCHEMA_VERSION)]
)
def test_versions_up_to_this_codes_are_read(stored: dict[str, Any], version: int) -> None:
    assert check_version(stored, "study x") == version


def test_a_newer_version_is_refused_naming_both() -> None:
    newer = SCHEMA_VERSION + 1
    with pytest.raises(SpecError) as refused:
        check_version({VERSION_ATTR: newer}, "study x")
    message = str(refused.value)
    assert f"version {newer}" in message
    assert f"version {SCHEMA_VERSION}" in message
    assert "\n" not in message


class _Study:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.user_attrs = attrs

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


def test_stamping_upgrades_an_old_study_and_never_downgrades_a_newer_one() -> None:
    old = _Study({})
    stamp_version(old, old.user_attrs, "study old")
    assert old.user_attrs == {VERSION_ATTR: SCHEMA_VERSION}
    newer = _Study({VERSION_ATTR: SCHEMA_VERSION + 1})
    with pytest.raises(SpecError):
        stamp_version(newer, newer.user_attrs, "study newer")
    assert newer.user_attrs == {VERSION_ATTR: SCHEMA_VERSION + 1}


def test_the_reference_k_is_the_registrys_default_clamped_into_the_searched_range() -> None:
    assert reference_k("looksam", {}) == {"k": LOOKSAM_K}
    assert reference_k("sgd", {}) == {}  # no k at all
    inside = Dimension("k", integer=True, low=2, high=10)
    assert reference_k("looksam", {"k": inside}) == {"k": LOOKSAM_K}
    at_low = Dimension("k", integer=True, low=LOOKSAM_K, high=10)
    assert reference_k("looksam", {"k": at_low}) == {"k": LOOKSAM_K}
    above = Dimension("k", integer=True, low=LOOKSAM_K + 1, high=10)
    assert reference_k("looksam", {"k": above}) == {"k": LOOKSAM_K + 1}
    below = Dimension("k", integer=True, low=1, high=LOOKSAM_K - 1)
    assert reference_k("looksam", {"k": below}) == {"k": LOOKSAM_K - 1}


#: A trial as stores before the schema version held it: keys since dropped included.
OLD_ATTRS: dict[str, Any] = {
    "stage": "search",
    "seed_accuracies": [0.8, 0.9],
    "seed_train_seconds": [2.0, 4.0],
    "seed_samples_per_second": [100.0, 300.0],
    "seed_time_to_target": [1.0, None],
    "seed_samples": [512, 512],
    "seed_median_step_seconds": [0.01, 0.01],
    "seed_step_times": [{}, {}],
    "passes_per_step": 1.2,
    "seeds": [0, 1],
    "curve_accuracy": [0.6, 0.85],
    "hyperparameters": {"rho": 0.05, "k": 5},
    "paired_ratio": 1.5,
    "paired_ratio_iqr": [1.4, 1.6],
    "paired_ratios": [1.4, 1.5, 1.6],
    "paired_cost": 1.5,
    "paired_costs": [1.4, 1.5, 1.6],
    "reference_seconds_per_sample": 0.001,
    "paired_step_seconds": 0.02,
    "cost": 12.0,
    "cost_to_target": None,
    "contended": False,
    "contention": None,
    "trial_seconds": 9.0,
}


def _store(tmp_path: Path, version: int | None) -> str:
    """A stored sweep of one study and one trial, built the way a sweep stores it."""
    storage = _sqlite(tmp_path)
    study = optuna.create_study(
        study_name=STUDY, storage=storage, directions=["maximize", "minimize"]
    )
    if version is not None:
        study.set_user_attr(VERSION_ATTR, version)
    study.add_trial(
        create_trial(
            params={"rho": 0.05},
            distributions={"rho": FloatDistribution(0.01, 0.5)},
            values=[0.85, 12.0],
            user_attrs=OLD_ATTRS,
            state=TrialState.COMPLETE,
        )
    )
    return storage


def test_a_store_written_before_the_version_existed_still_loads(tmp_path: Path) -> None:
    storage = _store(tmp_path, version=None)
    data = load_sweep_data(discover_spec(SWEEP, storage))
    (point,) = data.studies[0].trials
    assert point.accuracy == pytest.approx(0.85)
    assert point.train_seconds == pytest.approx(3.0)
    assert point.time_to_target_seconds is None  # one seed missed the target
    assert point.paired_ratios == (1.4, 1.5, 1.6)
    assert point.params == {"rho": 0.05, "k": 5}
    assert point.curve == (0.6, 0.85)


def test_report_refuses_a_newer_store_in_one_line_naming_both_versions(tmp_path: Path) -> None:
    newer = SCHEMA_VERSION + 1
    storage = _store(tmp_path, version=newer)
    program = Path(sys.executable).with_name("looksam-bench")
    done = subprocess.run(
        [str(program), "report", "--sweep", SWEEP, "--storage", storage],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"COLUMNS": "400", "PATH": str(program.parent), "HOME": str(tmp_path)},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"version {newer}" in lines[0]
    assert f"version {SCHEMA_VERSION}" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
