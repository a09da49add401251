"""The training-method contract: what a method may ask of the loop beyond ``step(closure)``.

Most entries are optimizer wrappers: the loop hands them a plain closure (zero the gradients, run
forward and backward on the batch, return the mean loss) and they decide which gradient the base
steps with. Some of the strongest cheap SAM variants need more, and say so with the registry
flags of their :class:`~looksam.optim.OptimizerInfo`:

* ``needs_per_sample_loss`` (ESAM, K-SAM): the closure is a :class:`BatchClosure`. It returns each
  example's loss, and it can run a pass on a *subset* of the batch, as a smaller batch of its own
  (a quarter of the batch does a quarter of the arithmetic; a small, launch-bound step saves
  less), or forward only. The method picks the subset itself, across the whole batch
  (micro-batches included).
* ``adds_loss_term`` (SAF, MESA): the optimizer is a :class:`LossTermMethod`. The loop adds its
  :meth:`~LossTermMethod.loss_term` to the workload's loss on every pass, after calling
  :meth:`~LossTermMethod.attach` once with the model and the size of the training set.
* ``needs_sample_index`` (SAF): ``loss_term`` also receives each example's position in the
  training set, which only workloads that provide sample ids can give.

The runner (``looksam.train.runner``) implements the loop's side once, for every workload kind,
for micro-batches and for data-parallel training; a plugin's entry uses the same flags.

Costs stay in one unit, forward-backward passes over the whole batch: a pass over a subset counts
``len(subset) / len(batch)``, a forward-only pass :data:`FORWARD_ONLY_PASS` of that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from looksam.optim._base import Hook

#: What a forward pass without backward costs, as a share of a forward-backward pass: a backward
#: costs about two forwards (it computes gradients for both the activations and the weights).
FORWARD_ONLY_PASS = 1.0 / 3.0


class BatchClosure(Protocol):
    """The closure a ``needs_per_sample_loss`` method calls, once or more per step.

    ``closure(subset=None, backward=True)`` runs the examples ``subset`` (int64 positions in this
    step's batch, on its device; ``None``: the whole batch) through the model and returns their
    losses, detached, one per example in ``subset``'s order. With ``backward=True`` it first
    clears the gradients and back-propagates the *mean* loss over those examples, as a batch of
    their own; with ``backward=False`` it runs forward only, under ``torch.no_grad()``, and leaves
    the gradients alone. The mean of the returned losses is the workload's (batch-mean) loss.
    """

    def __call__(self, subset: Tensor | None = None, *, backward: bool = True) -> Tensor: ...


def subset_size(fraction: float, size: int) -> int:
    """⌊fraction·size + ½⌋, at least one and at most ``size``, read from the fraction as written:
    0.58 of 25 is 14.5, so 15, although the double nearest 0.58 is a hair below it."""
    half_up = Fraction(repr(float(fraction))) * size + Fraction(1, 2)
    return min(size, max(1, math.floor(half_up)))


def need_batch_closure(name: str, closure: Any) -> BatchClosure:
    """The step's closure, or a RuntimeError saying what this method needs instead."""
    if closure is None:
        raise RuntimeError(
            f"{name}.step() needs a closure that takes (subset=None, backward=True) and returns "
            "per-example losses (looksam.optim.BatchClosure): it picks the examples its passes "
            "run on, so it has no two-phase form"
        )
    return closure  # type: ignore[no-any-return]


def largest(scores: Tensor, fraction: float) -> Tensor:
    """Positions of the :func:`subset_size` largest ``scores``, on their device.

    No value is read back to the host: the count comes from the length, the choice from ``topk``.
    """
    return torch.topk(scores, subset_size(fraction, len(scores)), sorted=False).indices


def check_per_example(losses: Tensor, reference: Tensor) -> None:
    """Raise ValueError unless a BatchClosure returned one loss per example, as before."""
    if losses.dim() != 1 or losses.shape != reference.shape:
        raise ValueError(
            "a BatchClosure must return one loss per example of the pass (shape "
            f"{tuple(reference.shape)} here), got shape {tuple(losses.shape)}"
        )


def check_fraction(name: str, value: float, meaning: str) -> float:
    """Validate a share of something (of the batch, of the weights) in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1] ({meaning}), got {value!r}")
    return float(value)


class LossTermMethod(Optimizer):
    """Base of the methods that train with an extra loss term and the base optimizer's step.

    It wraps a base optimizer and shares its ``param_groups`` (an LR scheduler attached to it
    drives the base), as the SAM family does; ``step(closure)`` is one pass and the base's step.
    Subclasses implement :meth:`loss_term`, and :meth:`_after_step` if they keep state that
    follows the weights (MESA's EMA). The loop calls :meth:`attach` before the first step.
    """

    def __init__(self, base: Optimizer) -> None:
        if not isinstance(base, Optimizer) or isinstance(base, LossTermMethod):
            raise ValueError(
                "base must be a plain torch.optim.Optimizer instance "
                f"(e.g. torch.optim.SGD(params, lr=0.1)), got {type(base).__name__}"
            )
        super().__init__(base.param_groups, defaults={})
        self.base = base
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.steps_done = 0
        #: Timing only: the term is on in every step (see :meth:`replay_look_schedule`).
        self._always_on = False
        #: Examples the term ran through a forward pass of its own since the loop last asked
        #: (MESA's EMA model): the loop costs them as forward-only passes.
        self.forward_examples = 0
        #: Data-parallel training: every rank's tensor, stacked along dim 0 (the loop sets it;
        #: None in one process). A term whose state follows examples (SAF's bank) records all
        #: ranks' rows with it, so every rank's copy of that state stays the same.
        self.gather: Callable[[Tensor], Tensor] | None = None

    def attach(self, model: nn.Module, *, num_examples: int, steps_per_epoch: int) -> None:
        """Called once by the loop before training: the bare model (not its DDP wrapper), the
        number of training examples and the optimizer steps in one epoch."""
        del model, num_examples, steps_per_epoch

    def loss_term(self, inputs: Tensor, logits: Tensor, index: Tensor | None) -> Tensor:
        """The term added to this (micro-)batch's mean loss: itself a mean over its examples."""
        raise NotImplementedError

    def take_forward_examples(self) -> int:
        """The examples counted in :attr:`forward_examples`, which start again from 0."""
        count, self.forward_examples = self.forward_examples, 0
        return count

    def memory_bytes(self) -> dict[str, int]:
        """The state it keeps beyond the base optimizer's, by name, in bytes (reports show it)."""
        return {}

    def bytes_per_example(self) -> int:
        """The part of that state that grows with the training set, per example (0: none)."""
        return 0

    def replay_look_schedule(self, looks: Any) -> None:
        """Timing only: with any schedule, the term is on in every step, whatever the epoch.

        A term that starts part-way through a run (``start_epoch``) would make the short windows
        ``bench`` times at the start of training look as cheap as the base. The cost of a step
        *with* the term is what a comparison needs; ``None`` restores the run's own rule.
        """
        self._always_on = looks is not None

    def epoch(self, steps_per_epoch: int) -> int:
        """The epoch the next step belongs to, counted from 0."""
        return self.steps_done // max(1, steps_per_epoch)

    def step(  # type: ignore[override]
        self, closure: Any = None, base_step: Hook = None, unscale: Hook = None
    ) -> Any:
        """One pass (the closure, if given) and the base's step; returns the closure's loss."""
        del unscale  # nothing is formed from the gradient before the base step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if base_step is None:
            self.base.step()
        else:
            base_step()
        self._after_step()
        self.steps_done += 1
        return loss

    def _after_step(self) -> None:
        """After the base step (MESA updates its EMA here)."""

    def state_dict(self) -> dict[str, Any]:
        """The base's state, the step counter and the subclass's own state."""
        return {
            "base": self.base.state_dict(),
            "loss_term": {"steps_done": self.steps_done, **self._extra_state()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from ``state_dict()``; the groups stay shared with the base."""
        missing = {"base", "loss_term"} - set(state_dict)
        if missing:
            raise ValueError(
                f"not a {type(self).__name__} state_dict: missing keys {sorted(missing)}"
            )
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        extra = dict(state_dict["loss_term"])
        self.steps_done = int(extra.pop("steps_done"))
        self._load_extra_state(extra)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        del extra

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the base's gradients (the groups are shared, so this is everything)."""
        self.base.zero_grad(set_to_none=set_to_none)


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes the tensors' elements take."""
    return sum(t.numel() * t.element_size() for t in tensors)
