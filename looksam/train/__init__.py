"""The one training loop and what it stands on: workloads, distributed launch, paired timing.

Everything that trains a model goes through :func:`run_training` (or a :class:`TrainingSession`
for step-by-step use); the measuring tools in :mod:`looksam.bench`, the sweeps and the diagnosis
are built on it, and nothing here imports them.
"""

from __future__ import annotations

from looksam.train import workloads as _workloads
from looksam.train.runner import (
    EpochRecord,
    RunConfig,
    RunResult,
    TrainingSession,
    resolve_device,
    run_training,
    validate_config,
)
from looksam.train.timing import RelativeTiming, time_relative
from looksam.train.workloads import *  # noqa: F403  (the workloads' whole public face)

__all__ = [
    "EpochRecord",
    "RelativeTiming",
    "RunConfig",
    "RunResult",
    "TrainingSession",
    "resolve_device",
    "run_training",
    "time_relative",
    "validate_config",
    *_workloads.__all__,
]
