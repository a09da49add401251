"""SAM (Foret et al., ICLR 2021) and its adaptive variant ASAM (Kwon et al., ICML 2021)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._base import Bucket, SharpnessAwareOptimizer
from looksam.optim._foreach import Scalar, global_norm, safe_ratio


def asam_perturbed_weights(buckets: list[Bucket], rho: float, host: bool) -> list[list[Tensor]]:
    """w + ρ·T²g/‖Tg‖ with T = |w| and a global norm; ε = 0 when ‖Tg‖ is 0.

    ``host``: the norm and the factor are floats (see ``looksam.optim._foreach``).
    """
    abs_w = [torch._foreach_abs(b.params) for b in buckets]
    scaled = [list(torch._foreach_mul(t, b.grads)) for t, b in zip(abs_w, buckets, strict=True)]
    scale = safe_ratio(rho, global_norm(scaled, host=host))  # ρ/‖T g‖
    for tg, t, b in zip(scaled, abs_w, buckets, strict=True):
        torch._foreach_mul_(tg, t)  # T² g
        torch._foreach_mul_(tg, scale)
        torch._foreach_add_(tg, b.params)
    return scaled


class SAM(SharpnessAwareOptimizer):
    r"""Sharpness-Aware Minimization: every step uses the gradient at the worst nearby point.

    With g = ∇L(w) and global norms over every parameter that has a gradient:

    .. math::
        ε = ρ\,g/‖g‖, \qquad g_s = ∇L(w + ε), \qquad w ← \text{base\_step}(w, g_s)

    ``adaptive=True`` gives ASAM, whose neighbourhood is scaled by T = |w| elementwise:
    ε = ρ·T²g/‖T g‖. If the norm is zero there is no perturbation (no NaN, no epsilon).
    On an accelerator no value is read back to the host: the norms and their zero guard stay on
    the device.

    Each step costs two forward-backward passes; the closure is called twice.

    Args:
        base: the optimizer that applies the update (SGD, AdamW, LAMB…), built on the same params.
        rho: neighbourhood radius ρ ≥ 0; ρ = 0 reproduces the base optimizer.
        adaptive: use ASAM's parameter-scaled neighbourhood.
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).

    Example::

        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt = SAM(base, rho=0.05)

        def closure():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        scalars: str = "auto",
    ) -> None:
        if not isinstance(adaptive, bool):
            raise ValueError(f"adaptive must be True or False, got {adaptive!r}")
        super().__init__(base, rho=rho, k=1, scalars=scalars)
        self.adaptive = adaptive

    def _perturbed_weights(self, buckets: list[Bucket], grad_norm: Scalar) -> list[list[Tensor]]:
        if not self.adaptive:
            return super()._perturbed_weights(buckets, grad_norm)
        return asam_perturbed_weights(buckets, self.rho, self._host)

    def __repr__(self) -> str:
        return (
            f"SAM(base={type(self.base).__name__}, rho={self.rho}, adaptive={self.adaptive}, "
            f"steps_done={self.steps_done})"
        )
