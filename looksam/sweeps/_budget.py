"""How ``advise`` spends a wall-clock budget: the plan before any training, then re-planning.

The budget is wall-clock on this machine, everything included: start-up, the cost bench, every
trial with its paired timing and tracking, and the report at the end. Earlier attempts of the
same run (killed, interrupted) count too: their time is stored and added on resume.

The plan splits what is left into the search and the confirmation. Every candidate gets the
same number of search trials (AlgoPerf's rule for tuning budgets, counted in trials rather than
in base-optimizer passes: a cheap optimizer's low cost is what is being measured, so it must
not also buy it a better-searched configuration). The confirmation needs at least
``confirm_seeds`` fresh seeds per candidate; a share of what remains is kept for the extra seeds
that settle the answer, and the search gets the rest, in whole rounds of one trial each.

While it runs, every trial's measured seconds replace the prediction (per candidate; a pace
factor for those not yet measured), and the search budget moves to what still fits, never
below the trials some candidate already has, so the search stays fair. The clock is injected,
so the planner is tested without training anything.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Plan to be done by this share of the budget: the last run always overshoots a little.
SAFETY = 0.95
#: A run needed for the minimum answer may still start if it should end by this share.
OVERRUN = 1.06
#: Seconds kept for the end: loading the stores, the report files, the terminal table.
FINAL_SECONDS = 6.0
#: Seconds between two runs that no run's own clock sees (asking the storage for the next
#: trial, choosing whose turn it is, the progress line).
BETWEEN_RUNS_SECONDS = 0.3
#: Of the budget beyond the minimum, the share kept for extra confirmation seeds.
EXTRA_SHARE = 0.15
#: More search trials than this per candidate buys little for a search space of a few knobs.
MAX_TRIALS = 100


class BudgetTooSmallError(ValueError):
    """The budget cannot cover one search trial per candidate and the minimum confirmation."""

    def __init__(self, needed_seconds: float, message: str) -> None:
        super().__init__(message)
        self.needed_seconds = needed_seconds


@dataclass(frozen=True)
class Plan:
    """What ``advise`` will run, decided before any training."""

    budget_seconds: float
    spent_seconds: float  # before the plan: start-up and the cost bench (and earlier attempts)
    run_seconds: dict[str, float]  # predicted seconds of one run of each candidate
    search_trials: int  # per candidate, the same for all
    confirm_seeds: int  # per candidate, at least
    extra_seconds: float  # kept for extra seeds where they decide the answer

    @property
    def round_seconds(self) -> float:
        """One run of every candidate."""
        return sum(self.run_seconds.values())

    @property
    def search_seconds(self) -> float:
        """Predicted seconds of the search."""
        return self.search_trials * self.round_seconds

    @property
    def confirm_seconds(self) -> float:
        """Predicted seconds of the minimum confirmation."""
        return self.confirm_seeds * self.round_seconds

    @property
    def predicted_seconds(self) -> float:
        """Everything, extra seeds included: at most the budget's :data:`SAFETY` share."""
        return (
            self.spent_seconds
            + self.search_seconds
            + self.confirm_seconds
            + self.extra_seconds
            + FINAL_SECONDS
        )


def minimum_seconds(run_seconds: Mapping[str, float], spent: float, confirm_seeds: int) -> float:
    """The smallest budget that fits one search trial and ``confirm_seeds`` seeds for each."""
    need = spent + (1 + confirm_seeds) * sum(run_seconds.values()) + FINAL_SECONDS
    return need / SAFETY


def plan_budget(
    budget_seconds: float,
    run_seconds: Mapping[str, float],
    spent_seconds: float,
    *,
    confirm_seeds: int,
    max_trials: int = MAX_TRIALS,
) -> Plan:
    """Split the budget (see the module docstring).

    Raises:
        BudgetTooSmallError: the minimum does not fit; ``needed_seconds`` says what would.
    """
    if not run_seconds:
        raise ValueError("nothing to plan: no candidate")
    per_round = sum(run_seconds.values())
    usable = budget_seconds * SAFETY - spent_seconds - FINAL_SECONDS
    floor = (1 + confirm_seeds) * per_round
    if usable < floor:
        needed = minimum_seconds(run_seconds, spent_seconds, confirm_seeds)
        raise BudgetTooSmallError(
            needed,
            f"a budget of {format_duration(budget_seconds)} cannot cover one search trial and "
            f"{confirm_seeds} confirmation seeds for each of the {len(run_seconds)} candidates "
            f"(about {format_duration(per_round)} per round of runs here); give --budget "
            f"{format_duration(math.ceil(needed / 10) * 10)} or more, or fewer --optimizers",
        )
    flexible = usable - floor
    extra = EXTRA_SHARE * flexible
    trials = min(max_trials, 1 + math.floor((flexible - extra) / per_round))
    # What the search cannot use (it hit max_trials) goes to the extra seeds.
    extra = usable - floor - (trials - 1) * per_round
    return Plan(
        budget_seconds=budget_seconds,
        spent_seconds=spent_seconds,
        run_seconds=dict(run_seconds),
        search_trials=trials,
        confirm_seeds=confirm_seeds,
        extra_seconds=max(0.0, extra),
    )


@dataclass
class BudgetClock:
    """The budget while ``advise`` runs: elapsed time, measured run times, re-planning.

    ``clock`` is a monotonic seconds counter (``time.monotonic``); ``spent_before`` is what
    earlier attempts of the same run spent.
    """

    plan: Plan
    clock: Callable[[], float] = time.monotonic
    spent_before: float = 0.0
    started: float | None = None
    measured: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    @property
    def budget(self) -> float:
        """The budget in seconds."""
        return self.plan.budget_seconds

    def elapsed(self) -> float:
        """Seconds spent on this run so far, earlier attempts included."""
        assert self.started is not None
        return self.spent_before + self.clock() - self.started

    def left(self) -> float:
        """Seconds of the budget still unspent (negative once overrun)."""
        return self.budget - self.elapsed()

    def record(self, optimizer: str, seconds: float) -> None:
        """A run of ``optimizer`` took ``seconds`` (a trial, from its start to its record)."""
        if seconds > 0 and math.isfinite(seconds):
            self.measured.setdefault(optimizer, []).append(seconds)

    def pace(self) -> float:
        """Measured over predicted seconds per run (median over the runs measured so far)."""
        ratios = [
            s / self.plan.run_seconds[o]
            for o, values in self.measured.items()
            if self.plan.run_seconds.get(o, 0) > 0
            for s in values
        ]
        return statistics.median(ratios) if ratios else 1.0

    def run_seconds(self, optimizer: str) -> float:
        """Expected seconds of one more run of ``optimizer``: its own median once measured."""
        own = self.measured.get(optimizer)
        if own:
            return statistics.median(own)
        return self.plan.run_seconds.get(optimizer, 0.0) * self.pace()

    def cost_of(self, runs: Mapping[str, int]) -> float:
        """Expected seconds of ``runs`` more runs per optimizer."""
        return sum(max(0, n) * self.run_seconds(o) for o, n in runs.items())

    def affords(self, runs: Mapping[str, int], share: float = SAFETY) -> bool:
        """Whether ``runs`` fit before ``share`` of the budget, the final report included."""
        between = BETWEEN_RUNS_SECONDS * sum(max(0, n) for n in runs.values())
        finish = self.elapsed() + self.cost_of(runs) + between + FINAL_SECONDS
        return finish <= share * self.budget

    def search_trials(
        self,
        taken: Mapping[str, int],
        confirm_runs: Mapping[str, int],
        current: int,
    ) -> int:
        """The search budget per candidate, re-planned before every trial.

        It shrinks only when the minimum confirmation would no longer fit after it, and grows
        only when a bigger search still leaves the plan's reserve for extra seeds, so a pace
        near the plan does not make it flicker. It never drops below the trials some candidate
        already has: every candidate ends the search with as many as the others.

        Args:
            taken: search trials each candidate has (finished or running).
            confirm_runs: the confirmation runs still to come per candidate.
            current: the search budget so far.
        """
        names = list(self.plan.run_seconds)
        available = (
            SAFETY * self.budget - self.elapsed() - FINAL_SECONDS - self.cost_of(confirm_runs)
        )
        fewest = max([1, *taken.values()])

        def largest(reserve: float) -> int:
            best = fewest
            for trials in range(fewest, MAX_TRIALS + 1):
                if (
                    self.cost_of({o: trials - taken.get(o, 0) for o in names})
                    > available - reserve
                ):
                    break
                best = trials
            return best

        grown = max(current, largest(self.plan.extra_seconds))
        return max(fewest, min(grown, largest(0.0)))

    def eta(self, runs: Mapping[str, int]) -> float:
        """Seconds until the command should end if ``runs`` are what is left to run."""
        return min(max(0.0, self.left()), self.cost_of(runs) + FINAL_SECONDS)


def parse_duration(text: str) -> float:
    """``90s``, ``20m``, ``2h``, ``1h30m`` or a bare number of seconds → seconds.

    Raises:
        ValueError: anything else, or a duration that is not > 0.
    """
    import re

    cleaned = text.strip().lower().replace(" ", "")
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.fullmatch(r"((?:\d+(?:\.\d+)?[hms])+|\d+(?:\.\d+)?)", cleaned)
    if not parts:
        raise ValueError(
            f"cannot read the budget {text!r}: give a duration such as 90s, 20m, 2h or 1h30m"
        )
    if cleaned.replace(".", "", 1).isdigit():
        seconds = float(cleaned)
    else:
        pieces = re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned)
        seen = [unit for _, unit in pieces]
        if len(set(seen)) != len(seen):
            raise ValueError(f"cannot read the budget {text!r}: a unit is given twice")
        seconds = sum(float(n) * units[u] for n, u in pieces)
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"the budget must be more than 0 seconds, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``, ``3600`` → ``1h``, ``42.4`` → ``42s``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s"]
    if secs == 0 and (hours or minutes):
        parts[2] = ""
    return "".join(parts) or "0s"
