"""The one-pass engine MSAM and RWP share: one forward-backward pass per step, at a perturbed
point the subclass builds, then the base optimizer's step from w restored exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from looksam.optim._base import Closure, Hook, SharpnessAwareOptimizer, call_or_undo


@dataclass
class _Perturbation:
    """What ``perturb()`` leaves for ``step()``: the parameters moved and their storage of w."""

    params: list[list[Tensor]]  # per (device, dtype) bucket; empty when nothing was moved
    originals: list[list[Tensor]]  # the untouched storage of w, pointed back to exactly


class OnePassOptimizer(SharpnessAwareOptimizer):
    """A wrapper whose one pass per step is taken at w + ε, ε not built from this step's g.

    Subclasses implement :meth:`_perturbed_buckets`: per (device, dtype) bucket, the parameters
    and their perturbed weights (built out of place), or nothing to stay at w. The weights are
    re-pointed for the pass and back at w's own storage after it (no copy, no subtraction), so
    after ``step()`` the parameters hold w exactly and no failure leaves them perturbed.
    """

    def __init__(self, base: Any, **engine: Any) -> None:
        super().__init__(base, **engine)
        self._perturbation: _Perturbation | None = None

    @property
    def is_look_step(self) -> bool:
        """Always False: there is never a second forward-backward pass."""
        return False

    @property
    def is_perturbed(self) -> bool:
        """True between ``perturb()`` and ``step()``/``restore()``."""
        return self._perturbation is not None

    def step(  # type: ignore[override]
        self, closure: Closure | None = None, base_step: Hook = None, unscale: Hook = None
    ) -> Any:
        """Run one step and return the closure's loss (taken at the perturbed weights).

        Args:
            closure: zeroes the gradients, runs forward and backward and returns the loss; called
                exactly once. If it raises, the weights are restored to w before re-raising.
                Without a closure, ``perturb()`` must have been called before the backward pass
                (the two-phase API); ``step()`` then restores w and applies the update.
            base_step: what applies the update, ``self.base.step`` by default; e.g.
                ``lambda: scaler.step(opt.base)`` for GradScaler.
            unscale: accepted for the engine's signature and never called: the perturbation is
                not built from this step's (scaled) gradient.
        """
        del unscale
        if closure is None:
            self.second_step(base_step)
            return None
        self.perturb()
        loss = call_or_undo(closure, self.restore)  # never leaves the model perturbed
        self.second_step(base_step)
        return loss

    @torch.no_grad()
    def perturb(self) -> None:
        """Move the weights to the perturbed point; call before the forward-backward pass.

        Called again before ``step()``, it first undoes the previous perturbation. When there is
        nothing to move the weights stay at w, but ``step()`` still knows the pass belongs to
        this step.
        """
        self.restore()
        moved: list[list[Tensor]] = []
        originals: list[list[Tensor]] = []
        for params, perturbed in self._perturbed_buckets():
            originals.append(self._storage_aliases(params))
            for p, w in zip(params, perturbed, strict=True):  # per parameter, unavoidably
                p.data = w
            moved.append(params)
        self._perturbation = _Perturbation(moved, originals)

    def _perturbed_buckets(self) -> list[tuple[list[Tensor], list[Tensor]]]:
        """(parameters, their perturbed weights) per bucket; empty: stay at w."""
        raise NotImplementedError

    @torch.no_grad()
    def restore(self) -> None:
        """Undo ``perturb()`` (w restored exactly) without stepping; a no-op when not perturbed."""
        perturbation = self._perturbation
        if perturbation is None:
            return
        self._perturbation = None
        for params, originals in zip(perturbation.params, perturbation.originals, strict=True):
            for p, w in zip(params, originals, strict=True):
                p.data = w

    def abandon_look_step(self) -> None:
        """The engine's name for undoing a perturbation: ``restore()``."""
        self.restore()

    def first_step(self) -> None:
        """Not part of a one-pass method, which never takes a second pass."""
        name = type(self).__name__
        raise RuntimeError(
            f"{name} takes one forward-backward pass per step and has no first_step(): use "
            "step(closure), or perturb() before the backward pass and step() after it"
        )

    @torch.no_grad()
    def second_step(self, base_step: Hook = None) -> None:
        """Restore w and let the base optimizer step with the gradient of the perturbed pass.

        ``p.grad`` must hold the gradient of the pass run after ``perturb()``.
        """
        if self._perturbation is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a closure, or perturb() must be called "
                "before the forward-backward pass: the gradient has to be taken at the perturbed "
                "weights. Use step(closure), or perturb() → forward → backward → step()."
            )
        self.restore()
        if base_step is None:
            self.base.step()
        else:
            base_step()
        self.steps_done += 1

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from ``state_dict()`` (a pending perturbation is undone first)."""
        self.restore()
        super().load_state_dict(state_dict)
