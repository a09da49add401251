"""Multi-tensor building blocks shared by the SAM family.

Every helper takes lists that are already grouped by (device, dtype), so each list is one
``torch._foreach_*`` launch on GPU and one C++ loop on CPU. The only Python-level loops left are
over those groups (almost always exactly one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

TensorLists = tuple[list[Tensor], ...]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def group_by_device_and_dtype(*aligned: list[Tensor]) -> list[TensorLists]:
    """Split aligned tensor lists into per-(device, dtype) buckets for the foreach kernels.

    The lists must have equal length; entry ``i`` of every list belongs to the same parameter.
    """
    grouped = Optimizer._group_tensors_by_device_and_dtype(list(aligned))  # type: ignore[arg-type]
    return [tuple(lists) for lists, _ in grouped.values()]  # type: ignore[misc,arg-type]


def _norm_dtype(tensors: Sequence[Tensor]) -> torch.dtype | None:
    # Half-precision norms lose too many bits (bf16) or overflow (fp16): accumulate in fp32.
    return torch.float32 if tensors and tensors[0].dtype in _LOW_PRECISION else None


def squared_norm(groups: Sequence[list[Tensor]]) -> float:
    """Global ‖x‖² over every tensor of every group, as a Python float (one sync per group)."""
    total = 0.0
    for tensors in groups:
        if not tensors:
            continue
        norms = torch._foreach_norm(tensors, 2, dtype=_norm_dtype(tensors))
        total += float(torch.linalg.vector_norm(torch.stack(norms)).item()) ** 2
    return total


def global_norm(groups: Sequence[list[Tensor]]) -> float:
    """Global ‖x‖₂ over every tensor of every group."""
    return math.sqrt(squared_norm(groups))


def per_tensor_norms(tensors: list[Tensor]) -> tuple[Tensor, ...]:
    """‖x_l‖₂ for each tensor, kept on device (used by the layer-wise perturbation)."""
    return torch._foreach_norm(tensors, 2, dtype=_norm_dtype(tensors))
