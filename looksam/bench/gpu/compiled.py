"""Part 3 of the GPU bench: compiled against eager, step-time ratio and loss agreement."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from looksam.bench.gpu.plan import (
    COMPILED_OPTIMIZERS,
    CompileSetting,
    Log,
    _check,
    _error_line,
    _k_hyperparameters,
    _release_memory,
    _stderr,
)
from looksam.optim import (
    get_optimizer_info,
)
from looksam.train.runner import RunConfig, TrainingSession
from looksam.train.timing import synchronize, time_relative


@contextlib.contextmanager
def _compile_backend(backend: str | None) -> Iterator[None]:
    """``torch.compile`` with ``backend`` while sessions are built (the runner calls it)."""
    if backend is None:
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = original


def _compile_session(setting: CompileSetting, name: str, device: str, compiled: bool) -> Any:
    config = RunConfig(
        workload=setting.workload,
        optimizer=name,
        hyperparameters=_k_hyperparameters(name, setting.k),
        batch_size=setting.batch_size,
        device=device,
        amp=setting.amp,
        compile=compiled,
        epochs=10_000,
        seed=0,
    )
    with _compile_backend(setting.backend if compiled else None):
        return TrainingSession(config)


def _losses(session: TrainingSession, batches: Iterator[Any], steps: int) -> list[float]:
    return [float(session.train_step(*next(batches))) for _ in range(steps)]


def compare_compiled(setting: CompileSetting, device: str, name: str) -> dict[str, Any]:
    """Part 3 for one optimizer: compiled/eager step-time ratio and loss agreement.

    Both sessions start from the same seed and draw the same batches; Dynamo's caches are reset
    first (``torch._dynamo.reset()``), so the first compiled step includes the compilation.
    """
    started = time.perf_counter()
    row: dict[str, Any] = {
        "optimizer": name,
        "label": get_optimizer_info(name).label,
        "error": None,
    }
    torch._dynamo.reset()
    eager = _compile_session(setting, name, device, compiled=False)
    eager_batches = eager.batches()
    row["eager_losses"] = _losses(eager, eager_batches, setting.loss_steps)
    try:
        compiled = _compile_session(setting, name, device, compiled=True)
        compiled_batches = compiled.batches()
        synchronize(compiled.device)
        first = time.perf_counter()
        losses = _losses(compiled, compiled_batches, 1)
        synchronize(compiled.device)
        row["first_compiled_step_seconds"] = time.perf_counter() - first
        losses += _losses(compiled, compiled_batches, setting.loss_steps - 1)
        row["compiled_losses"] = losses
    except Exception as error:  # a compile failure is a finding, reported per optimizer
        row["error"] = _error_line(error)
        row["elapsed_s"] = time.perf_counter() - started
        return row
    a, b = row["eager_losses"][-1], row["compiled_losses"][-1]
    row["final_eager_loss"], row["final_compiled_loss"] = a, b
    row["relative_difference"] = abs(a - b) / max(abs(a), abs(b), 1e-12)
    row["losses_agree"] = (
        math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=setting.rel_tol)
    )

    def stepper(session: TrainingSession, batches: Iterator[Any]) -> Callable[[], None]:
        def step() -> None:
            session.train_step(*next(batches))

        return step

    try:
        timings = time_relative(
            {
                "eager": stepper(eager, eager_batches),
                "compiled": stepper(compiled, compiled_batches),
            },
            "eager",
            device=eager.device,
            steps_per_round=setting.steps_per_round,
            rounds=setting.rounds,
            warmup_steps=setting.warmup_steps,
        )
    except Exception as error:  # a recompile that fails late still fails the check
        row["error"] = _error_line(error)
        row["elapsed_s"] = time.perf_counter() - started
        return row
    by_name = {t.name: t for t in timings}
    row.update(
        eager_step_seconds=by_name["eager"].median_step_seconds,
        compiled_step_seconds=by_name["compiled"].median_step_seconds,
        ratio=by_name["compiled"].ratio,
        ratio_q1=by_name["compiled"].ratio_q1,
        ratio_q3=by_name["compiled"].ratio_q3,
        elapsed_s=time.perf_counter() - started,
    )
    del eager, compiled
    _release_memory()
    return row


def measure_compiled(setting: CompileSetting, device: str, log: Log = _stderr) -> dict[str, Any]:
    """Part 3: :func:`compare_compiled` for every optimizer of :data:`COMPILED_OPTIMIZERS`."""
    started = time.perf_counter()
    rows = []
    for name in COMPILED_OPTIMIZERS:
        log(f"  {name}: eager and compiled on {setting.workload}")
        rows.append(compare_compiled(setting, device, name))
    return {
        "workload": setting.workload,
        "batch_size": setting.batch_size,
        "amp": setting.amp,
        "k": setting.k,
        "backend": setting.backend or "inductor",
        "loss_steps": setting.loss_steps,
        "rel_tol": setting.rel_tol,
        "rounds": setting.rounds,
        "steps_per_round": setting.steps_per_round,
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }


def _compile_checks(table: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for row in table["rows"]:
        name = f"compile/{row['optimizer']}"
        if row["error"]:
            checks.append(_check(name, False, f"torch.compile failed: {row['error']}"))
            continue
        a, b = row["final_eager_loss"], row["final_compiled_loss"]
        verdict = "agree" if row["losses_agree"] else "differ"
        reason = (
            f"losses after {table['loss_steps']} steps {verdict}: eager {a:.6g}, compiled "
            f"{b:.6g} (relative difference {row['relative_difference']:.2g}, tolerance "
            f"{table['rel_tol']:g}); compiled/eager step time {row['ratio']:.2f}"
        )
        checks.append(_check(name, row["losses_agree"], reason))
    return checks
