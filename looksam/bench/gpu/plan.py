"""What the GPU bench runs: its settings, the GPU plan and the CPU dry-run plan (data)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from looksam.optim import (
    DEFAULT_BASE,
    DEFAULT_OPTIMIZER,
    get_optimizer_info,
    list_optimizers,
)


@dataclass(frozen=True)
class StepCostSetting:
    """One workload of part 1: how its suite is measured and its share of the time budget."""

    workload: str
    batch_size: int
    amp: str
    k: int  # look interval of the k-step optimizers (steps_per_round must be a multiple)
    steps_per_round: int
    warmup_steps: int
    min_rounds: int  # run at least this many paired rounds, even over the budget
    max_rounds: int  # never more, even with time to spare
    share: float  # of the time budget: calibration, session building, warm-up and rounds


@dataclass(frozen=True)
class SyncSetting:
    """Part 2: the small model whose optimizer steps are watched for host syncs."""

    workload: str
    batch_size: int
    k: int  # look interval for the k-step optimizers: k = 2 alternates look and plain steps
    warmup_steps: int  # not counted: lazy state, first-step allocations
    steps: int  # counted, per optimizer
    share: float


@dataclass(frozen=True)
class CompileSetting:
    """Part 3: compiled against eager, for :data:`COMPILED_OPTIMIZERS`."""

    workload: str
    batch_size: int
    amp: str
    k: int
    loss_steps: int  # steps both versions train before their losses are compared
    rel_tol: float  # the losses agree when within this relative tolerance (floats, not bits)
    rounds: int
    steps_per_round: int
    warmup_steps: int
    backend: str | None  # torch.compile's backend; None: its default (inductor)
    share: float


@dataclass(frozen=True)
class Plan:
    """Everything one run does: the device and the settings of the three parts."""

    mode: str  # "gpu" | "dry-run"
    device: str
    step_costs: tuple[StepCostSetting, ...]
    sync: SyncSetting
    compile: CompileSetting
    #: Whether host syncs above the allowance fail the run (False: reported as notes only).
    enforce_syncs: bool


#: Total wall-clock the default run aims for, in seconds (shares below are fractions of it).
DEFAULT_TIME_BUDGET_S = 480.0
#: Where results go without ``--out`` and without ``$OUT``.
DEFAULT_OUT = Path("reports/gpu-bench")
#: The optimizers part 3 compiles: the base and the method this project is named after.
COMPILED_OPTIMIZERS = (DEFAULT_BASE, DEFAULT_OPTIMIZER)  # SGD and LookSAM

#: One CUDA GPU, bf16 autocast. Shares: 2 × 0.30 step costs, 0.05 syncs, 0.30 compile (mostly
#: inductor's compile time) and 0.05 left for start-up and writing.
GPU_PLAN = Plan(
    mode="gpu",
    device="cuda",
    step_costs=(
        StepCostSetting(
            workload="synthetic-vit-s16-imagenet",
            batch_size=128,
            amp="bf16",
            k=5,
            steps_per_round=10,
            warmup_steps=10,
            min_rounds=5,
            max_rounds=30,
            share=0.30,
        ),
        StepCostSetting(
            workload="synthetic-resnet50-imagenet",
            batch_size=128,
            amp="bf16",
            k=5,
            steps_per_round=10,
            warmup_steps=10,
            min_rounds=5,
            max_rounds=30,
            share=0.30,
        ),
    ),
    sync=SyncSetting(
        workload="synthetic-mlp", batch_size=128, k=2, warmup_steps=2, steps=4, share=0.05
    ),
    compile=CompileSetting(
        workload="synthetic-vit-s16-imagenet",
        batch_size=128,
        amp="bf16",
        k=5,
        loss_steps=10,
        rel_tol=2e-2,  # bf16: eager and inductor kernels round differently
        rounds=10,
        steps_per_round=10,
        warmup_steps=5,
        backend=None,
        share=0.30,
    ),
    enforce_syncs=True,
)

#: The CPU dry run (CI): the same code on a tiny MLP, seconds per part. torch.compile uses the
#: ``aot_eager`` backend (Dynamo's tracing and AOT autograd without inductor's C++ build, which
#: alone takes about 30 s on two cores).
DRY_RUN_PLAN = Plan(
    mode="dry-run",
    device="cpu",
    step_costs=(
        StepCostSetting(
            workload="synthetic-mlp",
            batch_size=64,
            amp="bf16",
            k=2,
            steps_per_round=2,
            warmup_steps=2,
            min_rounds=3,
            max_rounds=3,
            share=0.30,
        ),
    ),
    sync=SyncSetting(
        workload="synthetic-mlp", batch_size=64, k=2, warmup_steps=2, steps=4, share=0.05
    ),
    compile=CompileSetting(
        workload="synthetic-mlp",
        batch_size=64,
        amp="off",
        k=2,
        loss_steps=4,
        rel_tol=1e-4,
        rounds=3,
        steps_per_round=2,
        warmup_steps=1,
        backend="aot_eager",
        share=0.30,
    ),
    enforce_syncs=True,
)

#: Calibration of part 1: untimed then timed steps of the base, to predict a round's length.
CALIBRATION_WARMUP_STEPS = 3
CALIBRATION_STEPS = 5
#: A step costs its passes times this (optimizer arithmetic, bookkeeping) in the prediction.
STEP_OVERHEAD_SLACK = 1.2

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _error_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _k_hyperparameters(name: str, k: int) -> dict[str, Any]:
    return {"k": k} if get_optimizer_info(name).takes_k else {}


def sam_family() -> tuple[str, ...]:
    """Every registered SAM-family optimizer (read at call time: plugins count)."""
    return tuple(info.name for info in list_optimizers() if info.wraps_base)


def _check(name: str, passed: bool, reason: str, *, enforced: bool = True) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "enforced": enforced, "reason": reason}


def _dash(value: Any) -> str:
    return "–" if value is None else str(value)
