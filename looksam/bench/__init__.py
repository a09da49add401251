"""Measuring tools over :mod:`looksam.train`: paired step costs, suites, scaling, the regression
check and profiles, and the host-read counter the optimizer tests use. The GPU bench
(``python -m looksam.bench.gpu``) is a package beside them: plan, three parts, Markdown, CLI.

Names load on first use, so importing one tool does not import the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from looksam._lazy import lazy_exports

_EXPORTS = {
    "BenchReport": "suite",
    "Baseline": "suite",
    "CheckRow": "suite",
    "SuiteSpec": "suite",
    "baseline_from": "suite",
    "check_baseline": "suite",
    "default_optimizers": "suite",
    "measure_suite": "suite",
    "PairedCost": "paired",
    "measure_paired_cost": "paired",
    "ScalingSpec": "scaling",
    "measure_scaling": "scaling",
    "StepProfile": "profile",
    "profile_step": "profile",
    "profile_suite": "profile",
    "CheckRefusedError": "check",
    "CheckResult": "check",
    "Measurers": "check",
    "choose_mode": "check",
    "plan_init": "check",
    "init_baseline": "check",
    "update_baseline": "check",
    "run_check": "check",
    "HostReadCounter": "host_reads",
    "count_step_host_reads": "host_reads",
}
__all__ = [
    "Baseline",
    "BenchReport",
    "CheckRefusedError",
    "CheckResult",
    "CheckRow",
    "HostReadCounter",
    "Measurers",
    "PairedCost",
    "ScalingSpec",
    "StepProfile",
    "SuiteSpec",
    "baseline_from",
    "check_baseline",
    "choose_mode",
    "count_step_host_reads",
    "default_optimizers",
    "init_baseline",
    "measure_paired_cost",
    "measure_scaling",
    "measure_suite",
    "plan_init",
    "profile_step",
    "profile_suite",
    "run_check",
    "update_baseline",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from looksam.bench.check import (
        CheckRefusedError,
        CheckResult,
        Measurers,
        choose_mode,
        init_baseline,
        plan_init,
        run_check,
        update_baseline,
    )
    from looksam.bench.host_reads import HostReadCounter, count_step_host_reads
    from looksam.bench.paired import PairedCost, measure_paired_cost
    from looksam.bench.profile import StepProfile, profile_step, profile_suite
    from looksam.bench.scaling import ScalingSpec, measure_scaling
    from looksam.bench.suite import (
        Baseline,
        BenchReport,
        CheckRow,
        SuiteSpec,
        baseline_from,
        check_baseline,
        default_optimizers,
        measure_suite,
    )
