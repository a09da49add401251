"""GSAM (Zhuang et al., ICLR 2022): SAM's descent plus an ascent that shrinks the surrogate gap."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._base import Closure, Hook, SharpnessAwareOptimizer, _check_real, _LookInFlight
from looksam.optim._foreach import Scalar, add_scaled_, choose, global_norm, safe_ratio, usable


def check_gsam_alpha(alpha: float) -> float:
    """Validate GSAM's α (weight of the ascent along g_⊥): a finite real number ≥ 0."""
    return _check_real("alpha", alpha, "a finite number >= 0 (0 reduces GSAM to SAM)")


class GSAM(SharpnessAwareOptimizer):
    r"""Surrogate Gap Guided SAM: descend on g_s, ascend along the part of g orthogonal to it.

    Zhuang et al., "Surrogate Gap Minimization Improves Sharpness-Aware Training", ICLR 2022,
    Algorithm 1. Every step, with global norms and dot products over every parameter that has
    both gradients:

    .. math::
        g = ∇L(w), \qquad g_s = ∇L(w + ρ\,g/‖g‖), \qquad
        g_⊥ = g - \frac{⟨g, g_s⟩}{‖g_s‖^2}\, g_s, \qquad
        w ← \text{base\_step}(w,\; g_s - α\, g_⊥)

    g_s descends the perturbed loss (SAM); −α·g_⊥ ascends L(w) orthogonally to g_s, which lowers
    the surrogate gap (perturbed loss − loss, ≈ ρ²λ_max/2 near a minimum) without changing the
    perturbed loss to first order. ``alpha=0`` is SAM exactly (the same trajectory, bit for bit).

    Conventions: ‖g‖ = 0 gives no perturbation and g_⊥ = 0 (the step is SAM's); ‖g_s‖ = 0 gives
    ⟨g, g_s⟩/‖g_s‖² = 0, i.e. g_⊥ = g (the projection onto the span of the zero vector is 0), so
    the base steps with −α·g. If g or g_s is not finite (an fp16 overflow) the gradient is left
    at g_s exactly as SAM leaves it, for GradScaler to skip. Parameters with g but no g_s (unused
    in the perturbed pass) keep ``grad=None`` and are left out of the norms and the dot product.

    The paper schedules ρ_t proportionally to the learning rate (ρ_t from ρ_max down to ρ_min).
    Here ρ is a constant the caller owns: assign ``opt.rho`` between steps for a schedule (the
    runner does this for its ρ warm-up). Reference settings: ViT-B/32 on ImageNet-1k in the
    authors' ``big_vision`` config, AdamW-style base with linear lr decay: ρ_max = 0.6,
    ρ_min = 0.1, α = 0.6; the authors' PyTorch CIFAR-10 example (WRN-16-8, SGD): α = 0.2 (with an
    adaptive, ASAM-scaled ρ = 2.0). The defaults here are SAM's CIFAR-scale ρ = 0.05 and α = 0.2.

    Cost: two forward-backward passes per step (the closure is called twice) and, beyond SAM,
    g kept across the second pass (|θ| memory), two norms and three in-place elementwise foreach
    passes, with no host read on an accelerator: every scalar below is a 0-dim tensor on the
    device there, and a Python float on the CPU (the ``scalars`` switch). With
    c = α·S (S = 1 unless g_s comes at a GradScaler scale S relative to g, see below):

    * g ← g − g_s/c, in g's own storage (g is no longer needed as such);
    * ‖g_s‖² and ‖g − g_s/c‖²; ⟨g, g_s⟩ follows by polarisation, and with it
      k = α·⟨g, g_s⟩/‖g_s‖² (in g's units) = (c²(‖g‖² − ‖g − g_s/c‖²) + ‖g_s‖²) / (2‖g_s‖²);
    * p.grad ← k·g_s − c·(g − g_s/c) = (1 + k)·g_s − c·g, i.e. S·(g_s − α·g_⊥), in place.

    torch's foreach family has norms but no dot product. A direct per-tensor dot product would
    read g and g_s once without a write, but costs one kernel launch per parameter; a foreach
    product followed by per-tensor sums needs a |θ| temporary and the same launches. The
    polarised vector here is formed at the scale of the update, so the rounding error of k is
    about ε·(1 + (α‖g‖/‖g_s‖)²)/2 (no 1/α blow-up for small α). The guards need no branch:
    ‖g‖ = 0 (or an overflowed g) sets the g_s coefficient to 1 and drops the α term, and a
    non-finite g or g_s leaves p.grad non-finite, which GradScaler skips as it skips SAM's.

    Mixed precision (GradScaler). The combination is not scale-free: if g was unscaled before the
    perturbation (the fp16 recipe does this) while g_s comes from a scaled backward pass, the
    gradient the base receives must be S·(g_s − α·g_⊥) with S the loss scale. Through
    ``step(closure, base_step=lambda: scaler.step(opt.base), unscale=lambda:
    scaler.unscale_(opt))`` GSAM measures S itself as ‖g‖ before ``unscale()`` over ‖g‖ after it
    (exact for GradScaler's power-of-two scales; one more norm per step, on the device). With the
    two-phase API pass it explicitly: ``scaler.unscale_(opt); opt.first_step(grad_scale=
    scaler.get_scale())``; omitting it there is silently wrong by a factor S on the α term.

    Data-parallel training: with the default *global* perturbation both passes are all-reduced
    and every rank computes the same update. A *per-rank* perturbation (first pass under
    ``no_sync()``) leaves g, and therefore the update, different on every rank: not supported.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0 (constant; the caller may reassign ``opt.rho``).
        alpha: weight α ≥ 0 of the ascent along g_⊥ (0 is SAM).
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).
    """

    keeps_first_gradient = True

    def __init__(
        self, base: Optimizer, *, rho: float = 0.05, alpha: float = 0.2, scalars: str = "auto"
    ) -> None:
        super().__init__(base, rho=rho, k=1, alpha=check_gsam_alpha(alpha), scalars=scalars)
        #: Loss scale of g_s relative to g for the step in flight (1 without GradScaler).
        self._grad_scale: Scalar = 1.0
        self._norm_before_unscale: Scalar | None = None

    # ------------------------------------------------------------------ steps
    def step(  # type: ignore[override]
        self, closure: Closure | None = None, base_step: Hook = None, unscale: Hook = None
    ) -> Any:
        """Run one GSAM step (two closure calls); see ``SharpnessAwareOptimizer.step``.

        When ``unscale`` is given, the loss scale it removes from g is measured (‖g‖ before and
        after) so that g and g_s are combined at the same scale.
        """
        self._norm_before_unscale = None
        if unscale is None:
            return super().step(closure, base_step)
        user_unscale = unscale

        def measured_unscale() -> None:
            buckets = self._buckets()
            before = global_norm([b.grads for b in buckets], host=self._host)
            user_unscale()
            self._norm_before_unscale = before

        return super().step(closure, base_step, measured_unscale)

    @torch.no_grad()
    def first_step(self, grad_scale: float | None = None) -> None:
        """Move to w + ε and clear the gradients (see the engine), remembering g's scale.

        Args:
            grad_scale: how much larger the second backward pass's gradient is than g as it is
                now: GradScaler's ``scaler.get_scale()`` after ``scaler.unscale_(opt)``, 1 when
                g and g_s come at the same scale (no scaler, or g left scaled). ``None``: what
                ``step(..., unscale=...)`` measured, else 1.
        """
        if grad_scale is not None:
            scale = _check_real("grad_scale", grad_scale, "a finite number > 0")
            if scale == 0.0:
                raise ValueError(f"grad_scale must be a finite number > 0, got {grad_scale!r}")
        else:
            scale = 1.0
        before, self._norm_before_unscale = self._norm_before_unscale, None
        super().first_step()
        after = cast(_LookInFlight, self._in_flight).grad_norm
        if grad_scale is None and before is not None:
            # S = ‖g‖ before unscale() / after it, in the step's scalar form; where g overflowed or
            # is 0, S is moot (the step is skipped, or g_⊥ = 0) and 1 is used.
            ratio = safe_ratio(before, after)
            self._grad_scale = choose(usable(ratio), ratio, 1.0)
        else:
            self._grad_scale = (
                torch.full_like(after, scale) if isinstance(after, Tensor) else scale
            )

    # ------------------------------------------------------------------ the GSAM gradient
    def _finish_look_(self, in_flight: _LookInFlight) -> None:
        if self.alpha == 0.0:
            return  # SAM's gradient, bit for bit
        g_norm = in_flight.grad_norm
        host = not isinstance(g_norm, Tensor)  # the step's scalar form (see _foreach)
        pairs: list[tuple[list[Tensor], list[Tensor]]] = []  # (g, g_s) per bucket
        partial = False
        for bucket in in_flight.buckets:
            grads_s = [p.grad for p in bucket.params]
            if any(gs is None for gs in grads_s):  # rare: a parameter unused at w + ε
                keep = [i for i, gs in enumerate(grads_s) if gs is not None]
                pairs.append(
                    ([bucket.grads[i] for i in keep], [cast(Tensor, grads_s[i]) for i in keep])
                )
                partial = True
            else:
                pairs.append((bucket.grads, cast(list[Tensor], grads_s)))
        pairs = [(g, gs) for g, gs in pairs if gs]
        if not pairs:
            return
        if partial:
            g_norm = global_norm([g for g, _ in pairs], host=host)
        grad_scale = self._grad_scale
        if isinstance(g_norm, Tensor):
            c: Scalar = self.alpha * torch.as_tensor(grad_scale).to(g_norm)
        else:
            c = self.alpha * float(grad_scale)
        # ‖g‖ = 0 (or g overflowed): no α term, the gradient stays g_s (SAM's; GradScaler skips an
        # overflow). Else d = g − g_s/c in g's storage and the coefficient of g_s is k below.
        g_ok = usable(g_norm)
        if host and not g_ok:
            return
        inverse = choose(g_ok, 1.0 / c, 0.0)
        gs_norm = global_norm([gs for _, gs in pairs], host=host)
        for g, gs in pairs:
            add_scaled_(g, gs, -inverse)
        d_norm = global_norm([g for g, _ in pairs], host=host)
        gs_sq = gs_norm * gs_norm
        # k = α⟨g, g_s⟩/‖g_s‖² in g_s's units; ‖g_s‖ = 0 → k = 0, the update is then −c·g.
        k = safe_ratio(c * c * (g_norm * g_norm - d_norm * d_norm) + gs_sq, 2.0 * gs_sq)
        coefficient = choose(g_ok, k, 1.0)
        for g, gs in pairs:  # p.grad ← k·g_s − c·(g − g_s/c) = (1 + k)·g_s − c·g
            torch._foreach_mul_(gs, coefficient)
            add_scaled_(gs, g, -c)

    def __repr__(self) -> str:
        return (
            f"GSAM(base={type(self.base).__name__}, rho={self.rho}, alpha={self.alpha}, "
            f"steps_done={self.steps_done})"
        )
