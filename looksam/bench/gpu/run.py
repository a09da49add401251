"""The whole GPU bench run: machine facts, the three parts within a time budget, the checks."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch

from looksam.bench.gpu.compiled import _compile_checks, measure_compiled
from looksam.bench.gpu.plan import (
    DEFAULT_TIME_BUDGET_S,
    DRY_RUN_PLAN,
    GPU_PLAN,
    Log,
    Plan,
    _check,
    _error_line,
    _release_memory,
    _stderr,
    sam_family,
)
from looksam.bench.gpu.step_costs import _step_cost_check, measure_step_costs
from looksam.bench.gpu.syncs import _sync_checks, check_host_syncs
from looksam.bench.suite import default_optimizers
from looksam.train.runner import environment, resolve_device


def machine(device: str) -> dict[str, Any]:
    """Where the numbers were measured: the runner's environment plus CUDA's versions."""
    dev = resolve_device(device)
    info: dict[str, Any] = asdict(environment(dev))
    info["cuda_version"] = torch.version.cuda
    info["cudnn_version"] = (
        torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    )
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
        info["gpu_count"] = torch.cuda.device_count()
    return info


def run_gpu_bench(
    *,
    dry_run: bool = False,
    time_budget: float = DEFAULT_TIME_BUDGET_S,
    plan: Plan | None = None,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Run the three parts and return the results (what ``results.json`` holds).

    Args:
        dry_run: the CPU plan (:data:`DRY_RUN_PLAN`) instead of :data:`GPU_PLAN`.
        time_budget: seconds the whole run aims for; each part gets its ``share`` of it.
        plan: run this plan instead (a notebook's own settings).
        log: where progress lines go (stderr by default).
    """
    plan = plan or (DRY_RUN_PLAN if dry_run else GPU_PLAN)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": plan.mode,
        "machine": machine(plan.device),
        "time_budget_s": time_budget,
        "step_costs": [],
        "host_sync": None,
        "compile": None,
        "checks": [],
    }
    checks: list[dict[str, Any]] = results["checks"]
    total_parts = 3
    log(
        f"[1/{total_parts}] step costs ({plan.step_costs[0].amp}) of {len(default_optimizers())} "
        "optimizers"
    )
    for setting in plan.step_costs:
        try:
            table = measure_step_costs(setting, plan.device, setting.share * time_budget, log)
        except Exception as error:  # OOM, a crashing optimizer: report, go on with the rest
            _release_memory()
            checks.append(_check(f"step-costs/{setting.workload}", False, _error_line(error)))
            continue
        results["step_costs"].append(table)
        checks.append(_step_cost_check(table))
    log(f"[2/{total_parts}] host syncs of {len(sam_family())} SAM-family optimizers")
    try:
        sync = check_host_syncs(plan.sync, plan.device, plan.enforce_syncs)
        results["host_sync"] = sync
        checks.extend(_sync_checks(sync))
    except Exception as error:
        checks.append(_check("host-sync", False, _error_line(error)))
    log(f"[3/{total_parts}] torch.compile against eager")
    try:
        compiled = measure_compiled(plan.compile, plan.device, log)
        results["compile"] = compiled
        checks.extend(_compile_checks(compiled))
    except Exception as error:
        checks.append(_check("compile", False, _error_line(error)))
    elapsed = time.perf_counter() - started
    results["elapsed_s"] = elapsed
    checks.append(
        _check(
            "time-budget",
            elapsed <= time_budget,
            f"{elapsed:.0f} s of {time_budget:.0f} s",
            enforced=False,
        )
    )
    results["passed"] = all(c["passed"] for c in checks if c["enforced"])
    return results
