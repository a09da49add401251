"""What a sweep will run, before it runs: every study's budget, space and cost in passes.

``sweep --dry-run`` prints these rows; a notebook can call :func:`plan_sweep` to size a sweep.
The cost is counted in forward-backward passes (the unit every optimizer's price is quoted in),
search and confirmation apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from looksam.optim import get_optimizer_info
from looksam.sweeps.spec import SweepSpec
from looksam.train.workloads import create_workload, get_workload_info


@dataclass(frozen=True)
class PlanRow:
    """One optimizer's share of the sweep."""

    study: str
    trials: int
    seeds_per_trial: int
    confirm_runs: int
    space: str  # the searched dimensions, described
    search_passes: float  # expected; adaptive optimizers (AE-SAM) lie within passes_range
    confirm_passes: float
    passes_range: tuple[float, float] = (1.0, 1.0)  # forward-backward passes per step

    def describe_passes(self) -> str:
        """'1.20' or, for an adaptive optimizer, '1.00–2.00' passes per step."""
        low, high = self.passes_range
        return f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"


def plan_sweep(spec: SweepSpec) -> list[PlanRow]:
    """Every study's budget and estimated forward-backward passes (exact for a grid)."""
    wl = get_workload_info(spec.workload.name)
    epochs = spec.workload.epochs or wl.default_epochs
    batch = spec.workload.batch_size or wl.default_batch_size
    steps = epochs * max(1, train_examples(spec) // batch)
    rows = []
    for optimizer in spec.optimizers:
        low, high = pass_range(spec, optimizer)
        per_run = steps * (low + high) / 2
        trials = spec.budget_for(optimizer)
        rows.append(
            PlanRow(
                study=spec.study_name(optimizer),
                trials=trials,
                seeds_per_trial=len(spec.seeds),
                confirm_runs=len(spec.confirm_seeds),
                space=", ".join(d.describe() for d in spec.space_for(optimizer)) or "(fixed)",
                search_passes=trials * len(spec.seeds) * per_run,
                confirm_passes=len(spec.confirm_seeds) * per_run,
                passes_range=(low, high),
            )
        )
    return rows


def pass_range(spec: SweepSpec, optimizer: str) -> tuple[float, float]:
    """Predicted (fewest, most) passes per step, averaged over the points the study will try.

    Each searched dimension that shapes the cost (k, a start fraction…) contributes its choices
    (exact for a grid) or the middle of its range; the rest are the spec's fixed values or the
    registry's defaults.
    """
    info = get_optimizer_info(optimizer)
    own = {hp.name for hp in info.hyperparameters}
    fixed = {**spec.fixed.get("common", {}), **spec.fixed.get(optimizer, {})}
    base: dict[str, Any] = {k: v for k, v in fixed.items() if k in own}
    axes: list[list[tuple[str, Any]]] = []
    for dim in spec.space_for(optimizer):
        if dim.name not in own:
            continue
        if dim.choices is not None:
            axes.append([(dim.name, c) for c in dim.choices])
        else:
            middle = ((dim.low or 0.0) + (dim.high or 0.0)) / 2
            axes.append([(dim.name, round(middle) if dim.integer else middle)])
    points = [dict(base, **dict(combo)) for combo in itertools.product(*axes)]
    ranges = [info.pass_range(point) for point in points]
    return (
        sum(low for low, _ in ranges) / len(ranges),
        sum(high for _, high in ranges) / len(ranges),
    )


def train_examples(spec: SweepSpec) -> int:
    """Examples in one training epoch of the spec's workload (may read the data's index)."""
    data_dir = Path(spec.workload.data_dir) if spec.workload.data_dir else None
    return create_workload(spec.workload.name, data_dir=data_dir).num_train_examples
