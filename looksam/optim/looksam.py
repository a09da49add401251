"""LookSAM (Liu et al., CVPR 2022): SAM's gradient every k steps, its slow part reused between."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._base import SharpnessAwareOptimizer, _LookInFlight, check_alpha
from looksam.optim._foreach import global_norm, squared_norm

#: ‖g_v‖ at or below this many ulps of ‖g_s‖ is rounding error of the projection, taken as 0.
_NOISE_FLOOR = 16.0


class LookSAM(SharpnessAwareOptimizer):
    r"""LookSAM: compute g_s every k steps and reuse its component orthogonal to g in between.

    Liu et al., "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022,
    Algorithm 1. With global norms and the step counter t starting at 0:

    Look step (t mod k = 0), like SAM, and store the part of g_s orthogonal to g:

    .. math::
        g_s = ∇L(w + ρ\,g/‖g‖), \qquad
        g_v = g_s - \frac{⟨g, g_s⟩}{‖g‖^2}\, g, \qquad w ← \text{base\_step}(w, g_s)

    Other steps reuse the stored g_v, rescaled to the current gradient:

    .. math::
        w ← \text{base\_step}\Big(w,\; g + α\,\frac{‖g‖}{‖g_v‖}\, g_v\Big)

    ‖g_v‖ is computed once per look step and cached. If ‖g‖ = 0 there is no perturbation and
    ⟨g, g_s⟩/‖g‖² is taken as 0; if ‖g_v‖ = 0 — or is no larger than the projection's rounding
    error, 16 ulps of ‖g_s‖, as when g_s ∥ g — the reuse term is 0. ``k=1`` is SAM; ``alpha=0`` is
    SAM-k. Cost: 1 + 1/k forward-backward passes per step.

    Data-parallel training (``DistributedDataParallel``; see the module docstring of
    ``looksam.optim._base``): with the default *global* perturbation both passes are
    all-reduced, every rank computes the same g, g_s and g_v, and nothing else is needed. With a
    *per-rank* perturbation (m-sharpness) the first pass of a look step runs under
    ``no_sync()``, so g — and therefore g_v — is local to each rank while g_s is global. Pass
    ``sync_gv`` to average g_v across ranks right after it is formed (‖g_v‖ is then recomputed
    from the average), which keeps the replicas identical on the reuse steps. That costs one
    all-reduce of |θ| numbers per look step and saves the all-reduce of g the first pass skips.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0.
        k: interval between look steps, an integer ≥ 1.
        alpha: weight α ≥ 0 of the reused g_v (the paper uses 0.7).
        sync_gv: per-rank perturbation only: called with each (device, dtype) bucket's list of
            g_v tensors, it must replace them in place by their mean over the ranks (e.g.
            ``DistContext.average_`` in ``looksam.bench.distributed``). Every rank calls it on
            every look step, also when its own gradient overflowed, so collectives stay matched.
    """

    keeps_first_gradient = True

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        k: int = 5,
        alpha: float = 0.7,
        sync_gv: Callable[[list[Tensor]], None] | None = None,
    ) -> None:
        super().__init__(base, rho=rho, k=k, alpha=check_alpha(alpha))
        if sync_gv is not None and not callable(sync_gv):
            raise ValueError(
                "sync_gv must be None or a callable that averages a list of tensors in place "
                f"across ranks, got {type(sync_gv).__name__}"
            )
        #: Averages a freshly computed g_v across data-parallel ranks (per-rank perturbation).
        self.sync_gv = sync_gv
        self.gv_norm = 0.0
        self._gv_key: tuple[int, ...] | None = None
        self._gv_lists: list[list[Tensor | None]] = []

    def _finish_look_(self, in_flight: _LookInFlight) -> None:
        g_sq = in_flight.grad_norm**2
        pairs: list[tuple[list[Tensor], list[Tensor], list[Tensor]]] = []  # (params, g, g_s)
        for bucket in in_flight.buckets:
            grads_s = [p.grad for p in bucket.params]
            if any(gs is None for gs in grads_s):  # rare: no gradient at w + ε for some params
                keep = [i for i, gs in enumerate(grads_s) if gs is not None]
                for i in set(range(len(grads_s))) - set(keep):
                    self.state[bucket.params[i]].pop("g_v", None)
                pairs.append(
                    (
                        [bucket.params[i] for i in keep],
                        [bucket.grads[i] for i in keep],
                        [cast(Tensor, grads_s[i]) for i in keep],
                    )
                )
                g_sq = -1.0  # recompute over the kept parameters below
            else:
                pairs.append((bucket.params, bucket.grads, cast(list[Tensor], grads_s)))
        if g_sq < 0.0:
            g_sq = squared_norm([g for _, g, _ in pairs])
        g_norm, gs_norm = math.sqrt(g_sq), global_norm([gs for _, _, gs in pairs])
        if math.isfinite(g_norm) and math.isfinite(gs_norm):
            self._project_out_(pairs, g_sq, g_norm, gs_norm)
        elif self.sync_gv is None:
            return  # a pass overflowed (fp16): keep the previous g_v; GradScaler skips the step
        else:
            # Per-rank mode, and only this rank's g overflowed: every rank must still join the
            # all-reduce. NaN makes the average non-finite everywhere, so all ranks keep their
            # previous g_v together below.
            for _, e, _ in pairs:
                torch._foreach_mul_(e, math.nan)
        if self.sync_gv is not None:
            for _, gv, _ in pairs:  # one call per (device, dtype) bucket
                self.sync_gv(gv)
        gv_norm = global_norm([gv for _, gv, _ in pairs])
        if not math.isfinite(gv_norm):
            return
        eps = max(torch.finfo(gs[0].dtype).eps for _, _, gs in pairs if gs)
        if gv_norm <= _NOISE_FLOOR * eps * gs_norm:
            gv_norm = 0.0  # g_s ∥ g: what is left is rounding error, not a direction to reuse
        for params, gv, _ in pairs:
            for p, buffer in zip(params, gv, strict=True):
                self.state[p]["g_v"] = buffer
        self.gv_norm = gv_norm
        self._gv_key = None  # re-derive the aligned g_v lists on the next plain step

    @staticmethod
    def _project_out_(
        pairs: list[tuple[list[Tensor], list[Tensor], list[Tensor]]],
        g_sq: float,
        g_norm: float,
        gs_norm: float,
    ) -> None:
        """Overwrite g (the middle lists) with g_v = g_s − (⟨g, g_s⟩/‖g‖²)·g; norms finite."""
        if g_norm == 0.0 or gs_norm == 0.0:  # β = 0 by convention: g_v = g_s (possibly 0)
            for _, e, gs in pairs:
                torch._foreach_copy_(e, gs)
            return
        # ⟨g, g_s⟩ by polarisation of the *norm-matched* pair: with c = ‖g‖/‖g_s‖,
        # ‖g − c·g_s‖² = 2‖g‖²(1 − cos). Matching the norms keeps the identity exact when g and
        # g_s come at different scales (GradScaler), and foreach has norms but no dot. g is ours
        # (detached in first_step): e = g − c·g_s is formed in its storage, which then becomes
        # the g_v buffer.
        scale = g_norm / gs_norm
        for _, g, gs in pairs:
            torch._foreach_add_(g, gs, alpha=-scale)
        e_sq = squared_norm([e for _, e, _ in pairs])
        cos = 1.0 - e_sq / (2.0 * g_sq)
        beta = cos * gs_norm / g_norm  # ⟨g, g_s⟩ / ‖g‖²
        # g_v = g_s − β·g with g = e + c·g_s  ⇒  g_v = (1 − cos)·g_s − β·e   (β·c = cos)
        for _, e, gs in pairs:
            torch._foreach_mul_(e, -beta)
            torch._foreach_add_(e, gs, alpha=1.0 - cos)

    def _adjust_plain_gradient_(self) -> None:
        if self.alpha == 0.0 or self.gv_norm == 0.0:
            return
        buckets = self._buckets()
        if self._gv_key != self._bucket_key:
            # Align the stored g_v with the current buckets once per look interval.
            self._gv_lists = [[self.state[p].get("g_v") for p in b.params] for b in buckets]
            self._gv_key = self._bucket_key
        grad_norm = global_norm([b.grads for b in buckets])
        if not math.isfinite(grad_norm):
            return  # leave the overflow as it is for GradScaler to see
        coef = self.alpha * grad_norm / self.gv_norm
        for bucket, gv in zip(buckets, self._gv_lists, strict=True):
            if any(v is None for v in gv):  # rare: a parameter gained a gradient since the look
                kept = [(g, v) for g, v in zip(bucket.grads, gv, strict=True) if v is not None]
                torch._foreach_add_([g for g, _ in kept], [v for _, v in kept], alpha=coef)
            else:
                torch._foreach_add_(bucket.grads, cast(list[Tensor], gv), alpha=coef)

    def _extra_state(self) -> dict[str, Any]:
        return {"gv_norm": self.gv_norm}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.gv_norm = float(extra.get("gv_norm", 0.0))
        self._gv_key = None
