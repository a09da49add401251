"""Multi-tensor building blocks shared by the SAM family, with scalars where they cost least.

Every helper takes lists that are already grouped by (device, dtype), so each list is one
``torch._foreach_*`` launch on GPU and one C++ loop on CPU. The only Python-level loops left are
over those groups (almost always exactly one).

Scalars (norms, ratios, the zero and overflow guards) come in two forms, and every helper here
takes either:

* **device** — 0-dim tensors on the parameters' device (``torch.where`` or ``nan_to_num``, not
  ``if``). On a GPU the host can then queue the next kernels while these run: a ``.item()`` would
  stall it until the device caught up, a cost SGD never pays and that a benchmark of SAM's overhead
  must not charge to the method.
* **host** — Python floats. On a CPU reading a value costs nothing, while every 0-dim operation is
  a dispatch of several microseconds (more in a real step, whose forward and backward pass have
  just evicted the dispatcher's code from the caches): a look step of LookSAM used to spend more on
  its fifteen 0-dim operations than on its arithmetic over the weights. Floats also let the
  foreach calls take the factor as their ``alpha``, one pass instead of a product and a sum.

The optimizers choose with their ``scalars`` switch (``"auto"``: host on the CPU, device
elsewhere; see :func:`scalars_on_host`). A function returns the form its inputs came in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor
from torch.optim import Optimizer

TensorLists = tuple[list[Tensor], ...]
#: A norm, a ratio or a factor: a Python float (host scalars) or a 0-dim tensor (device scalars).
Scalar = float | Tensor

#: The values of the optimizers' ``scalars`` switch.
SCALAR_MODES = ("auto", "host", "device")
#: Past this many per-tensor norms, one stacked read is cheaper than one read each.
_STACKED_READ = 8

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


def clone_all(tensors: list[Tensor]) -> list[Tensor]:
    """Private copies of ``tensors`` in one foreach call.

    ``torch._foreach_clone`` came after torch 2.11, the oldest release supported; there a
    foreach multiply by one makes the same copies (new storage, same values, dtype and shape)
    in one call too.
    """
    clone = getattr(torch, "_foreach_clone", None)
    if clone is not None:
        return list(clone(tensors))
    return list(torch._foreach_mul(tensors, 1))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms, dot products and kept copies use: fp32 for half precision.

    bf16 keeps too few mantissa bits for a norm or a projection, fp16 overflows in a sum of
    squares; fp32 and fp64 are used as they are.
    """
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def check_scalars(mode: str) -> str:
    """Validate the ``scalars`` switch: one of :data:`SCALAR_MODES`."""
    if not isinstance(mode, str) or mode not in SCALAR_MODES:
        raise ValueError(
            f"scalars must be one of {', '.join(repr(m) for m in SCALAR_MODES)} ('auto': Python "
            "floats on the CPU, 0-dim device tensors elsewhere), got " + repr(mode)
        )
    return mode


def scalars_on_host(mode: str, device: torch.device) -> bool:
    """Whether a step on ``device`` keeps its scalars as Python floats.

    ``"auto"`` does on the CPU only: there a host read is free and a 0-dim operation is not. On
    CUDA (and any other accelerator) a host read would stall the queue, so scalars stay there.
    """
    return mode == "host" or (mode == "auto" and device.type == "cpu")


def finite_or(value: Scalar, default: float) -> Scalar:
    """``value``, or ``default`` where it is NaN or ±∞ (a guard with no branch on the device)."""
    if isinstance(value, Tensor):
        return torch.nan_to_num(value, nan=default, posinf=default, neginf=default)
    return value if math.isfinite(value) else default


def divide(numerator: Scalar, denominator: Scalar) -> Scalar:
    """numerator / denominator, IEEE-style for floats too: x/0 is ±∞ or NaN, not an error."""
    if isinstance(numerator, Tensor) or isinstance(denominator, Tensor):
        return numerator / denominator
    if denominator == 0.0:
        if numerator == 0.0 or math.isnan(numerator):
            return math.nan
        return math.copysign(math.inf, numerator) * math.copysign(1.0, denominator)
    return numerator / denominator


def norm_of(flat: Tensor, host: bool) -> Scalar:
    """‖flat‖₂ in one kernel, as a float (``host``) or a 0-dim tensor."""
    norm = torch.linalg.vector_norm(flat)
    return norm.item() if host else norm


def combine_norms(norms: Sequence[Scalar]) -> Scalar:
    """‖(n_1, n_2, …)‖₂ of per-bucket norms: the global norm over all their buckets.

    Floats combine on the host. Tensors are moved to the first one's device and widest dtype
    (buckets on several devices or in several dtypes are rare; one bucket is returned as it is).
    No bucket gives 0.
    """
    if len(norms) == 1:
        return norms[0]
    if not norms:  # no parameter has a gradient
        return torch.zeros(())
    if not isinstance(norms[0], Tensor):
        return math.hypot(*(float(n) for n in norms))
    tensors = cast(list[Tensor], list(norms))
    device, dtype = tensors[0].device, tensors[0].dtype
    for n in tensors[1:]:
        dtype = torch.promote_types(dtype, n.dtype)
    parts = [n.to(device=device, dtype=dtype, non_blocking=True) for n in tensors]
    return torch.linalg.vector_norm(torch.stack(parts))


def global_norm(groups: Sequence[list[Tensor]], *, host: bool = False) -> Scalar:
    """Global ‖x‖₂ over every tensor of every group: a float (``host``) or a 0-dim tensor.

    An empty input gives 0 (a tensor on the CPU without ``host``, as there is no device to put it
    on). On the host the per-tensor norms are read and combined in double precision: no
    reduction is dispatched beyond the foreach norm.
    """
    if host:
        return math.hypot(*(n for ts in groups if ts for n in per_tensor_norms_on_host(ts)))
    per_group = [
        torch.linalg.vector_norm(torch.stack(per_tensor_norms(ts))) for ts in groups if ts
    ]
    return combine_norms(per_group)


def per_tensor_norms_on_host(tensors: list[Tensor]) -> list[float]:
    """‖x_l‖₂ of each tensor as Python floats (one read each, or one stacked read if many)."""
    norms = per_tensor_norms(tensors)
    if len(norms) > _STACKED_READ:
        return torch.stack(norms).tolist()
    return [n.item() for n in norms]


def per_tensor_norms(tensors: list[Tensor]) -> tuple[Tensor, ...]:
    """‖x_l‖₂ for each tensor, kept on device (used by the layer-wise perturbation)."""
    return torch._foreach_norm(tensors, 2, dtype=accumulation_dtype(tensors[0].dtype))


def usable(value: Scalar) -> Tensor | bool:
    """Whether a norm can divide: finite and > 0 (a 0-dim bool tensor, or a bool for a float)."""
    if isinstance(value, Tensor):
        return torch.isfinite(value) & (value > 0)
    return math.isfinite(value) and value > 0.0


def choose(condition: Tensor | bool, if_true: Scalar, if_false: Scalar) -> Scalar:
    """``if_true`` where ``condition`` holds, else ``if_false``: ``torch.where`` on the device."""
    if isinstance(condition, Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


def safe_ratio(numerator: Scalar, denominator: Scalar) -> Scalar:
    """numerator / denominator, or 0 where that is not finite, in the form of its inputs.

    A zero, denormal or non-finite denominator (or a non-finite numerator) gives 0: the zero
    and overflow guards of every "divide by a norm" live here, so that no caller branches on a
    value the device holds. Two kernels with a tensor, none with floats.
    """
    return finite_or(divide(numerator, denominator), 0.0)


def _products(others: list[Tensor], scale: Tensor | list[Tensor]) -> list[Tensor]:
    """scale · others[i] on an accelerator: one fused launch for a single 0-dim factor."""
    return list(torch._foreach_mul(others, scale))


def _factors(scale: Tensor | list[Tensor], n: int) -> list[Tensor]:
    return scale if isinstance(scale, list) else [scale] * n


Scale = Scalar | list[Tensor] | list[float]
_DeviceScale = Tensor | list[Tensor]


def _host_factor(scale: Scale) -> bool:
    return not isinstance(scale, Tensor) and not (
        isinstance(scale, list) and scale and isinstance(scale[0], Tensor)
    )


def _ones_for(others: list[Tensor]) -> list[Tensor]:
    """A broadcast 1 per tensor: with it ``addcmul`` applies a float per tensor in one pass."""
    return [_one(others[0].dtype, others[0].device)] * len(others)


@functools.cache
def _one(dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.ones((), dtype=dtype, device=device)


def add_scaled_(tensors: list[Tensor], others: list[Tensor], scale: Scale) -> None:
    """tensors[i] += scale · others[i] in place.

    ``scale`` is one factor for all, or one per tensor; floats (host scalars) or 0-dim tensors.
    A float is the foreach add's ``alpha``: one pass. ``_foreach_add_`` takes only a host number
    as its ``alpha``; with a 0-dim tensor on CUDA a product (one fused kernel, reading the scalar
    from device memory) and a fused add cost two launches, as ``addcmul`` with a broadcast 0-dim
    factor would fall back to one launch per tensor. On the CPU, where launches cost nothing but
    each pass over memory does, the per-tensor ``addcmul`` is a single pass.
    """
    if not tensors:
        return
    if _host_factor(scale):
        if isinstance(scale, list):  # one float per tensor: addcmul with a broadcast 1
            factors = cast(list[float], scale)
            torch._foreach_addcmul_(tensors, others, _ones_for(others), factors)
        else:
            torch._foreach_add_(tensors, others, alpha=float(scale))  # type: ignore[arg-type]
        return
    if tensors[0].device.type == "cpu":
        torch._foreach_addcmul_(tensors, others, _factors(cast(_DeviceScale, scale), len(others)))
    else:
        torch._foreach_add_(tensors, _products(others, cast(_DeviceScale, scale)))


def add_scaled(tensors: list[Tensor], others: list[Tensor], scale: Scale) -> list[Tensor]:
    """tensors[i] + scale · others[i], out of place (see :func:`add_scaled_`)."""
    if not tensors:
        return []
    if _host_factor(scale):
        if isinstance(scale, list):
            factors = cast(list[float], scale)
            return list(torch._foreach_addcmul(tensors, others, _ones_for(others), factors))
        return list(torch._foreach_add(tensors, others, alpha=float(scale)))  # type: ignore[arg-type]
    if tensors[0].device.type == "cpu":
        device_scale = cast(_DeviceScale, scale)
        return list(torch._foreach_addcmul(tensors, others, _factors(device_scale, len(others))))
    out = _products(others, cast(_DeviceScale, scale))
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
