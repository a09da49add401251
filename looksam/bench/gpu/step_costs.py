"""Part 1 of the GPU bench: bf16 step costs, rounds sized from a calibration of the base."""

from __future__ import annotations

import math
import time
from typing import Any

from looksam.bench.gpu.plan import (
    CALIBRATION_STEPS,
    CALIBRATION_WARMUP_STEPS,
    STEP_OVERHEAD_SLACK,
    Log,
    StepCostSetting,
    _check,
    _k_hyperparameters,
    _release_memory,
    _stderr,
)
from looksam.bench.suite import SuiteSpec, default_optimizers, measure_suite
from looksam.optim import (
    DEFAULT_BASE,
    get_optimizer_info,
)
from looksam.train.runner import RunConfig, TrainingSession
from looksam.train.timing import synchronize


def plan_rounds(
    setting: StepCostSetting,
    optimizers: tuple[str, ...],
    seconds_per_pass: float,
    build_seconds: float,
    budget_s: float,
) -> int:
    """Paired rounds that fit ``budget_s`` (pure function).

    A step of each optimizer is predicted as its registry's expected passes times the base's
    measured seconds per pass (times :data:`STEP_OVERHEAD_SLACK`); every contender's session
    takes ``build_seconds`` to build and ``setting.warmup_steps`` untimed steps. The answer is
    clamped to ``[min_rounds, max_rounds]``.
    """
    passes = sum(
        get_optimizer_info(name).passes_per_step(_k_hyperparameters(name, setting.k))
        for name in optimizers
    )
    step_all = seconds_per_pass * passes * STEP_OVERHEAD_SLACK  # one step of every contender
    fixed = build_seconds * len(optimizers) + setting.warmup_steps * step_all
    per_round = setting.steps_per_round * step_all
    fits = math.floor((budget_s - fixed) / per_round) if per_round > 0 else setting.max_rounds
    return max(setting.min_rounds, min(setting.max_rounds, fits))


def calibrate(setting: StepCostSetting, device: str) -> tuple[float, float]:
    """(seconds per step of the base, seconds to build its session) on ``setting``'s workload."""
    started = time.perf_counter()
    session = TrainingSession(
        RunConfig(
            workload=setting.workload,
            optimizer=DEFAULT_BASE,
            batch_size=setting.batch_size,
            device=device,
            amp=setting.amp,
            epochs=10_000,
        )
    )
    build = time.perf_counter() - started
    batches = session.batches()
    for _ in range(CALIBRATION_WARMUP_STEPS):
        session.train_step(*next(batches))
    synchronize(session.device)
    started = time.perf_counter()
    for _ in range(CALIBRATION_STEPS):
        session.train_step(*next(batches))
    synchronize(session.device)
    per_step = (time.perf_counter() - started) / CALIBRATION_STEPS
    del session, batches
    _release_memory()
    return per_step, build


def measure_step_costs(
    setting: StepCostSetting, device: str, budget_s: float, log: Log = _stderr
) -> dict[str, Any]:
    """Part 1 for one workload: the suite of :func:`default_optimizers` in ``budget_s``."""
    started = time.perf_counter()
    optimizers = default_optimizers()
    per_pass, build = calibrate(setting, device)
    left = budget_s - (time.perf_counter() - started)
    rounds = plan_rounds(setting, optimizers, per_pass, build, left)
    log(
        f"  {setting.workload}: {len(optimizers)} optimizers, {rounds} rounds × "
        f"{setting.steps_per_round} steps (base step {per_pass * 1e3:.1f} ms, "
        f"budget {budget_s:.0f} s)"
    )
    spec = SuiteSpec(
        workload=setting.workload,
        optimizers=optimizers,
        reference=DEFAULT_BASE,
        k=setting.k,
        batch_size=setting.batch_size,
        device=device,
        amp=setting.amp,
        rounds=rounds,
        steps_per_round=setting.steps_per_round,
        warmup_steps=setting.warmup_steps,
    )
    report = measure_suite(spec)
    _release_memory()
    rows = [
        {
            "optimizer": cost.optimizer,
            "label": get_optimizer_info(cost.optimizer).label,
            "median_step_seconds": cost.median_step_seconds,
            "samples_per_second": cost.samples_per_second,
            "ratio": cost.ratio,
            "ratio_q1": cost.ratio_q1,
            "ratio_q3": cost.ratio_q3,
            "floor": cost.floor,
            "overhead": cost.overhead,
        }
        for cost in report.costs
    ]
    return {
        "workload": setting.workload,
        "reference": DEFAULT_BASE,
        "batch_size": report.batch_size,
        "amp": setting.amp,
        "k": setting.k,
        "rounds": rounds,
        "steps_per_round": setting.steps_per_round,
        "warmup_steps": setting.warmup_steps,
        "calibration_step_seconds": per_pass,
        "budget_s": budget_s,
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }


def _step_cost_check(table: dict[str, Any]) -> dict[str, Any]:
    bad = [
        row["optimizer"]
        for row in table["rows"]
        if not all(
            isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0
            for key in ("ratio", "samples_per_second", "floor")
        )
    ]
    reason = (
        f"{len(table['rows'])} optimizers measured over {table['rounds']} paired rounds"
        if not bad
        else f"non-finite or zero measurements for {', '.join(bad)}"
    )
    return _check(f"step-costs/{table['workload']}", not bad, reason)
