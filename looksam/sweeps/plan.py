"""What a sweep will run, before it runs: every study's budget, space and cost in passes.

``sweep --dry-run`` prints these rows; a notebook can call :func:`plan_sweep` to size a sweep.
The cost is counted in forward-backward passes (the unit every optimizer's price is quoted in),
search and confirmation apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from looksam.bench.workloads import create_workload, get_workload_info
from looksam.optim import get_optimizer_info
from looksam.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class PlanRow:
    """One optimizer's share of the sweep."""

    study: str
    trials: int
    seeds_per_trial: int
    confirm_runs: int
    space: str  # the searched dimensions, described
    search_passes: float
    confirm_passes: float


def plan_sweep(spec: SweepSpec) -> list[PlanRow]:
    """Every study's budget and estimated forward-backward passes (exact for a grid)."""
    wl = get_workload_info(spec.workload.name)
    epochs = spec.workload.epochs or wl.default_epochs
    batch = spec.workload.batch_size or wl.default_batch_size
    steps = epochs * max(1, _train_examples(spec) // batch)
    rows = []
    for optimizer in spec.optimizers:
        per_run = steps * mean_passes_per_step(spec, optimizer)
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
            )
        )
    return rows


def mean_passes_per_step(spec: SweepSpec, optimizer: str) -> float:
    """Passes per step averaged over the k the study will try (exact for a grid)."""
    info = get_optimizer_info(optimizer)
    dim = next((d for d in spec.space_for(optimizer) if d.name == "k"), None)
    if dim is None:
        ks = [int(spec.fixed.get(optimizer, {}).get("k", 5))]
    elif dim.choices is not None:
        ks = [int(c) for c in dim.choices]
    else:
        ks = [int((dim.low or 5) + (dim.high or 5)) // 2]
    return sum(info.passes_per_step({"k": k}) for k in ks) / len(ks)


def _train_examples(spec: SweepSpec) -> int:
    data_dir = Path(spec.workload.data_dir) if spec.workload.data_dir else None
    return create_workload(spec.workload.name, data_dir=data_dir).num_train_examples
