"""Late-phase SAM (Zhou et al., ICLR 2025): the base optimizer first, SAM for the last part."""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import Any

import torch
from torch.optim import Optimizer

from looksam.optim._base import SharpnessAwareOptimizer, check_total_steps


def check_start_fraction(start_fraction: float) -> float:
    """Validate the share of the run trained by the base optimizer alone: a real in [0, 1]."""
    allowed = "a finite number in [0, 1] (0: SAM throughout, 1: never SAM)"
    if isinstance(start_fraction, bool) or not isinstance(start_fraction, numbers.Real):
        raise ValueError(f"start_fraction must be {allowed}, got {start_fraction!r}")
    value = float(start_fraction)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"start_fraction must be {allowed}, got {start_fraction!r}")
    return value


def switch_step_for(start_fraction: float, total_steps: int) -> int:
    """The first SAM step, ⌈start_fraction · total_steps⌉, with the decimal ``start_fraction``.

    The product is taken exactly on the shortest decimal that prints as ``start_fraction`` (so
    0.07 · 100 is 7, not the 8 that binary 0.07000000000000000666… would round up to).
    """
    exact = Fraction(repr(float(check_start_fraction(start_fraction))))
    return math.ceil(exact * check_total_steps(total_steps))


class LatePhaseSAM(SharpnessAwareOptimizer):
    r"""The base optimizer until a fixed step, SAM from then on.

    Zhou et al., "Sharpness-Aware Minimization Efficiently Selects Flatter Minima Late in
    Training", ICLR 2025: switching from SGD to SAM for the last few epochs gives nearly the
    generalisation and sharpness of SAM throughout (their Fig. 1a: WideResNet-16-8 on CIFAR-10,
    SGD for epochs 0–174, SAM for 175–199 of 200, i.e. ``start_fraction = 0.875``, the default).

    Step t (counted from 0 in ``steps_done``) is a SAM step iff

    .. math::
        t \ge t_s = \lceil \text{start\_fraction} \cdot \text{total\_steps} \rceil

    (``switch_step``), computed exactly on the decimal ``start_fraction`` prints as. SAM steps
    compute g_s = ∇L(w + ρ·g/‖g‖) (two passes); the others are plain base steps with g (one
    pass), exactly the base optimizer. ``start_fraction=0`` is SAM throughout, ``1`` never uses
    SAM within ``total_steps``; steps past ``total_steps`` stay SAM steps. When start_fraction ×
    the number of epochs is an integer the switch falls on an epoch boundary, as in the paper.
    The schedule is fixed, so ``is_look_step`` is known before the step's first pass.

    One base optimizer serves both phases, so its state (momentum, Adam moments) carries over
    the switch. (The authors' script keeps a second SGD instance, with its own momentum, for the
    SAM phase.)

    Cost: 1 + (total_steps − t_s)/total_steps ≈ 2 − start_fraction forward-backward passes per
    step over the run. The checkpoint (``state_dict``) carries ``start_fraction`` and
    ``total_steps`` with ``steps_done``: loading restores the checkpoint's schedule, so a resumed
    run switches where the original would have.

    Args:
        base: the optimizer that applies the update.
        rho: SAM's neighbourhood radius ρ ≥ 0 in the late phase.
        start_fraction: share of ``total_steps`` trained by the base optimizer alone, in [0, 1].
        total_steps: the run's length in optimizer steps, an integer ≥ 1.
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        start_fraction: float = 0.875,
        total_steps: int,
        scalars: str = "auto",
    ) -> None:
        self.start_fraction = check_start_fraction(start_fraction)
        self.total_steps = check_total_steps(total_steps)
        super().__init__(base, rho=rho, k=1, scalars=scalars)
        self.switch_step = switch_step_for(self.start_fraction, self.total_steps)

    @property
    def is_look_step(self) -> bool:
        """Whether the next step is a SAM step (``steps_done >= switch_step``)."""
        return self.steps_done >= self.switch_step

    @torch.no_grad()
    def first_step(self) -> None:
        """Move to w + ε for a SAM step's second pass (see the engine); only from the switch on."""
        if not self._takes_second_pass():
            raise RuntimeError(
                f"step {self.steps_done} is not a look step: late-phase SAM runs the base "
                f"optimizer alone until step {self.switch_step}; check is_look_step before "
                "calling first_step()"
            )
        super().first_step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint, its schedule included; a bad schedule fails before any change."""
        extra = state_dict.get("sam_family", {})
        if "start_fraction" in extra:
            check_start_fraction(extra["start_fraction"])
        if "total_steps" in extra:
            check_total_steps(extra["total_steps"])
        super().load_state_dict(state_dict)

    def _extra_state(self) -> dict[str, Any]:
        return {"start_fraction": self.start_fraction, "total_steps": self.total_steps}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "start_fraction" in extra:
            self.start_fraction = check_start_fraction(extra["start_fraction"])
        if "total_steps" in extra:
            self.total_steps = check_total_steps(extra["total_steps"])
        self.switch_step = switch_step_for(self.start_fraction, self.total_steps)

    def __repr__(self) -> str:
        return (
            f"LatePhaseSAM(base={type(self.base).__name__}, rho={self.rho}, "
            f"start_fraction={self.start_fraction}, total_steps={self.total_steps}, "
            f"switch_step={self.switch_step}, steps_done={self.steps_done})"
        )
