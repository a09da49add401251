"""What each optimizer's step costs relative to its base optimizer, on small CPU models.

This isolates the optimizer: same model, same batch, same base SGD, one closure per contender.
The floor for an optimizer is its forward-backward passes per step (SAM 2, k=5 variants 1.2);
anything above that is the optimizer's own arithmetic, which is what this benchmark exposes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from looksam.bench.timing import RelativeTiming, time_relative
from looksam.optim import SharpnessAwareOptimizer, create_optimizer, frozen_bn_stats
from looksam.optim._registry import get_optimizer_info

DEFAULT_CONTENDERS: tuple[str, ...] = ("sgd", "sam", "samk", "looksam", "layerlooksam")


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """~105k-parameter MLP (64-320-256-10) on a batch of 128."""
    model = nn.Sequential(
        nn.Linear(64, 320), nn.ReLU(), nn.Linear(320, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    return model, torch.randn(128, 64), torch.randint(0, 10, (128,))


def convnet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Small BatchNorm conv net (~25k parameters) on a batch of 128 RGB 16x16 images."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )
    return model, torch.randn(128, 3, 16, 16), torch.randint(0, 10, (128,))


MODELS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]]] = {
    "mlp": mlp,
    "convnet": convnet,
}


@dataclass(frozen=True)
class OverheadRow:
    """One optimizer on one model: measured ratio to the base vs its pass-count floor."""

    model: str
    optimizer: str
    params: int
    timing: RelativeTiming
    floor: float  # forward-backward passes per step relative to the base

    @property
    def overhead(self) -> float:
        """Ratio above the floor, e.g. 0.03 = the optimizer's arithmetic costs 3 % of a step."""
        return self.timing.ratio - self.floor


def _training_step(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int
) -> Callable[[], object]:
    hp: dict[str, Any] = {}
    if "k" in {h.name for h in get_optimizer_info(name).hyperparameters}:
        hp["k"] = k
    opt = create_optimizer(name, model, lr=0.01, **hp)
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        frozen = isinstance(opt, SharpnessAwareOptimizer) and opt.in_second_pass
        with frozen_bn_stats(model, enabled=frozen):
            loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    return lambda: opt.step(closure)  # type: ignore[arg-type]


def measure_overhead(
    models: tuple[str, ...] = tuple(MODELS),
    optimizers: tuple[str, ...] = DEFAULT_CONTENDERS,
    *,
    reference: str = "sgd",
    k: int = 5,
    rounds: int = 30,
    steps_per_round: int = 10,
    warmup_steps: int = 20,
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
) -> list[OverheadRow]:
    """Time every optimizer against ``reference`` on each model, all in this process (CPU)."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    for name in (*optimizers, reference):
        get_optimizer_info(name)
    contenders = tuple(dict.fromkeys((reference, *optimizers)))
    device = torch.device("cpu")
    rows: list[OverheadRow] = []
    for model_name in models:
        torch.manual_seed(seed)
        model, x, y = MODELS[model_name]()
        steps = {name: _training_step(name, copy.deepcopy(model), x, y, k) for name in contenders}
        report = None if progress is None else (lambda r, m=model_name: progress(m, r))
        timings = time_relative(
            steps,
            reference,
            device=device,
            steps_per_round=steps_per_round,
            rounds=rounds,
            warmup_steps=warmup_steps,
            progress=report,
        )
        ref_passes = get_optimizer_info(reference).passes_per_step(k)
        n_params = sum(p.numel() for p in model.parameters())
        rows.extend(
            OverheadRow(
                model=model_name,
                optimizer=t.name,
                params=n_params,
                timing=t,
                floor=get_optimizer_info(t.name).passes_per_step(k) / ref_passes,
            )
            for t in timings
        )
    return rows
