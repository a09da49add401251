"""Sweeps: declarative search spaces (TOML specs), Optuna studies with equal budgets and paired
speed, confirmation seeds, ``advise``'s cheapest-as-good-as-SAM answer, and MLflow tracking.

Names load on first use, so ``import looksam.sweeps.spec`` does not import Optuna or MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from looksam._lazy import lazy_exports

_EXPORTS = {
    "SpecError": "spec",
    "SweepSpec": "spec",
    "load_spec": "spec",
    "parse_spec": "spec",
    "SweepResult": "study",
    "run_sweep": "study",
    "AdviseRequest": "advise",
    "AdviseResult": "advise",
    "run_advise": "advise",
    "load_sweep_data": "results",
    "save_report": "results",
    "plan_sweep": "plan",
    "validate_trial_space": "validate",
    "SCHEMA_VERSION": "schema",
    "TrialAttrs": "schema",
    "read_trial_attrs": "schema",
    "write_trial_attrs": "schema",
}
__all__ = [
    "SCHEMA_VERSION",
    "AdviseRequest",
    "AdviseResult",
    "SpecError",
    "SweepResult",
    "SweepSpec",
    "TrialAttrs",
    "load_spec",
    "load_sweep_data",
    "parse_spec",
    "plan_sweep",
    "read_trial_attrs",
    "run_advise",
    "run_sweep",
    "save_report",
    "validate_trial_space",
    "write_trial_attrs",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from looksam.sweeps.advise import AdviseRequest, AdviseResult, run_advise
    from looksam.sweeps.plan import plan_sweep
    from looksam.sweeps.results import load_sweep_data, save_report
    from looksam.sweeps.schema import (
        SCHEMA_VERSION,
        TrialAttrs,
        read_trial_attrs,
        write_trial_attrs,
    )
    from looksam.sweeps.spec import SpecError, SweepSpec, load_spec, parse_spec
    from looksam.sweeps.study import SweepResult, run_sweep
    from looksam.sweeps.validate import validate_trial_space
