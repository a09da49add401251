"""Look-LayerSAM (Liu et al., CVPR 2022, Sec. 3.3): LookSAM with a layer-wise perturbation."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from looksam.optim._base import Bucket
from looksam.optim._foreach import (
    Scalar,
    add_scaled,
    per_tensor_norms,
    per_tensor_norms_on_host,
    usable,
)
from looksam.optim.looksam import LookSAM


class LayerLookSAM(LookSAM):
    r"""LookSAM whose perturbation is scaled per parameter tensor, LAMB-style.

    For each parameter tensor l (weights and biases are separate "layers"):

    .. math::
        ε_l = ρ\,\frac{‖w_l‖}{‖g_l‖}\, g_l \qquad (ε_l = 0 \text{ where either norm is } 0)

    so that every layer moves by the same fraction ρ of its own size, which is what keeps the
    perturbation meaningful at the very large batch sizes the paper trains with LAMB. The g_v
    projection, its reuse on the other steps and all norms there are global, exactly as in
    :class:`LookSAM`.

    Data-parallel training works as for :class:`LookSAM`: nothing extra with the global
    perturbation; with a per-rank one each rank scales ε_l by its own g_l, and ``sync_gv``
    averages the stored g_v across ranks (one all-reduce of |θ| numbers per look step).

    Args:
        base: the optimizer that applies the update (the paper pairs it with LAMB).
        rho: relative radius ρ ≥ 0.
        k: interval between look steps, an integer ≥ 1.
        alpha: weight α ≥ 0 of the reused g_v.
        sync_gv: per-rank perturbation only: averages g_v across ranks in place (see LookSAM).
    """

    def _perturbed_weights(self, buckets: list[Bucket], grad_norm: Scalar) -> list[list[Tensor]]:
        if not isinstance(grad_norm, Tensor):  # host scalars: one factor per tensor, as floats
            return [add_scaled(b.params, b.grads, self._layer_factors(b)) for b in buckets]
        perturbed = []
        for b in buckets:
            w_norms = torch.stack(per_tensor_norms(b.params))
            g_norms = torch.stack(per_tensor_norms(b.grads))
            # ρ‖w_l‖/‖g_l‖ per tensor on the device, 0 where either norm is 0 or not finite;
            # one 0-dim factor per tensor, so forming w + ε needs no host read.
            ok = cast(Tensor, usable(w_norms)) & cast(Tensor, usable(g_norms))
            ratio = self.rho * w_norms / torch.where(ok, g_norms, torch.ones_like(g_norms))
            scales = torch.where(ok, ratio, torch.zeros_like(ratio))
            perturbed.append(add_scaled(b.params, b.grads, list(scales.unbind())))
        return perturbed

    def _layer_factors(self, bucket: Bucket) -> list[float]:
        """ρ‖w_l‖/‖g_l‖ per tensor on the host, 0 where either norm is 0 or not finite."""
        w_norms = per_tensor_norms_on_host(bucket.params)
        g_norms = per_tensor_norms_on_host(bucket.grads)
        return [
            self.rho * w / g if usable(w) and usable(g) else 0.0
            for w, g in zip(w_norms, g_norms, strict=True)
        ]
