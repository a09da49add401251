"""MSAM (Becker, Altrock & Risse, 2024): a sharpness-aware step for the cost of one pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._base import check_rho
from looksam.optim._foreach import (
    add_scaled,
    global_norm,
    group_by_device_and_dtype,
    safe_ratio,
)
from looksam.optim._one_pass import OnePassOptimizer

_SUPPORTED = "torch.optim.SGD (momentum > 0), torch.optim.Adam or torch.optim.AdamW"


def _momentum_key(base: Optimizer) -> str:
    """The base's state entry that holds v; raise if the base has none or is not supported."""
    if isinstance(base, torch.optim.SGD):
        if all(float(group.get("momentum", 0.0)) == 0.0 for group in base.param_groups):
            raise ValueError(
                "MSAM perturbs along the base optimizer's momentum, but this SGD has "
                "momentum=0 in every param group: build it with momentum > 0, e.g. "
                "torch.optim.SGD(params, lr=0.1, momentum=0.9)"
            )
        return "momentum_buffer"
    if isinstance(base, (torch.optim.Adam, torch.optim.AdamW)):
        if all(float(group["betas"][0]) == 0.0 for group in base.param_groups):
            raise ValueError(
                f"MSAM perturbs along the base optimizer's first moment, but this "
                f"{type(base).__name__} has betas[0]=0 in every param group (no momentum): "
                "use betas[0] > 0, e.g. betas=(0.9, 0.999)"
            )
        return "exp_avg"
    raise ValueError(
        f"MSAM needs a base optimizer with a momentum it can read: {_SUPPORTED}; "
        f"got {type(base).__name__}"
    )


class MSAM(OnePassOptimizer):
    r"""Momentum-SAM: take the gradient a step of size ρ down the momentum, one pass per step.

    Becker, Altrock & Risse, "Momentum-SAM: Sharpness Aware Minimization without Computational
    Overhead", arXiv:2401.12033 (2024). With v_t the base optimizer's momentum
    *before* step t and a global norm over every parameter that has one:

    .. math::
        \tilde w_t = w_t - ρ\,\frac{v_t}{‖v_t‖}, \qquad
        g_t = ∇L(\tilde w_t), \qquad
        w_{t+1} = \text{base\_step}(w_t, g_t)

    For ``torch.optim.SGD`` v is its ``momentum_buffer`` (v ← μ·v + (1 − dampening)·g, update
    w ← w − lr·v): the perturbation points along −v, the direction the optimizer is moving, i.e.
    *downhill* — the opposite of SAM's ascent step ρ·g/‖g‖. That is the paper's and the official
    code's convention (they write the SGD step as w − η·v and perturb to w − ρ·v/‖v‖), not a
    sign slip: motivated by Nesterov's look-ahead, the gradient is taken further along the path
    the optimizer is already taking. For ``Adam``/``AdamW`` v is the first moment
    ``exp_avg`` (as in the official AdamW variant), with the same sign. ``nesterov`` and
    ``dampening`` change how the base uses v but not what v is; a positive rescaling of v does not
    change v/‖v‖. Parameters with no momentum yet (not stepped so far, or in a group with
    momentum 0) are not moved.

    There is no perturbation while v does not exist (the first step) or ‖v‖ = 0, or when ‖v‖ is
    not finite; no epsilon is added to the norm (the official code uses 1/(‖v‖ + 1e-12)). ρ is read
    from ``self.rho`` at every step, so a warm-up can assign it between steps. ρ = 0 is exactly
    the base optimizer.

    Differences from the official code, where it fuses the perturbation into the base step and
    keeps the model at w̃ between steps: here w̃ exists only during the forward-backward pass (it
    is built out of place and ``param.data`` is pointed at it, then back at w's own storage), so
    after ``step()`` returns the parameters hold w exactly — evaluation and checkpoints see w and
    no ``move_back`` call is ever needed. Consequently a base with coupled L2 weight decay (SGD,
    Adam) adds wd·w rather than the official SGD's wd·w̃ (a difference of wd·ρ·v/‖v‖, the same
    convention as this package's SAM), and AdamW's decoupled decay follows torch's order.

    Defaults and range. The official repository runs MSAM with ρ = 3 in every experiment of its
    README: CIFAR-100 WRN-16-4 and ResNet-50 with SGD (lr 0.5 / 0.1, momentum 0.9, batch 256),
    ImageNet ResNet-50 with SGD and ImageNet ViT-S/32 with AdamW (lr 1e-3, wd 0.1, batch 1024);
    its classes default to ρ = 0.3 (SGD) and ρ = 1 (AdamW), while its SAM runs use ρ = 0.2. So
    MSAM's useful ρ is an order of magnitude above SAM's and its range far wider (≈ 0.3–3
    against SAM's ≈ 0.05–0.2). ρ is an absolute distance in weight space: with small models
    (small ‖w‖) search lower — on ``digits-noisy`` (MLP 64-256-10, SGD lr 0.05, ‖w‖ ≈ 18)
    ρ ≈ 0.5–2 helped, ρ = 3 hurt and ρ = 10 diverged.

    BatchNorm: the single pass *is* the training pass, so ``in_second_pass`` is always False and
    running statistics are gathered at w̃ (as in the official code, which re-estimates them at w
    with one forward-only epoch after training for its BatchNorm models).

    Cost: one forward-backward pass per step (``is_look_step`` is always False), one fused
    add over |θ| to form w̃ and one extra |θ| of memory while it exists, and on an accelerator no
    host read: ‖v‖ and the factor −ρ/‖v‖ (0 while ‖v‖ is 0 or not finite) stay on the device
    (on the CPU they are Python floats: the ``scalars`` switch).
    Data-parallel: v is built from all-reduced gradients, so every rank forms the same w̃ with no
    communication; there is no per-rank gradient to perturb with, so no per-rank variant.
    Mixed precision: v is unscaled (GradScaler unscales before the base step), so ``unscale`` is
    never needed; ``base_step=lambda: scaler.step(opt.base)`` unscales and skips on overflow.

    Args:
        base: ``torch.optim.SGD`` with momentum > 0, ``torch.optim.Adam`` or ``AdamW`` (with
            betas[0] > 0), built on the same params.
        rho: perturbation length ρ ≥ 0 along −v/‖v‖.
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).

    Example (the closure is :class:`~looksam.optim.sam.SAM`'s; MSAM calls it once)::

        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        opt = MSAM(base, rho=1.0)
        loss = opt.step(closure)

        # or, two-phase (frameworks that own the backward pass):
        opt.perturb()
        loss_fn(model(x), y).backward()
        opt.step()
    """

    def __init__(self, base: Optimizer, *, rho: float = 3.0, scalars: str = "auto") -> None:
        super().__init__(base, rho=rho, k=1, scalars=scalars)
        self._momentum_name = _momentum_key(base)
        self._mom_key: tuple[int, ...] = ()
        self._mom_buckets: list[tuple[list[Tensor], list[Tensor]]] = []
        self._mom_devices: tuple[torch.device, ...] = ()

    def _perturbed_buckets(self) -> list[tuple[list[Tensor], list[Tensor]]]:
        """w̃ = w − ρ·v/‖v‖ per bucket; nothing to move with no momentum yet, ‖v‖ = 0 or not
        finite (w̃ = w, with no host read on the device), or ρ = 0."""
        rho = check_rho(self.rho)
        buckets = self._momentum_buckets() if rho > 0.0 else []
        if not buckets:
            return []
        host = self._resolve_host(self._mom_devices)
        scale = -safe_ratio(rho, global_norm([moms for _, moms in buckets], host=host))
        return [(params, add_scaled(params, moms, scale)) for params, moms in buckets]

    # ------------------------------------------------------------------ helpers
    def _momentum_buckets(self) -> list[tuple[list[Tensor], list[Tensor]]]:
        """(params, momenta) per (device, dtype) for every parameter that has a momentum.

        The grouping is cached on the identity of the momentum tensors, which the base updates in
        place: it changes only when a parameter gains a momentum or a checkpoint is loaded.
        """
        state = self.base.state
        name = self._momentum_name
        params: list[Tensor] = []
        moms: list[Tensor] = []
        for group in self.param_groups:
            for p in group["params"]:
                entry = state.get(p)
                buf = entry.get(name) if entry else None
                if isinstance(buf, Tensor):
                    params.append(p)
                    moms.append(buf)
        key = tuple(map(id, moms))
        if key != self._mom_key:
            grouped = group_by_device_and_dtype(params, moms) if params else []
            self._mom_buckets = [(lists[0], lists[1]) for lists in grouped]
            self._mom_devices = tuple(params[0].device for params, _ in self._mom_buckets)
            self._mom_key = key
            self._aliases.clear()  # they belong to the old lists
        return self._mom_buckets

    # ------------------------------------------------------------------ checkpointing
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from ``state_dict()`` (a pending perturbation is undone first)."""
        super().load_state_dict(state_dict)
        self._mom_key = ()  # the base's momentum tensors were replaced

    def __repr__(self) -> str:
        return (
            f"MSAM(base={type(self.base).__name__}, rho={self.rho}, steps_done={self.steps_done})"
        )
