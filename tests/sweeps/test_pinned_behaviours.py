"""Behaviours that a plausible slip would change while every other test still passed."""

from __future__ import annotations

from typing import Any

import pytest

from looksam.sweeps.spec import parse_spec
from looksam.sweeps.tracking._payload import _clean_params


def _spec(**tables: Any) -> Any:
    return parse_spec({"workload": {"device": "cpu"}, **tables}, "s.toml")


@pytest.mark.parametrize(
    ("budget", "trials"), [({}, 8), ({"n_trials": 3}, 3), ({"seeds": [0]}, 8)]
)
def test_a_budget_without_n_trials_runs_eight(budget: dict[str, Any], trials: int) -> None:
    spec = _spec(budget=budget, space={"common": {"lr": {"low": 0.01, "high": 0.1}}})
    assert spec.n_trials == trials
    assert spec.budget_for("sam") == trials


def test_an_optimizers_own_range_wins_over_the_common_one() -> None:
    spec = _spec(
        space={
            "common": {"lr": {"low": 0.01, "high": 0.1}},
            "sam": {"lr": {"low": 0.5, "high": 1.0}},
        }
    )
    ranges = {
        name: next((d.low, d.high) for d in spec.space_for(name) if d.name == "lr")
        for name in ("sam", "sgd")
    }
    assert ranges == {"sam": (0.5, 1.0), "sgd": (0.01, 0.1)}


@pytest.mark.parametrize(
    ("seeds", "confirm"), [([0, 1, 2], (3, 4, 5)), ([5, 2], (6, 7, 8)), ([0], (1, 2, 3))]
)
def test_confirmation_seeds_come_after_every_search_seed(
    seeds: list[int], confirm: tuple[int, ...]
) -> None:
    """Fresh seeds: from the largest search seed on, never one a search trial used."""
    spec = _spec(budget={"seeds": seeds}, confirm={"seeds": 3})
    assert spec.confirm_seeds == confirm
    assert not set(spec.confirm_seeds) & set(spec.seeds)


def test_mlflow_parameters_whose_key_names_a_secret_are_masked_whole() -> None:
    """The second layer: a value with no URL in it is still masked when its key says secret."""
    cleaned = _clean_params(
        {
            "db_password": "hunter2",
            "api_key": "abc123",
            "access_token": "t0k3n",
            "storage": "postgresql://alice:pw@db/x",
            "lr": 0.1,
            "tokens_per_step": 5,  # names a token count, not a secret: kept
        }
    )
    assert cleaned["db_password"] == "***"
    assert cleaned["api_key"] == "***"
    assert cleaned["access_token"] == "***"
    assert cleaned["storage"] == "postgresql://***@db/x"
    assert cleaned["lr"] == "0.1"
    assert cleaned["tokens_per_step"] == "5"
