"""Multi-tensor building blocks shared by the SAM family, with every scalar kept on the device.

Every helper takes lists that are already grouped by (device, dtype), so each list is one
``torch._foreach_*`` launch on GPU and one C++ loop on CPU. The only Python-level loops left are
over those groups (almost always exactly one).

No helper reads a value back to the host. Norms, ratios and the zero/overflow guards are 0-dim
tensors on the device (``torch.where`` or ``nan_to_num``, not ``if``), so on a GPU the host can
queue the next kernels while these run: a ``.item()`` would stall it until the device caught up,
a cost SGD never pays and that a benchmark of SAM's overhead must not charge to the method.
Scalars that multiply a list go through :func:`add_scaled_`, which picks the cheaper sync-free
form per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer

TensorLists = tuple[list[Tensor], ...]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: Flat buffers start every tensor on a 16-byte boundary: CUDA's multi-tensor kernels take their
#: vectorised path only for aligned tensors.
_ALIGN_BYTES = 16


def group_by_device_and_dtype(*aligned: list[Tensor]) -> list[TensorLists]:
    """Split aligned tensor lists into per-(device, dtype) buckets for the foreach kernels.

    The lists must have equal length; entry ``i`` of every list belongs to the same parameter.
    """
    grouped = Optimizer._group_tensors_by_device_and_dtype(list(aligned))  # type: ignore[arg-type]
    return [tuple(lists) for lists, _ in grouped.values()]  # type: ignore[misc,arg-type]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms, dot products and kept copies use: fp32 for half precision.

    bf16 keeps too few mantissa bits for a norm or a projection, fp16 overflows in a sum of
    squares; fp32 and fp64 are used as they are.
    """
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def combine_norms(norms: Sequence[Tensor]) -> Tensor:
    """‖(n_1, n_2, …)‖₂ of per-bucket norms: the global norm over all their buckets.

    The parts are moved to the first one's device and widest dtype (buckets on several devices
    or in several dtypes are rare; one bucket is returned as it is). No bucket gives 0.
    """
    if len(norms) == 1:
        return norms[0]
    if not norms:  # no parameter has a gradient
        return torch.zeros(())
    device, dtype = norms[0].device, norms[0].dtype
    for n in norms[1:]:
        dtype = torch.promote_types(dtype, n.dtype)
    parts = [n.to(device=device, dtype=dtype, non_blocking=True) for n in norms]
    return torch.linalg.vector_norm(torch.stack(parts))


def global_norm(groups: Sequence[list[Tensor]]) -> Tensor:
    """Global ‖x‖₂ over every tensor of every group, as a 0-dim tensor on the device.

    An empty input gives 0 (on the CPU, as there is no device to put it on).
    """
    per_group = [
        torch.linalg.vector_norm(
            torch.stack(torch._foreach_norm(ts, 2, dtype=accumulation_dtype(ts[0].dtype)))
        )
        for ts in groups
        if ts
    ]
    return combine_norms(per_group)


def per_tensor_norms(tensors: list[Tensor]) -> tuple[Tensor, ...]:
    """‖x_l‖₂ for each tensor, kept on device (used by the layer-wise perturbation)."""
    return torch._foreach_norm(tensors, 2, dtype=accumulation_dtype(tensors[0].dtype))


def usable(value: Tensor) -> Tensor:
    """Whether a norm can divide: finite and > 0 (a 0-dim bool tensor)."""
    return torch.isfinite(value) & (value > 0)


def safe_ratio(numerator: float | Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, or 0 where that is not finite, on the device.

    A zero, denormal or non-finite denominator (or a non-finite numerator) gives 0: the zero
    and overflow guards of every "divide by a norm" live here, so that no caller branches on a
    value the device holds. Two kernels, which matters on a CPU, where each 0-dim operation costs
    a few microseconds of dispatch.
    """
    return torch.nan_to_num(numerator / denominator, nan=0.0, posinf=0.0, neginf=0.0)


def _products(others: list[Tensor], scale: Tensor | list[Tensor]) -> list[Tensor]:
    """scale · others[i] on an accelerator: one fused launch for a single 0-dim factor."""
    return list(torch._foreach_mul(others, scale))


def _factors(scale: Tensor | list[Tensor], n: int) -> list[Tensor]:
    return scale if isinstance(scale, list) else [scale] * n


def add_scaled_(tensors: list[Tensor], others: list[Tensor], scale: Tensor | list[Tensor]) -> None:
    """tensors[i] += scale · others[i] in place, with ``scale`` 0-dim device tensors.

    ``scale`` is one 0-dim tensor for all, or one per tensor. ``_foreach_add_`` takes only a
    host number as its ``alpha``. On CUDA a product with the 0-dim tensor (one fused kernel,
    reading the scalar from device memory) and a fused add cost two launches; ``addcmul`` with a
    broadcast 0-dim factor would fall back to one launch per tensor. On the CPU, where launches
    cost nothing but each pass over memory does, the per-tensor ``addcmul`` is a single pass.
    """
    if not tensors:
        return
    if tensors[0].device.type == "cpu":
        torch._foreach_addcmul_(tensors, others, _factors(scale, len(others)))
    else:
        torch._foreach_add_(tensors, _products(others, scale))


def add_scaled(
    tensors: list[Tensor], others: list[Tensor], scale: Tensor | list[Tensor]
) -> list[Tensor]:
    """tensors[i] + scale · others[i], out of place (see :func:`add_scaled_`)."""
    if not tensors:
        return []
    if tensors[0].device.type == "cpu":
        return list(torch._foreach_addcmul(tensors, others, _factors(scale, len(others))))
    out = _products(others, scale)
    torch._foreach_add_(out, tensors)
    return out


@dataclass(frozen=True)
class FlatLayout:
    """Where each tensor of one (device, dtype) bucket sits inside one contiguous 1-D buffer.

    A flat buffer turns a global norm or select into one kernel instead of one launch per tensor
    plus a reduction, and lets one gather keep or replace a whole stored vector at once. Each
    tensor starts on a 16-byte boundary; the gaps are zero when the buffer is allocated, and stay
    zero because only elementwise operations with finite scalars touch the whole buffer.
    """

    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    total: int
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, tensors: list[Tensor]) -> FlatLayout:
        """The layout for ``tensors`` (one bucket), in their accumulation dtype."""
        dtype = accumulation_dtype(tensors[0].dtype)
        align = max(1, _ALIGN_BYTES // torch.empty((), dtype=dtype).element_size())
        offsets = []
        total = 0
        for t in tensors:
            offsets.append(total)
            total += -(-t.numel() // align) * align
        return cls(
            tuple(t.shape for t in tensors), tuple(offsets), total, dtype, tensors[0].device
        )

    def allocate(self, rows: int = 1) -> Tensor:
        """A zeroed ``(rows, total)`` buffer: ``rows`` flat vectors side by side in memory."""
        return torch.zeros(rows, self.total, dtype=self.dtype, device=self.device)

    def views(self, flat: Tensor) -> list[Tensor]:
        """The per-tensor views of a buffer with this layout."""
        return [
            flat[o : o + s.numel()].view(s) for o, s in zip(self.offsets, self.shapes, strict=True)
        ]
