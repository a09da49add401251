"""The one definition of each summary a sweep is judged by.

"Best trial", "Pareto front", "knee", "the configuration a confirmation re-runs",
"confirmation runs", "headline accuracy", "speed vs base" and "estimated seconds" each live
here once; the terminal, HTML, Markdown and JSON reports, the sweep's confirmation stage, its
MLflow summary, ``advise`` and the CLI's live view all call these, so no two outputs can
disagree about the same number.

Speed is always paired (see :mod:`looksam.bench.paired`): a trial's ``paired_ratios`` are its
step time over the base optimizer's in the same round, at the same batch size. Raw wall-clock
is never divided. Contended trials (their own step times disagree with the paired cost) feed
no speed at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from looksam.reports.model import BUDGET_FAILURES, TrialPoint
from looksam.reports.svg import pareto_front as _front_of
from looksam.stats import EXACT_TOLERANCE, MeanCI, mean_ci, quartiles, quiet_speed

#: Which configuration of each optimizer the confirmation re-runs (:func:`confirm_choices`).
PICKS = ("cheapest", "best", "knee")
#: "Within a margin of SAM's accuracy": one point (accuracy is a fraction here) unless asked.
DEFAULT_MARGIN = 0.01


def completed(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    """Search trials that finished with an accuracy: the ones "best" and fronts choose from."""
    return [
        p
        for p in points
        if p.stage == "search" and p.state == "COMPLETE" and p.accuracy is not None
    ]


def _cost(point: TrialPoint) -> float:
    return math.inf if point.cost is None else point.cost


def best_trial(points: Iterable[TrialPoint], objective: str = "pareto") -> TrialPoint | None:
    """The most accurate completed trial (cheaper, then earlier, on ties); for time-to-target,
    the one with the lowest paired cost to the target (more accurate, then earlier, on ties).

    For pareto it is the most accurate point of the front: nothing is more accurate.
    """
    done = completed(points)
    if not done:
        return None
    if objective == "time-to-target":
        return min(
            done,
            key=lambda p: (
                math.inf if p.cost_to_target is None else p.cost_to_target,
                -(p.accuracy or 0.0),
                p.number,
            ),
        )
    return min(done, key=lambda p: (-(p.accuracy or 0.0), _cost(p), p.number))


def pareto_front(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    """Completed trials no other beats on both paired cost (lower) and accuracy, cheapest first."""
    costed = [p for p in completed(points) if p.cost is not None]
    return _front_of(costed, key=lambda p: (_cost(p), p.accuracy or 0.0))


def knee(front: Sequence[TrialPoint]) -> TrialPoint | None:
    """The front's point farthest above the line from its cheapest to its most accurate point,
    both axes scaled to [0, 1]: where more cost stops buying much accuracy."""
    if len(front) <= 2:
        return front[-1] if front else None
    costs = [_cost(p) for p in front]
    accs = [p.accuracy or 0.0 for p in front]
    c_span = (max(costs) - min(costs)) or 1.0
    a_span = (max(accs) - min(accs)) or 1.0
    xs = [(c - costs[0]) / c_span for c in costs]
    ys = [(a - accs[0]) / a_span for a in accs]
    dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
    norm = math.hypot(dx, dy) or 1.0
    distances = [(dx * (y - ys[0]) - dy * (x - xs[0])) / norm for x, y in zip(xs, ys, strict=True)]
    return front[max(range(len(front)), key=lambda i: (distances[i], -i))]


def cheapest_within(points: Iterable[TrialPoint], floor: float) -> TrialPoint | None:
    """The completed trial with the lowest paired cost whose accuracy reaches ``floor``
    (more accurate, then earlier, on ties); None when none does."""
    good = [p for p in completed(points) if (p.accuracy or 0.0) >= floor - EXACT_TOLERANCE]
    if not good:
        return None
    return min(good, key=lambda p: (_cost(p), -(p.accuracy or 0.0), p.number))


def confirm_choice(
    points: Iterable[TrialPoint],
    objective: str,
    pick: str = "best",
    *,
    bar: float | None = None,
) -> TrialPoint | None:
    """The configuration the confirmation stage re-runs for one optimizer.

    ``best``: the best trial. ``knee``: the Pareto front's knee (pareto objective only).
    ``cheapest``: the cheapest trial whose search accuracy reaches ``bar`` (the reference's
    search best minus the margin, see :func:`confirm_choices`), else the best trial; without a
    bar, or for time-to-target, the best trial.
    """
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}; choose one of: {', '.join(PICKS)}")
    points = list(points)
    if pick == "knee" and objective == "pareto":
        return knee(pareto_front(points))
    if pick == "cheapest" and bar is not None and objective != "time-to-target":
        return cheapest_within(points, bar) or best_trial(points, objective)
    return best_trial(points, objective)


def confirm_choices(
    points: Mapping[str, Iterable[TrialPoint]],
    objective: str,
    pick: str = "cheapest",
    *,
    reference: str | None,
    base: str | None,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, TrialPoint | None]:
    """Every optimizer's confirmed configuration: the one rule the sweep's confirmation stage,
    its leaderboard, its findings and ``advise`` share.

    With ``pick = "cheapest"`` the question is "which is the cheapest configuration as good as
    SAM?": the reference (SAM) and the base keep their most accurate configuration; every other
    optimizer confirms its cheapest configuration whose search accuracy is within ``margin``
    (a fraction: 0.01 is one point) of the reference's search best, or else its most accurate.
    """
    by_optimizer = {name: list(p) for name, p in points.items()}
    bar = None
    if reference is not None and reference in by_optimizer:
        best = best_trial(by_optimizer[reference], objective)
        bar = None if best is None or best.accuracy is None else best.accuracy - margin
    return {
        name: confirm_choice(mine, objective, pick, bar=None if name in (reference, base) else bar)
        for name, mine in by_optimizer.items()
    }


def accuracy_reference(optimizers: Iterable[str], explicit: str | None = None) -> str | None:
    """The optimizer whose search best sets the bar of the "cheapest" pick: ``explicit`` when
    given, else the first one the registry calls full SAM (``sam_role == "full"``); None when
    there is none (every optimizer then confirms its best trial)."""
    if explicit is not None:
        return explicit
    from looksam.optim import get_optimizer_info

    for name in optimizers:
        try:
            if get_optimizer_info(name).sam_role == "full":
                return name
        except ValueError:  # a stored sweep's optimizer this version does not know
            continue
    return None


def counts(point: TrialPoint) -> bool:
    """A run that counts: it finished, or failed for a reason its settings caused."""
    return point.state == "COMPLETE" or (
        point.state == "FAIL" and point.failure_reason in BUDGET_FAILURES
    )


def confirmation_runs(
    chosen: TrialPoint | None, confirmations: Iterable[TrialPoint]
) -> list[TrialPoint]:
    """The confirmation runs of ``chosen`` that count, in seed order."""
    if chosen is None:
        return []
    runs = [c for c in confirmations if c.source_trial == chosen.number and counts(c)]
    return sorted(runs, key=lambda c: (c.seeds, c.number))


@dataclass(frozen=True)
class Headline:
    """An optimizer's headline accuracy and where it comes from."""

    accuracy: MeanCI
    confirmed: bool  # from confirmation seeds; False: the search trial's own seeds
    seeds: tuple[int, ...]
    failed_runs: int  # confirmation runs that diverged or ran out of memory
    values: tuple[float, ...]  # the per-seed accuracies the mean and the tests use

    @property
    def mean(self) -> float:
        """Mean accuracy."""
        return self.accuracy.mean


def headline_accuracy(chosen: TrialPoint | None, runs: Sequence[TrialPoint]) -> Headline | None:
    """Mean ± 95 % t-interval over the confirmation seeds, or the chosen trial's own seeds
    when there are none yet (the search's pick is biased upward: it won among many)."""
    finished = [r for r in runs if r.accuracy is not None]
    if finished:
        values = tuple(r.accuracy or 0.0 for r in finished)
        seeds = tuple(s for r in finished for s in r.seeds)
        return Headline(mean_ci(values), True, seeds, len(runs) - len(finished), values)
    if chosen is None or not chosen.seed_accuracies:
        return None
    values = tuple(chosen.seed_accuracies)
    return Headline(mean_ci(values), False, chosen.seeds, 0, values)


@dataclass(frozen=True)
class Speed:
    """Speed against the base optimizer: 1 / the median of pooled paired per-round ratios."""

    value: float  # > 1: faster than the base
    low: float  # 1 / third quartile of the ratios
    high: float  # 1 / first quartile
    rounds: int  # paired rounds pooled
    trials: int  # uncontended trials they came from

    @property
    def method(self) -> str:
        """One short phrase saying how the number was measured."""
        return f"paired: median of {self.rounds} interleaved rounds"


def _pooled(points: Iterable[TrialPoint], field: str) -> tuple[list[float], int]:
    used = [p for p in points if p.state == "COMPLETE" and not p.contended]
    return [r for p in used for r in getattr(p, field)], len(used)


def speed_from_ratio(ratio: float | None) -> float | None:
    """A paired cost ratio (time over the base's) as a speed (> 1: faster than the base): the
    one place a ratio becomes a speed. None where there is none: no ratio, or one that is 0,
    negative, infinite or NaN."""
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return None
    return 1.0 / ratio


def speed_vs_base(chosen: TrialPoint | None, runs: Sequence[TrialPoint]) -> Speed | None:
    """The chosen configuration's speed against the base at the same batch size, pooled over
    its uncontended search trial and confirmation runs; None if every one was contended."""
    ratios, trials = _pooled([*([chosen] if chosen else []), *runs], "paired_ratios")
    ratios = [r for r in ratios if r > 0]
    if not ratios:
        return None
    q1, q3 = quartiles(ratios)
    value, low, high = (speed_from_ratio(r) for r in (statistics.median(ratios), q3, q1))
    if value is None or low is None or high is None:
        return None
    return Speed(value, low, high, len(ratios), trials)


@dataclass(frozen=True)
class RelativeCost:
    """One configuration's per-sample cost relative to another's, from paired rounds only."""

    ratio: float
    low: float
    high: float


def cost_vs_base(chosen: TrialPoint | None, runs: Sequence[TrialPoint]) -> RelativeCost | None:
    """A configuration's per-sample cost against the base at the reference batch size: the
    median (and quartiles) of the paired per-round costs of its uncontended trial and runs."""
    costs, _ = _pooled([*([chosen] if chosen else []), *runs], "paired_costs")
    costs = [c for c in costs if c > 0]
    if not costs:
        return None
    q1, q3 = quartiles(costs)
    return RelativeCost(statistics.median(costs), q1, q3)


def relative_time(
    a: tuple[TrialPoint | None, Sequence[TrialPoint]],
    b: tuple[TrialPoint | None, Sequence[TrialPoint]],
) -> RelativeCost | None:
    """How long ``a``'s configuration trains for the same samples, relative to ``b``'s.

    Both per-sample costs are paired against the base at the reference batch size; their
    quotient is the ratio (a ratio of paired ratios: the base cancels). Its spread combines
    the quartiles conservatively. The same epochs are assumed, as every sweep trains.
    """
    pooled = [_pooled([*([p] if p else []), *runs], "paired_costs")[0] for p, runs in (a, b)]
    if not pooled[0] or not pooled[1]:
        return None
    (a1, a3), (b1, b3) = quartiles(pooled[0]), quartiles(pooled[1])
    ratio = statistics.median(pooled[0]) / statistics.median(pooled[1])
    return RelativeCost(ratio, a1 / b3, a3 / b1)


def quiet_seconds_per_sample(points: Iterable[TrialPoint]) -> float | None:
    """The base's seconds per sample at the reference batch size on a quiet machine, from every
    trial's paired rounds (:func:`looksam.bench.paired.quiet_speed`: the rule contention uses)."""
    return quiet_speed([p.reference_seconds_per_sample or 0.0 for p in points])


def estimated_seconds(
    cost: float | None, quiet: float | None, reference_batch_size: int | None
) -> float | None:
    """A paired cost (base steps at the reference batch size) in quiet-machine seconds."""
    if cost is None or quiet is None or reference_batch_size is None or not math.isfinite(cost):
        return None
    return cost * reference_batch_size * quiet
