"""Relative timing: the bookkeeping of paired rounds (no assertion on absolute time)."""

from __future__ import annotations

import pytest
import torch

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
