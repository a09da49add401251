"""Relative timing: the bookkeeping of paired rounds (no assertion on absolute time)."""

from __future__ import annotations

import pytest
import torch

from looksam.train import timing
from looksam.train.timing import RelativeTiming, time_relative


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


class _ScriptedContender:
    """A contender whose every round costs a chosen number of fake seconds on a shared clock.

    Warm-up steps advance the clock by a large amount too, which no result may show.
    """

    def __init__(self, clock: list[float], round_seconds: list[float], steps: int, warmup: int):
        self.clock = clock
        self.round_seconds = round_seconds
        self.steps = steps
        self.warmup = warmup
        self.calls = 0

    def __call__(self) -> None:
        timed = self.calls - self.warmup
        self.calls += 1
        self.clock[0] += (
            1000.0 if timed < 0 else self.round_seconds[timed // self.steps] / self.steps
        )


# Reference round times that vary (the machine drifts) and are not monotonic; the contender is
# exactly 2x the reference in every round except the last, a 10x outlier.
REFERENCE_ROUNDS = [1.0, 4.0, 2.0, 8.0, 3.0]
CONTENDER_ROUNDS = [2.0, 8.0, 4.0, 16.0, 30.0]


def _scripted_timing(monkeypatch: pytest.MonkeyPatch) -> dict[str, RelativeTiming]:
    clock = [0.0]
    monkeypatch.setattr(timing, "now", lambda: clock[0])
    steps, warmup = 2, 1
    results = time_relative(
        {
            "ref": _ScriptedContender(clock, REFERENCE_ROUNDS, steps, warmup),
            "slow": _ScriptedContender(clock, CONTENDER_ROUNDS, steps, warmup),
        },
        "ref",
        device=torch.device("cpu"),
        steps_per_round=steps,
        rounds=len(REFERENCE_ROUNDS),
        warmup_steps=warmup,
    )
    return {r.name: r for r in results}


def test_ratio_is_the_median_of_same_round_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-round ratios are 2, 2, 2, 2, 10: the median (2) ignores the outlier, a mean (3.6)
    would not, and dividing by the median reference time (3) would give 8/3."""
    by_name = _scripted_timing(monkeypatch)
    slow = by_name["slow"]
    assert slow.ratio == 2.0
    assert (slow.ratio_q1, slow.ratio_q3) == (2.0, 2.0)
    assert slow.median_step_seconds == 4.0  # median round 8 s over 2 steps; warm-up excluded
    assert slow.rounds == 5
    ref = by_name["ref"]
    assert (ref.ratio, ref.ratio_q1, ref.ratio_q3) == (1.0, 1.0, 1.0)
    assert ref.median_step_seconds == 1.5


def test_quartiles_come_from_the_per_round_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(timing, "now", lambda: clock[0])
    # ratios per round 1, 2, 3, 4, 5 against a reference that drifts from 1 s to 16 s
    reference = [1.0, 2.0, 4.0, 8.0, 16.0]
    other = [r * (i + 1) for i, r in enumerate(reference)]
    results = time_relative(
        {
            "ref": _ScriptedContender(clock, reference, 1, 0),
            "other": _ScriptedContender(clock, other, 1, 0),
        },
        "ref",
        device=torch.device("cpu"),
        steps_per_round=1,
        rounds=5,
        warmup_steps=0,
    )
    got = next(r for r in results if r.name == "other")
    assert (got.ratio_q1, got.ratio, got.ratio_q3) == (2.0, 3.0, 4.0)


def _scripted(monkeypatch: pytest.MonkeyPatch, seconds: dict[str, list[float]], order: list[str]):
    """Contenders whose k-th step advances a fake clock by ``seconds[name][k]``."""
    clock = [0.0]
    calls = dict.fromkeys(seconds, 0)
    monkeypatch.setattr(timing, "now", lambda: clock[0])

    def make(name: str):
        def step() -> None:
            clock[0] += seconds[name][calls[name]]
            calls[name] += 1
            order.append(name)

        return step

    return {name: make(name) for name in seconds}


def test_the_ratio_is_the_median_of_per_round_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds at 1×, 1× and 10× the reference: the median says 1. A mean of the ratios, or the
    ratio of the totals, would say 4."""
    order: list[str] = []
    contenders = _scripted(monkeypatch, {"ref": [1.0, 1.0, 1.0], "x": [1.0, 1.0, 10.0]}, order)
    results = time_relative(
        contenders, "ref", device=torch.device("cpu"), steps_per_round=1, rounds=3,
        warmup_steps=0,
    )  # fmt: skip
    x = next(r for r in results if r.name == "x")
    assert x.ratio == 1.0
    assert x.round_seconds == (1.0, 1.0, 10.0)
    assert (x.ratio_q1, x.ratio_q3) == (1.0, 5.5)


def test_the_order_of_the_contenders_rotates_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Who goes first in a round carries the round's drift; rotating spreads it over everyone."""
    order: list[str] = []
    contenders = _scripted(monkeypatch, {n: [1.0] * 3 for n in ("a", "b", "c")}, order)
    time_relative(
        contenders, "a", device=torch.device("cpu"), steps_per_round=1, rounds=3,
        warmup_steps=0,
    )  # fmt: skip
    assert ["".join(order[i : i + 3]) for i in range(0, 9, 3)] == ["abc", "bca", "cab"]
