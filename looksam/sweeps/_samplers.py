"""Samplers, pruners and objective directions of a sweep's studies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from looksam.sweeps.spec import SweepSpec


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is used up.

    That call only works inside ``study.optimize``; the sweep drives studies with ask/tell and
    stops at the budget (the grid's size) itself.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def sampler_seed(spec: SweepSpec, optimizer: str, history: int) -> int:
    """A study's sampler seed from the sweep's seed, the study and how many trials it has.

    A seed from the spec alone would make every new process (a resume, a second worker) draw
    the same random start again; the trial count makes each ask's draw new yet reproducible.
    """
    entropy = [spec.sampler_seed, spec.optimizers.index(optimizer), history]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_sampler(spec: SweepSpec, optimizer: str, history: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler for ``optimizer``'s study, seeded for its next trial."""
    seed = sampler_seed(spec, optimizer, history)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if spec.sampler == "grid":
        # Its seed shuffles the grid's numbering, which every worker and resume must share;
        # it never repeats a point anyway (it picks among the points no trial has taken).
        return GridSampler(spec.grid_for(optimizer), seed=sampler_seed(spec, optimizer, 0))
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The spec's pruner (none for pareto: Optuna cannot prune multi-objective studies)."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def directions(objective: str) -> list[StudyDirection]:
    """Optuna directions for an objective."""
    up, down = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    if objective == "pareto":
        return [up, down]  # accuracy, paired cost
    if objective == "accuracy":
        return [up]
    return [down]  # time-to-target (paired cost until the target)


#: What each objective's values are, for Optuna's dashboards and MLflow.
METRIC_NAMES = {
    "pareto": ["accuracy", "cost_reference_steps"],
    "accuracy": ["accuracy"],
    "time-to-target": ["cost_to_target_reference_steps"],
}
