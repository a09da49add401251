r"""ESAM (Du et al., ICLR 2022): SAM's second pass on the sharpest examples, a random part of ε.

Du, Yan, Feng, Zhou, Zhen, Goh & Tan, "Efficient Sharpness-aware Minimization for Improved
Training of Neural Networks", ICLR 2022 (arXiv:2110.03141; code: dydjw9/Efficient_SAM).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._base import Bucket, Hook, SharpnessAwareOptimizer, call_or_undo
from looksam.optim._contract import (
    BatchClosure,
    check_fraction,
    check_per_example,
    largest,
    need_batch_closure,
)
from looksam.optim._foreach import Scalar, add_scaled, safe_ratio
from looksam.optim._random import DeviceGenerators, check_seed, draw_seed


class ESAM(SharpnessAwareOptimizer):
    r"""Efficient SAM: SWP perturbs a random share β of the weights, SDS runs g_s on the sharpest.

    With g = ∇L_B(w) from a first pass over the whole batch B, ℓ_i each example's loss, a mask
    m with independent Bernoulli(β) entries (one per weight) and global norms:

    .. math::
        ε = \frac{ρ}{β}\, m ⊙ \frac{g}{‖g‖}, \qquad
        B^+ = \text{the } ⌊γ|B| + ½⌉ \text{ examples with the largest } ℓ_i(w+ε) - ℓ_i(w),

    .. math::
        g_s = ∇L_{B^+}(w + ε), \qquad w ← \text{base\_step}(w, g_s)

    SWP (stochastic weight perturbation): dividing by β keeps E[ε] equal to SAM's ε. SDS
    (sharpness-sensitive data selection): ℓ_i(w + ε) comes from a forward-only pass over B, and
    the second forward-backward pass runs on B⁺ alone, as a batch of its own. β = γ = 1 is SAM
    (plus one forward pass). Defaults β = 0.6, γ = 0.5: the paper's CIFAR setting.

    Differences from the official code, where this follows the paper: (1) the mask is drawn per
    weight, as the paper writes it; the code instead freezes whole parameter tensors (each kept
    with probability β) for the *next* step's first backward, which saves their weight gradients
    but changes which g the base steps with on the following step. Per weight, SWP saves no
    computation here; it changes only ε. (2) B⁺ holds the ⌊γ|B| + ½⌉ sharpest examples (at least
    one); the code keeps those strictly above the γ|B|-th largest, one fewer. (3) No 1e-7 is added
    to ‖g‖: ‖g‖ = 0 gives ε = 0, as in this package's SAM.

    Cost per step, in forward-backward passes over the whole batch: 1 (g) + ⅓ (the forward-only
    pass at w + ε; ``FORWARD_ONLY_PASS``) + γ (g_s on B⁺), so 1.83 at the defaults; ESAM's paper
    reports +40 % over the base on its GPUs, and K-SAM's authors measured +30 %. On an
    accelerator no value is read back to the host: the choice of B⁺ is a ``topk`` on the device.

    Data-parallel: each rank picks B⁺ from its own share of the batch (every rank's B⁺ has the
    same size, so the second pass's all-reduce averages equal-sized subsets), as the official
    code does. Micro-batches: the losses of every micro-batch are compared, so B⁺ is chosen
    across the whole (per-rank) batch.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0.
        beta: SWP's share of perturbed weights β ∈ (0, 1].
        gamma: SDS's share of the batch in the second pass γ ∈ (0, 1].
        seed: seeds the optimizer's own generator (None: drawn from torch's global RNG); its
            state travels in ``state_dict``, so a resumed run draws the same masks.
        scalars: ``"auto"``, ``"host"`` or ``"device"`` (see ``SharpnessAwareOptimizer``).
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        beta: float = 0.6,
        gamma: float = 0.5,
        seed: int | None = None,
        scalars: str = "auto",
    ) -> None:
        super().__init__(base, rho=rho, k=1, scalars=scalars)
        self.beta = check_fraction("beta", beta, "the share of weights SWP perturbs")
        self.gamma = check_fraction("gamma", gamma, "the share of the batch in the second pass")
        #: The mask's generators, one per device, made on first use.
        self._random = DeviceGenerators(draw_seed(check_seed(seed)))
        #: Per bucket (by its parameters' identity): a flat buffer and its views, one per weight.
        self._masks: dict[tuple[int, ...], tuple[Tensor, list[Tensor]]] = {}

    def step(  # type: ignore[override]
        self, closure: Any = None, base_step: Hook = None, unscale: Hook = None
    ) -> Tensor:
        """One ESAM step; returns the batch's mean loss at w (from the first pass)."""
        batch_closure = need_batch_closure(type(self).__name__, closure)
        with torch.enable_grad():
            before = batch_closure(None, backward=True)
        if unscale is not None:
            unscale()
        self.first_step()
        call_or_undo(lambda: self._sharpest_pass(batch_closure, before), self.abandon_look_step)
        self.second_step(base_step)
        return before.mean()

    def _sharpest_pass(self, closure: BatchClosure, before: Tensor) -> None:
        """At w + ε: rank the batch by ℓ_i(w + ε) − ℓ_i(w), then g_s on the sharpest share γ."""
        after = closure(None, backward=False)
        check_per_example(after, before)
        closure(largest(after - before, self.gamma), backward=True)

    def _perturbed_weights(self, buckets: list[Bucket], grad_norm: Scalar) -> list[list[Tensor]]:
        """w + (ρ/β)·m ⊙ g/‖g‖ per bucket, out of place; m drawn afresh every step."""
        scale = safe_ratio(self.rho, grad_norm)
        if self.beta == 1.0:
            return [add_scaled(b.params, b.grads, scale) for b in buckets]
        scale = scale / self.beta
        perturbed = []
        for bucket in buckets:
            kept = list(torch._foreach_mul(bucket.grads, self._mask(bucket.params)))
            perturbed.append(add_scaled(bucket.params, kept, scale))
        return perturbed

    def _mask(self, params: list[Tensor]) -> list[Tensor]:
        """Fresh Bernoulli(β) entries (1.0 or 0.0) for every weight of ``params``, as views shaped
        like them of one flat buffer: one draw and one comparison, however many tensors."""
        key = tuple(map(id, params))
        held = self._masks.get(key)
        if held is None:
            first = params[0]
            flat = torch.empty(
                sum(p.numel() for p in params), dtype=first.dtype, device=first.device
            )
            views = [
                v.view_as(p)
                for v, p in zip(flat.split([p.numel() for p in params]), params, strict=True)
            ]
            held = self._masks[key] = (flat, views)
        flat, views = held
        flat.uniform_(generator=self._random.on(flat.device))
        flat.lt_(self.beta)  # uniform [0, 1) < β with probability β
        return views

    @property
    def seed(self) -> int:
        """The mask generators' seed (the first device's; the n-th device's is seed + n)."""
        return self._random.seed

    def _extra_state(self) -> dict[str, Any]:
        return {"seed": self.seed, "generator_states": self._random.states()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._random.load(int(extra.get("seed", self.seed)), extra.get("generator_states", {}))

    def __repr__(self) -> str:
        return (
            f"ESAM(base={type(self.base).__name__}, rho={self.rho}, beta={self.beta}, "
            f"gamma={self.gamma}, steps_done={self.steps_done})"
        )
