"""Honest relative timing: alternate the contenders in one process, report medians of ratios.

Shared machines drift (frequency scaling, neighbours), so absolute times measured minutes apart are
not comparable. Interleaving contenders round by round and taking the median of per-round ratios
cancels most of that drift; the spread of the ratios says how much noise is left.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from looksam.stats import quartiles

#: The clock every timing here reads; a module attribute so tests can drive it deterministically.
now: Callable[[], float] = time.perf_counter


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so the clock measures finished work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def spread_looks(share: float, period: int) -> Callable[[int], bool]:
    """Which steps take a second pass so that any ``period`` consecutive steps hold
    ``round(share × period)`` of them, evenly spaced (a timing round sees a run's mix)."""
    looks = round(min(1.0, max(0.0, share)) * period)

    def takes_second_pass(step: int) -> bool:
        i = step % period
        return (i + 1) * looks // period > i * looks // period

    return takes_second_pass


#: How far below its pass floor a measured step-cost ratio may fall before it is impossible.
#: A step's extra passes may cost less than whole base steps (the base's own update runs once,
#: not once per pass: SAM measures 1.94× SGD on a small MLP), but not less than half of them;
#: beyond that, and this much noise, the timing was disturbed (a busy machine), not the method.
FLOOR_NOISE = 0.05


def floor_limit(floor: float) -> float:
    """The least step-cost ratio a correct timing of ``floor`` passes per step can give:
    1 + half the extra passes − :data:`FLOOR_NOISE` (SAM: 1.45, SAM-5: 1.05, one pass: 0.95)."""
    return 1.0 + max(0.0, floor - 1.0) / 2.0 - FLOOR_NOISE


def below_floor(ratio: float, floor: float) -> bool:
    """Whether a measured ratio is below what ``floor`` passes per step allow: contention."""
    return ratio < floor_limit(floor)


@dataclass(frozen=True)
class RelativeTiming:
    """One contender's step time and its ratio to the reference, over paired rounds."""

    name: str
    median_step_seconds: float
    ratio: float  # median over rounds of (this round's time / reference's time in that round)
    ratio_q1: float
    ratio_q3: float
    rounds: int
    #: Seconds per step in each round, in round order (pairs with every other contender's).
    round_seconds: tuple[float, ...] = ()


def time_relative(
    contenders: Mapping[str, Callable[[], object]],
    reference: str,
    *,
    device: torch.device,
    steps_per_round: int,
    rounds: int,
    warmup_steps: int,
    progress: Callable[[int], None] | None = None,
) -> list[RelativeTiming]:
    """Time ``steps_per_round`` calls of each contender per round, rotating who goes first.

    Args:
        contenders: name → a callable doing one training step (it keeps its own model/state).
        reference: the contender every ratio divides by.
        device: synchronised before each clock read.
        steps_per_round: steps per contender per round; make it a multiple of every k in play so
            each round sees the same mix of look and plain steps.
        rounds: paired rounds (the median is over these).
        warmup_steps: untimed steps per contender first (allocator, caches, lazy init).
        progress: called with the number of rounds finished so far.
    """
    if reference not in contenders:
        raise ValueError(f"reference {reference!r} is not among the contenders {list(contenders)}")
    if steps_per_round < 1 or rounds < 1 or warmup_steps < 0:
        raise ValueError("steps_per_round and rounds must be >= 1, warmup_steps >= 0")
    names = list(contenders)
    for name in names:
        for _ in range(warmup_steps):
            contenders[name]()
    synchronize(device)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            step = contenders[name]
            synchronize(device)
            start = now()
            for _ in range(steps_per_round):
                step()
            synchronize(device)
            per_round[name].append((now() - start) / steps_per_round)
        if progress is not None:
            progress(r + 1)
    ref_times = per_round[reference]
    results = []
    for name in names:
        ratios = [t / ref for t, ref in zip(per_round[name], ref_times, strict=True)]
        q1, q3 = quartiles(ratios)
        results.append(
            RelativeTiming(
                name=name,
                median_step_seconds=statistics.median(per_round[name]),
                ratio=statistics.median(ratios),
                ratio_q1=q1,
                ratio_q3=q3,
                rounds=rounds,
                round_seconds=tuple(per_round[name]),
            )
        )
    return results
