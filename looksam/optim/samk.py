"""SAM-k: SAM's gradient every k-th step, the plain gradient in between (the naive baseline)."""

from __future__ import annotations

from torch.optim import Optimizer

from looksam.optim._base import SharpnessAwareOptimizer


class SAMk(SharpnessAwareOptimizer):
    r"""SAM on look steps (t mod k = 0), a plain base step with g on the others.

    .. math::
        g_t^{\text{used}} = \begin{cases} ∇L(w_t + ρ\,g_t/‖g_t‖) & t \bmod k = 0 \\
        g_t & \text{otherwise} \end{cases}

    This is the cheap baseline that Liu et al. (CVPR 2022, "Towards Efficient and Scalable
    Sharpness-Aware Minimization", Fig. 1) show losing most of SAM's benefit; LookSAM exists to
    fix it. Cost: 1 + 1/k forward-backward passes per step. ``k=1`` is SAM.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0.
        k: interval between look steps, an integer ≥ 1.
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).
    """

    def __init__(
        self, base: Optimizer, *, rho: float = 0.05, k: int = 5, scalars: str = "auto"
    ) -> None:
        super().__init__(base, rho=rho, k=k, scalars=scalars)
