"""validate_trial_space: every value a trial could draw is checked before anything exists."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import looksam.sweeps.validate as validate_module
from looksam.sweeps._trial import trial_configs
from looksam.sweeps.spec import Dimension, SpecError, SweepSpec, load_spec, parse_spec
from looksam.sweeps.validate import (
    MAX_POINTS,
    check_workload_data,
    extreme_points,
    validate_trial_space,
)
from looksam.train.runner import RunConfig
from looksam.train.workloads import WorkloadDataError

REPO = Path(__file__).resolve().parents[2]


def _spec(**tables: Any) -> Any:
    return parse_spec({"workload": {"device": "cpu"}, **tables}, "s.toml")


def _one_line_error(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name", ["quick.toml", "paper-sensitivity.toml", "large-batch.toml"])
def test_shipped_cpu_specs_pass(name: str) -> None:
    validate_trial_space(load_spec(REPO / "sweeps" / name, {"device": "cpu"}))


@pytest.mark.parametrize(
    ("tables", "needle"),
    [
        ({"space": {"common": {"lr": {"choices": [0.0, 0.1]}}}}, "with lr=0: lr must be > 0"),
        ({"fixed": {"common": {"lr": 0.0}}}, "sgd (fixed values): lr must be > 0"),
        # linear (not log) range: its low end is a value a trial can draw, and run refuses it
        ({"space": {"common": {"lr": {"low": 0, "high": 0.2}}}}, "lr=0: lr must be > 0"),
        (
            {
                "optimizers": {"names": ["sam"]},
                "space": {"sam": {"lr": {"low": 0.01, "high": 0.1}}},
                "fixed": {"common": {"lr": 0.5}},  # a default for whoever does not search it
                "budget": {"seeds": [3]},
            },
            None,
        ),
    ],
)
def test_learning_rates_a_trial_could_draw(tables: dict[str, Any], needle: str | None) -> None:
    spec = _spec(**tables)
    if needle is None:
        validate_trial_space(spec)
        return
    with pytest.raises(SpecError) as caught:
        validate_trial_space(spec)
    message = _one_line_error(caught.value)
    assert message.startswith("s.toml: ")
    assert needle in message


@pytest.mark.parametrize(
    ("tables", "needle"),
    [
        (
            {"space": {"sam": {"lr": {"low": 0.01, "high": 0.1}}}, "fixed": {"sam": {"lr": 0.1}}},
            "s.toml [fixed.sam]: lr is fixed here and searched in [space.sam]: give it one way",
        ),
        ({"fixed": {"sam": {"k": 5}}}, "s.toml [fixed.sam]: sam takes no 'k'; it takes: "),
        (
            {"optimizers": {"names": ["sgd"]}, "fixed": {"common": {"k": 5}}},
            "s.toml [fixed.common]: none of the optimizers ['sgd'] takes 'k'",
        ),
        ({"optimizers": {"names": ["sam", "sgd", "sam"]}}, "names lists 'sam' 2 times"),
    ],
)
def test_a_value_given_twice_or_two_ways_or_to_nobody_is_refused(
    tables: dict[str, Any], needle: str
) -> None:
    with pytest.raises(SpecError) as caught:
        _spec(**tables)
    message = _one_line_error(caught.value)
    assert needle in message, message


def test_every_corner_of_the_space_is_checked_with_scaling_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[RunConfig] = []
    monkeypatch.setattr(validate_module, "validate_config", seen.append)
    spec = _spec(
        optimizers={"names": ["sgd", "looksam"]},
        space={
            "common": {
                "lr": {"low": 0.01, "high": 0.1, "log": True},
                "batch_size": {"choices": [32, 256]},
            },
            "looksam": {"k": {"low": 2, "high": 10}, "alpha": {"choices": [0.0, 0.5, 1.0]}},
        },
        fixed={"looksam": {"rho": 0.2}},
        lr_scaling={"rule": "linear", "reference_batch_size": 128},
    )
    validate_trial_space(spec)
    reference, *trials = seen  # first: the base at the reference batch, as speeds are paired
    assert (reference.optimizer, reference.batch_size, reference.lr) == ("sgd", 128, None)
    sgd = [c for c in trials if c.optimizer == "sgd"]
    looksam = [c for c in trials if c.optimizer == "looksam"]
    assert len(sgd) == 2 * 2  # lr ends x batch sizes
    assert len(looksam) == 2 * 2 * 2 * 3  # ... x k ends x alpha choices
    assert sorted((c.batch_size, c.lr) for c in sgd) == [
        (32, pytest.approx(0.01 * 32 / 128)),
        (32, pytest.approx(0.1 * 32 / 128)),
        (256, pytest.approx(0.01 * 2)),
        (256, pytest.approx(0.1 * 2)),
    ]
    assert {c.hyperparameters["k"] for c in looksam} == {2, 10}
    assert {c.hyperparameters["alpha"] for c in looksam} == {0.0, 0.5, 1.0}
    assert {c.hyperparameters["rho"] for c in looksam} == {0.2}  # the fixed value reaches them
    assert {c.base for c in looksam} == {"sgd"}
    assert {c.device for c in seen} == {"cpu"}


def test_a_huge_space_still_visits_every_extreme() -> None:
    space = [Dimension(f"d{i}", choices=tuple(range(3))) for i in range(9)]  # 3^9 > MAX_POINTS
    space += [Dimension("lr", 0.01, 0.1), Dimension("batch_size", choices=(8, 16), integer=True)]
    points = extreme_points(space)
    assert len(points) < MAX_POINTS
    for dim in space:
        assert {p[dim.name] for p in points} == set(dim.choices or (dim.low, dim.high))
    assert {(p["lr"], p["batch_size"]) for p in points} == {
        (0.01, 8), (0.01, 16), (0.1, 8), (0.1, 16),
    }  # fmt: skip
    assert extreme_points([]) == [{}]


def test_an_unknown_device_is_refused() -> None:
    spec = _spec()
    # parse_spec already refuses the name; a spec built another way is refused here too
    spec = dataclasses.replace(spec, workload=dataclasses.replace(spec.workload, device="foo"))
    with pytest.raises(SpecError) as caught:
        validate_trial_space(spec)
    assert "unknown device 'foo'" in _one_line_error(caught.value)


def test_a_missing_or_empty_data_dir_is_refused(tmp_path: Path) -> None:
    spec = _spec(
        workload={"name": "cifar10-resnet18", "device": "cpu", "data_dir": "/nonexistent"}
    )
    with pytest.raises(WorkloadDataError) as caught:
        validate_trial_space(spec)
    assert "/nonexistent does not exist" in _one_line_error(caught.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkloadDataError, match="no CIFAR-10 batches"):
        check_workload_data("cifar10-resnet18", empty)
    (tmp_path / "file").touch()
    with pytest.raises(WorkloadDataError, match="is not a directory"):
        check_workload_data("cifar10-vit-ti", tmp_path / "file")
    with pytest.raises(WorkloadDataError, match="--data-dir"):
        check_workload_data("cifar10-resnet18", None)


def test_data_dirs_are_checked_by_their_layout(tmp_path: Path) -> None:
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"  # the archive's folder, one level down
    cifar.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch"):
        (cifar / name).touch()
    with pytest.raises(WorkloadDataError, match="data_batch_5 missing"):
        check_workload_data("cifar10-resnet18", tmp_path / "cifar")
    (cifar / "data_batch_5").touch()
    check_workload_data("cifar10-resnet18", tmp_path / "cifar")  # names only: nothing is read

    imagenet = tmp_path / "imagenet"
    (imagenet / "train").mkdir(parents=True)
    with pytest.raises(WorkloadDataError, match="no class folders"):
        check_workload_data("imagenet-resnet50", imagenet)
    (imagenet / "train" / "n01440764").mkdir()
    with pytest.raises(WorkloadDataError, match="no val/ folder"):
        check_workload_data("imagenet-resnet50", imagenet)
    (imagenet / "val").mkdir()
    check_workload_data("imagenet-resnet50", imagenet)


def test_a_workload_that_needs_no_data_ignores_the_data_dir(tmp_path: Path) -> None:
    check_workload_data("digits-noisy", tmp_path / "nowhere")


def test_a_space_smaller_than_the_budget_is_refused_before_anything_runs() -> None:
    from looksam.sweeps.validate import distinct_points

    def spec_with(n_trials: int, sampler: str = "tpe") -> SweepSpec:
        data: dict[str, Any] = {
            "sweep": {"name": "small"},
            "workload": {"name": "digits-noisy", "device": "cpu"},
            "optimizers": {"names": ["looksam"]},
            "space": {"looksam": {"k": {"low": 2, "high": 4}, "alpha": {"choices": [0.3, 0.7]}}},
            "sampler": {"name": sampler},
        }
        if sampler != "grid":
            data["budget"] = {"n_trials": n_trials}
        return parse_spec(data, "small.toml", {"no_mlflow": True})

    assert distinct_points(spec_with(6).space_for("looksam")) == 6
    validate_trial_space(spec_with(6))  # exactly as many points as trials: fine
    with pytest.raises(SpecError, match="6 distinct point"):
        validate_trial_space(spec_with(7))
    grid = parse_spec(
        {
            "sweep": {"name": "small"},
            "workload": {"name": "digits-noisy", "device": "cpu"},
            "optimizers": {"names": ["looksam"]},
            "space": {"looksam": {"alpha": {"choices": [0.3, 0.7]}}},
            "sampler": {"name": "grid"},
        },
        "small.toml",
        {"no_mlflow": True},
    )
    validate_trial_space(grid)  # a grid runs each point once anyway
    assert distinct_points(()) == 1  # nothing searched: one point, and one trial


def test_micro_batches_are_checked_against_every_batch_a_trial_could_draw() -> None:
    """Gradient accumulation: 32 micro-batches split a batch of 32 (the limit) but not of 16."""
    tables = {
        "workload": {"device": "cpu", "accumulate": 32},
        "optimizers": {"names": ["sam"]},
        "space": {"common": {"batch_size": {"choices": [32, 64]}}},
        "budget": {"n_trials": 2},
    }
    spec = parse_spec(tables, "s.toml")
    validate_trial_space(spec)  # every drawable batch holds 32 micro-batches
    assert {c.micro_batches for c in trial_configs(spec, "sam", {"batch_size": 64})} == {32}
    tables["space"] = {"common": {"batch_size": {"choices": [16, 64]}}}
    with pytest.raises(SpecError) as caught:
        validate_trial_space(parse_spec(tables, "s.toml"))
    line = _one_line_error(caught.value)
    assert "sam with batch_size=16" in line
    assert "32 micro-batches cannot split a batch of 16 examples per process" in line


def test_micro_batches_are_checked_at_the_batch_the_speed_is_paired_at() -> None:
    """Every trial is timed against the base at the reference batch, with the same accumulation:
    48 micro-batches fit the trials' batch of 64 but not the reference batch of 32."""
    tables = {
        "workload": {"device": "cpu", "accumulate": 48},
        "optimizers": {"names": ["sam"]},
        "space": {"common": {"batch_size": {"choices": [64]}}},
        "lr_scaling": {"reference_batch_size": 64},
        "budget": {"n_trials": 1},
    }
    validate_trial_space(parse_spec(tables, "s.toml"))  # the boundary: both batches hold 48
    tables["lr_scaling"] = {"reference_batch_size": 32}
    with pytest.raises(SpecError) as caught:
        validate_trial_space(parse_spec(tables, "s.toml"))
    line = _one_line_error(caught.value)
    assert "the paired timing's sgd at batch 32" in line
    assert "48 micro-batches cannot split a batch of 32" in line
