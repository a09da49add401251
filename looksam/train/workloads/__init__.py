"""Registered workloads. Importing this package registers every built-in one."""

from __future__ import annotations

from looksam.train.workloads import cifar as _cifar  # noqa: F401  (registers on import)
from looksam.train.workloads import custom as _custom  # noqa: F401  (module:function names)
from looksam.train.workloads import digits as _digits  # noqa: F401  (registers on import)
from looksam.train.workloads import generated as _generated  # noqa: F401  (registers on import)
from looksam.train.workloads import imagenet as _imagenet  # noqa: F401  (registers on import)
from looksam.train.workloads import mnist as _mnist  # noqa: F401  (registers on import)
from looksam.train.workloads import synthetic as _synthetic  # noqa: F401  (registers on import)
from looksam.train.workloads import timm_models as _timm  # noqa: F401  (timm:MODEL names)
from looksam.train.workloads._base import (
    Batch,
    IndexedBatch,
    TensorWorkload,
    Workload,
    WorkloadDataError,
    WorkloadInfo,
    create_workload,
    get_workload_info,
    list_workloads,
    register_workload,
    register_workload_resolver,
)
from looksam.train.workloads._loader import LoaderWorkload
from looksam.train.workloads.custom import custom_workload

__all__ = [
    "Batch",
    "IndexedBatch",
    "LoaderWorkload",
    "TensorWorkload",
    "Workload",
    "WorkloadDataError",
    "WorkloadInfo",
    "create_workload",
    "custom_workload",
    "get_workload_info",
    "list_workloads",
    "register_workload",
    "register_workload_resolver",
]
