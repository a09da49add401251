"""Relative timing: the bookkeeping of paired rounds (no assertion on absolute time)."""

from __future__ import annotations

import pytest
import torch

from looksam.bench.optim_overhead import measure_overhead
from looksam.bench.timing import time_relative


def test_reference_ratio_is_one_and_rounds_are_counted() -> None:
    calls = {"a": 0, "b": 0}

    def make(name: str):
        def step() -> None:
            calls[name] += 1
            sum(range(200 if name == "a" else 2000))

        return step

    finished: list[int] = []
    results = time_relative(
        {"a": make("a"), "b": make("b")},
        "a",
        device=torch.device("cpu"),
        steps_per_round=3,
        rounds=4,
        warmup_steps=2,
        progress=finished.append,
    )
    assert calls == {"a": 2 + 3 * 4, "b": 2 + 3 * 4}
    assert finished == [1, 2, 3, 4]
    by_name = {r.name: r for r in results}
    assert by_name["a"].ratio == 1.0
    assert by_name["a"].rounds == 4
    assert by_name["b"].ratio_q1 <= by_name["b"].ratio <= by_name["b"].ratio_q3


def test_unknown_reference_is_rejected() -> None:
    with pytest.raises(ValueError, match="reference"):
        time_relative(
            {"a": lambda: None},
            "b",
            device=torch.device("cpu"),
            steps_per_round=1,
            rounds=1,
            warmup_steps=0,
        )


def test_overhead_rows_carry_floors_from_the_registry() -> None:
    rows = measure_overhead(
        ("mlp",), ("sam", "looksam"), k=4, rounds=1, steps_per_round=4, warmup_steps=1
    )
    floors = {r.optimizer: r.floor for r in rows}
    assert floors == {"sgd": 1.0, "sam": 2.0, "looksam": pytest.approx(1.25)}
    assert all(r.params > 100_000 for r in rows)


def test_overhead_rejects_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        measure_overhead(("vgg",), ("sam",), rounds=1)
