r"""RST (Zhao, Zhang & Hu, 2022): SAM on the steps a scheduled coin picks, the base step elsewhere.

Zhao, Zhang, Hu, "Randomized Sharpness-Aware Training for Boosting Computational Efficiency in
Deep Learning", arXiv:2203.09962 (v2, 2023; v1 was titled "SS-SAM: Stochastic Scheduled
Sharpness-Aware Minimization for Efficiently Training Deep Neural Networks").

**What is implemented: RST, not G-RST.** The paper's abstract introduces RST and then "a general
framework (G-RST), where we can adjust regularization degree on sharpness freely for any
scheduling function". The text that defines G-RST (and the exact formulas and default values of
the paper's schedules) could not be retrieved when this was written: only the abstract and
secondary summaries could. So this module implements RST as the abstract states it, under the
project's name ``GRST``; it does not claim G-RST's extra degree of freedom. Where a detail below
is this package's choice rather than the paper's, it says so.

The rule (RST): at step t (counted from 0 in ``steps_done``) draw X_t ~ Bernoulli(p(t)) and

.. math::
    g_t^{\text{used}} = \begin{cases} ∇L(w_t + ρ\,g_t/‖g_t‖) & X_t = 1 \text{ (SAM step)} \\
    g_t & X_t = 0 \text{ (base step)} \end{cases}

with g_t = ∇L(w_t) and a global norm, exactly SAM's step on the chosen steps (the engine's look
step) and exactly the base optimizer's on the others.

The schedule p(t). The paper studies four types of scheduling function (v1's abstract), named
constant, piecewise, linear and trigonometric in summaries of v1. Their exact parameterisation
was not retrievable; here each goes from ``p_start`` at t = 0 to ``p_end`` at t = T
(``total_steps``), with u = min(t, T)/T (p stays at ``p_end`` past T):

* ``p_start == p_end``: constant, p(t) = p_start (any ``schedule``; ``total_steps`` unused);
* ``"linear"``: p(t) = p_start + (p_end − p_start)·u;
* ``"cosine"`` (the trigonometric type): p(t) = p_start + (p_end − p_start)·(1 − cos πu)/2;
* ``"piecewise"``: p(t) = p_start for 2t < T, p_end from T/2 on (this package's choice of
  breakpoint: the middle of the run).

Defaults and their source: p_start = p_end = 0.5, a constant schedule. The paper's headline
result is SAM-level accuracy "with an average propagation count of only 1.5" (a summary of v1)
and "saving 50% extra computation cost" (v2's abstract), i.e. a SAM step on half of the steps
on average; ρ = 0.05 is SAM's default (the paper's own ρ was not retrieved).

Cost: 1 + p(t) forward-backward passes at step t in expectation; over a run 1 + the mean of p,
which is 1 + (p_start + p_end)/2 for every schedule here (exactly for the constant one, up to
the rounding of the discrete steps for the others): 1.5 at the defaults.

Randomness. The coin is drawn from the optimizer's own CPU ``torch.Generator``: no device value
is read to take the decision, and the decision is known *before* the step's first pass (so a
per-rank first pass under DDP can skip its all-reduce, as SAM's does). It is seeded at
construction from ``seed``, or, when ``seed`` is None, from torch's global RNG
(``torch.manual_seed`` makes a run reproducible). Under ``torch.distributed`` every rank must take
the same branch (a rank taking a second pass another one skips would pair the wrong all-reduces):
when a process group with more than one rank is initialised, rank 0's seed is broadcast at
construction (one collective; every rank must build the optimizer). The generator's state and a
coin already drawn for the step in progress travel in ``state_dict()``, so a resumed run draws
the same coins as an uninterrupted one.

The coin is drawn once per step, the first time the step asks for it (``is_look_step``, which
``step`` asks), and kept for that step. Timing (``replay_look_schedule``) still draws it every
step, and only its answer is replaced.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch.optim import Optimizer

from looksam.optim._base import Hook, SharpnessAwareOptimizer, check_total_steps
from looksam.optim._random import check_seed, draw_seed, shared_seed

#: The schedule shapes (a constant schedule is ``p_start == p_end`` under any of them).
SCHEDULES = ("linear", "cosine", "piecewise")
#: Defaults: a SAM step on half the steps, 1.5 passes per step (the paper's headline cost).
DEFAULT_P = 0.5


def check_probability(name: str, value: float) -> float:
    """Validate a SAM-step probability: a finite real number in [0, 1]."""
    allowed = "a finite number in [0, 1] (the probability of a SAM step)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    p = float(value)
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return p


def check_schedule(schedule: str) -> str:
    """Validate the schedule's shape: one of :data:`SCHEDULES`."""
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(
            f"schedule must be one of {', '.join(repr(s) for s in SCHEDULES)} (a constant "
            f"schedule is p_start == p_end), got {schedule!r}"
        )
    return schedule


def sam_probability(
    t: int, *, p_start: float, p_end: float, schedule: str, total_steps: int | None
) -> float:
    """p(t): the probability that step t is a SAM step (see the module docstring)."""
    if p_start == p_end or total_steps is None:
        return p_start
    if schedule == "piecewise":
        return p_start if 2 * t < total_steps else p_end
    if t >= total_steps:
        return p_end  # exactly, not p_start + (p_end − p_start)·1 rounded
    u = t / total_steps
    shape = (1.0 - math.cos(math.pi * u)) / 2.0 if schedule == "cosine" else u
    return p_start + (p_end - p_start) * shape


class GRST(SharpnessAwareOptimizer):
    r"""RST: a SAM step with probability p(t), a plain base step otherwise (see the module).

    Zhao, Zhang & Hu, arXiv:2203.09962. **This is RST**: the paper's generalised G-RST could not
    be read (only its abstract), so it is not implemented; the class carries the project's name.
    p = 0 (``p_start = p_end = 0``) is exactly the base optimizer and p = 1 exactly SAM.

    Cost: 1 + p(t) passes per step in expectation, 1 + (p_start + p_end)/2 over a run (1.5 at
    the defaults). ``is_look_step`` is known before the step's first pass (a coin, no gradient
    needed), but no fixed window of steps holds a fixed share of SAM steps.

    Args:
        base: the optimizer that applies the update.
        rho: SAM's neighbourhood radius ρ ≥ 0 on the SAM steps.
        p_start: the SAM-step probability at step 0, in [0, 1] (default 0.5).
        p_end: the probability reached at ``total_steps`` and kept after, in [0, 1]
            (default 0.5; equal to ``p_start``: a constant schedule).
        schedule: ``"linear"``, ``"cosine"`` or ``"piecewise"``: how p goes from ``p_start`` to
            ``p_end`` (see the module docstring; the parameterisation is this package's).
        total_steps: the run's length T in optimizer steps; needed when ``p_start != p_end``.
        seed: the coin generator's seed; None draws one from torch's global RNG.
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).

    Example::

        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt = GRST(base, rho=0.05, p_start=0.5, p_end=0.5)
        loss = opt.step(closure)  # the closure runs once or twice, as the coin says
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        p_start: float = DEFAULT_P,
        p_end: float = DEFAULT_P,
        schedule: str = "linear",
        total_steps: int | None = None,
        seed: int | None = None,
        scalars: str = "auto",
    ) -> None:
        self.p_start = check_probability("p_start", p_start)
        self.p_end = check_probability("p_end", p_end)
        self.schedule = check_schedule(schedule)
        self.total_steps = self._check_total_steps(total_steps, self.p_start, self.p_end)
        checked_seed = check_seed(seed)
        super().__init__(base, rho=rho, k=1, scalars=scalars)
        device = next(
            (p.device for g in self.param_groups for p in g["params"]), torch.device("cpu")
        )
        self.seed = shared_seed(draw_seed(checked_seed), device)
        self._generator = torch.Generator().manual_seed(self.seed)
        #: (step, SAM step?) once the coin of that step is drawn.
        self._decision: tuple[int, bool] | None = None
        #: How many of the ``steps_done`` steps took SAM's second pass.
        self.sam_steps = 0

    @staticmethod
    def _check_total_steps(total_steps: int | None, p_start: float, p_end: float) -> int | None:
        if total_steps is None:
            if p_start != p_end:
                raise ValueError(
                    "total_steps must be an integer >= 1 (the run's length in optimizer steps, "
                    f"which the schedule spans) when p_start != p_end (p_start={p_start}, "
                    f"p_end={p_end}), got None"
                )
            return None
        return check_total_steps(total_steps)

    # ------------------------------------------------------------------ the rule
    def probability(self, t: int | None = None) -> float:
        """p(t), the probability that step t (default: the next step) is a SAM step."""
        return sam_probability(
            self.steps_done if t is None else t,
            p_start=self.p_start,
            p_end=self.p_end,
            schedule=self.schedule,
            total_steps=self.total_steps,
        )

    def _draw(self) -> float:
        """One uniform number in [0, 1) from the coin generator.

        The generator and its output live on the CPU, so reading the value waits for no device.
        It is read with ``.numpy()``: the optimizer tests' host-read counter wraps ``.item()``
        for every tensor, as it cannot tell a CPU tensor from a device's.
        """
        return float(torch.rand((), generator=self._generator, dtype=torch.float64).numpy())

    @property
    def is_look_step(self) -> bool:
        """Whether this step is a SAM step: the step's coin, drawn the first time it is asked."""
        if self._in_flight is not None:  # between first_step() and second_step()
            return True
        decision = self._decision
        if decision is None or decision[0] != self.steps_done:
            p = self.probability()
            decision = (self.steps_done, self._draw() < p)  # p = 1: always; p = 0: never
            self._decision = decision
        return decision[1]

    @property
    def sam_fraction(self) -> float:
        """Fraction of the steps taken so far that took SAM's second pass (0 before any)."""
        return self.sam_steps / self.steps_done if self.steps_done else 0.0

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def first_step(self) -> None:
        """SAM step, phase 1 (see the engine); only on a step whose coin chose SAM."""
        if not self._takes_second_pass():
            raise RuntimeError(
                f"step {self.steps_done} is not a look step: its coin (p = "
                f"{self.probability():g}) chose a plain base step; check is_look_step before "
                "calling first_step()"
            )
        super().first_step()

    @torch.no_grad()
    def second_step(self, base_step: Hook = None) -> None:
        """Finish the step (see the engine) and count it if it took the second pass."""
        looked = self._in_flight is not None
        super().second_step(base_step)
        self.sam_steps += int(looked)

    # ------------------------------------------------------------------ checkpointing
    def _extra_state(self) -> dict[str, Any]:
        decision = self._decision
        pending = decision[1] if decision is not None and decision[0] == self.steps_done else None
        return {
            "p_start": self.p_start,
            "p_end": self.p_end,
            "schedule": self.schedule,
            "total_steps": self.total_steps,
            "seed": self.seed,
            "sam_steps": self.sam_steps,
            "rng_state": self._generator.get_state(),
            "pending_coin": pending,  # a coin drawn for the step in progress, or None
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint, its schedule and coin generator included; a bad checkpoint fails
        before anything changes."""
        extra = state_dict.get("sam_family", {})
        missing = [k for k in ("rng_state", "seed", "sam_steps") if k not in extra]
        if missing:
            raise ValueError(
                f"not a GRST state_dict: sam_family lacks {missing} (the coin generator's state)"
            )
        p_start = check_probability("p_start", extra.get("p_start", self.p_start))
        p_end = check_probability("p_end", extra.get("p_end", self.p_end))
        check_schedule(extra.get("schedule", self.schedule))
        self._check_total_steps(extra.get("total_steps", self.total_steps), p_start, p_end)
        check_seed(extra["seed"])
        if not isinstance(extra["rng_state"], torch.Tensor):
            raise ValueError("not a GRST state_dict: rng_state must be a tensor")
        super().load_state_dict(state_dict)

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.p_start = float(extra.pop("p_start", self.p_start))
        self.p_end = float(extra.pop("p_end", self.p_end))
        self.schedule = str(extra.pop("schedule", self.schedule))
        self.total_steps = extra.pop("total_steps", self.total_steps)
        self.seed = int(extra.pop("seed"))
        self.sam_steps = int(extra.pop("sam_steps"))
        self._generator.set_state(extra.pop("rng_state").to(device="cpu", dtype=torch.uint8))
        pending = extra.pop("pending_coin", None)
        self._decision = None if pending is None else (self.steps_done, bool(pending))
        super()._load_extra_state(extra)

    def __repr__(self) -> str:
        return (
            f"GRST(base={type(self.base).__name__}, rho={self.rho}, p_start={self.p_start}, "
            f"p_end={self.p_end}, schedule={self.schedule!r}, total_steps={self.total_steps}, "
            f"seed={self.seed}, steps_done={self.steps_done}, sam_steps={self.sam_steps})"
        )
