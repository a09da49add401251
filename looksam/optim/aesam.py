r"""AE-SAM and AE-LookSAM (Jiang et al., ICLR 2023): SAM only where the gradient norm says "sharp".

Jiang, Yang, Zhang, Kwok, "An Adaptive Policy to Employ Sharpness-Aware Minimization", ICLR 2023
(arXiv:2304.14647). Instead of SAM on every step (SAM), on a fixed schedule (SAM-k, LookSAM) or at
random (SS-SAM), the adaptive policy treats the squared stochastic gradient norm as a sample of a
normal distribution, tracks its mean and variance with exponential moving averages, and takes the
second (perturbed) pass only when this step's ‖g‖² lies in the distribution's upper part.

With g_t the gradient of step t (counted from 0, global norm over every parameter with a
gradient), T the run's length in steps, δ the EMA forgetting rate and λ₁ ≤ λ₂ the ends of the
threshold schedule:

.. math::
    μ_t = δ\,μ_{t-1} + (1-δ)\,‖g_t‖^2, \qquad
    σ_t^2 = δ\,σ_{t-1}^2 + (1-δ)\,\big(‖g_t‖^2 - μ_t\big)^2, \qquad μ_{-1} = σ_{-1}^2 = 0

.. math::
    c_t = \tfrac{t}{T}\,λ_1 + \big(1 - \tfrac{t}{T}\big)\,λ_2, \qquad
    \text{SAM step} \iff ‖g_t‖^2 \ge μ_t + c_t\,σ_t

The statistics include the current step (μ_t is updated before σ_t², which uses the new μ_t), and
c_t falls linearly from λ₂ at t = 0 to λ₁ at t = T, so the threshold drops and SAM is used more
often late in training. Past T (a run longer than announced) c_t stays at λ₁. The paper uses
δ = 0.9, λ₁ = −1, λ₂ = 1: under the normal model that spends on average ½ of the steps on SAM
(the mean of P(Z ≥ c) over c ∈ [−1, 1]), i.e. about 1.5 forward-backward passes per step.
The averages start from 0 with no bias correction, so μ lags behind ‖g‖² for the first
~1/(1 − δ) steps and those are nearly all SAM steps (short runs spend more than ½ on SAM).

* :class:`AESAM` takes SAM's gradient on the chosen steps and a plain base step with g otherwise.
* :class:`AELookSAM` takes LookSAM's look step (g_s, and g_v stored) on the chosen steps and
  LookSAM's reuse step g + α‖g‖/‖g_v‖·g_v otherwise; the rule replaces LookSAM's every-k-th
  schedule, so it has no k (the engine runs with k = 1, which nothing reads).

The decision needs ‖g_t‖, so it can only be made after the first backward pass of the step:
``is_look_step`` is answered from the gradients present when it is first asked in a step and
cached for that step. Ask it only after the first backward (``step(closure)`` does, and re-decides
after the first closure call whatever was asked before). Asked while no parameter has a gradient
it answers False and caches and updates nothing. The statistics (μ, σ², the count of SAM steps)
are committed when the step completes (``second_step``), so they move exactly once per step taken
and an abandoned or retried step leaves them alone. A step whose ‖g‖² is not finite (a GradScaler
overflow) is a plain step and leaves the statistics as they were.

Cost: one host read per step, the decision's ‖g‖²: which branch runs must be known on the host.
That read is this policy's allowance; everything else stays on the device as in the other
optimizers (the engine's look step and LookSAM's reuse step compute ‖g‖ again there, with no
read).

Not supported: a *per-rank* perturbation under DDP (whether the first pass may skip its all-reduce
must be known before that pass, the decision only after it) and fp16's GradScaler (the decision
would see the scaled gradient, whose scale changes during the run). With the default *global*
perturbation every rank sees the same all-reduced g and makes the same decision.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from looksam.optim._base import Closure, Hook, SharpnessAwareOptimizer, check_total_steps
from looksam.optim._foreach import global_norm
from looksam.optim.looksam import LookSAM

#: The paper's defaults (Sec. 3 and the experimental setup): EMA rate δ and schedule ends λ₁, λ₂.
DEFAULT_DELTA = 0.9
DEFAULT_LAMBDA1 = -1.0
DEFAULT_LAMBDA2 = 1.0

_STATE_KEYS = ("grad_sq_mean", "grad_sq_var", "sam_steps")


def check_delta(delta: float) -> float:
    """Validate δ (forgetting rate of the moving averages): a real number with 0 < δ < 1."""
    if (
        isinstance(delta, bool)
        or not isinstance(delta, numbers.Real)
        or not math.isfinite(delta)
        or not 0.0 < delta < 1.0
    ):
        raise ValueError(
            f"delta must be a number with 0 < delta < 1 (the paper uses 0.9), got {delta!r}"
        )
    return float(delta)


def check_lambdas(lambda1: float, lambda2: float) -> tuple[float, float]:
    """Validate the schedule ends: finite reals with λ₁ ≤ λ₂ (c_t falls from λ₂ to λ₁)."""
    for name, value in (("lambda1", lambda1), ("lambda2", lambda2)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lambda1 > lambda2:
        raise ValueError(
            "lambda1 must be <= lambda2: the threshold c_t falls linearly from lambda2 (first "
            f"step) to lambda1 (step total_steps); got lambda1={lambda1!r} > lambda2={lambda2!r}"
        )
    return float(lambda1), float(lambda2)


@dataclass(frozen=True)
class _Decision:
    """The policy's answer for one step, and the statistics to commit once the step is taken."""

    step: int
    use_sam: bool
    grad_sq_mean: float  # μ_t
    grad_sq_var: float  # σ_t²
    #: ‖g_t‖ as read for the decision, reused by this step's own arithmetic (None: not to be).
    grad_norm: float | None = None


class _AdaptivePolicy(SharpnessAwareOptimizer):
    """The adaptive rule, shared by AE-SAM and AE-LookSAM: it only overrides ``is_look_step``.

    Subclasses validate their arguments with :meth:`_check_policy` before the engine's
    ``__init__`` and call :meth:`_init_policy` after it.
    """

    total_steps: int
    delta: float
    lambda1: float
    lambda2: float
    #: μ: moving average of ‖g‖² over the steps taken so far.
    grad_sq_mean: float
    #: σ²: moving average of the squared deviation of ‖g‖² from μ.
    grad_sq_var: float
    #: How many of the ``steps_done`` steps took the SAM (two-pass) branch.
    sam_steps: int
    _decision: _Decision | None
    _deciding_in_step: bool  # inside step(closure), where the decision's ‖g‖ may be reused

    @staticmethod
    def _check_policy(
        total_steps: int, delta: float, lambda1: float, lambda2: float
    ) -> tuple[int, float, float, float]:
        return (
            check_total_steps(total_steps),
            check_delta(delta),
            *check_lambdas(lambda1, lambda2),
        )

    def _init_policy(self, policy: tuple[int, float, float, float]) -> None:
        self.total_steps, self.delta, self.lambda1, self.lambda2 = policy
        self.grad_sq_mean = 0.0
        self.grad_sq_var = 0.0
        self.sam_steps = 0
        self._decision = None
        self._deciding_in_step = False

    # ------------------------------------------------------------------ the rule
    def threshold_coefficient(self, t: int) -> float:
        """c_t = (t/T)·λ₁ + (1 − t/T)·λ₂ for step t (t/T capped at 1)."""
        frac = min(t, self.total_steps) / self.total_steps
        return frac * self.lambda1 + (1.0 - frac) * self.lambda2

    def _decide(self, grad_sq: float, grad_norm: float | None = None) -> _Decision:
        t = self.steps_done
        if not math.isfinite(grad_sq):  # overflow: a plain step, statistics untouched
            return _Decision(t, False, self.grad_sq_mean, self.grad_sq_var, grad_norm)
        delta = self.delta
        mean = delta * self.grad_sq_mean + (1.0 - delta) * grad_sq
        var = delta * self.grad_sq_var + (1.0 - delta) * (grad_sq - mean) ** 2
        threshold = mean + self.threshold_coefficient(t) * math.sqrt(var)
        return _Decision(t, grad_sq >= threshold, mean, var, grad_norm)

    @property
    def is_look_step(self) -> bool:
        """Whether this step takes the SAM branch, decided from the current gradients.

        Decided once per step (one host read) and cached; ask only after the first backward pass.
        False, with nothing cached or updated, while no parameter has a gradient.
        """
        if self._in_flight is not None:  # between first_step() and second_step()
            return True
        decision = self._decision
        if decision is None or decision.step != self.steps_done:
            if not any(p.grad is not None for g in self.param_groups for p in g["params"]):
                return False
            buckets = self._buckets()
            # The policy's one host read per step: the branch must be known on the host.
            norm = float(global_norm([b.grads for b in buckets], host=self._host))
            decision = self._decide(norm**2, norm if self._host else None)
            self._decision = decision
        return decision.use_sam

    def _known_gradient_norm(self) -> float | None:
        """The decision's ‖g‖, inside ``step(closure)`` on the host path: there nothing can change
        the gradients between the decision and the step's arithmetic (the two-phase API lets a
        caller clip them in between, so it computes ‖g‖ again)."""
        decision = self._decision
        if not self._deciding_in_step or decision is None or decision.step != self.steps_done:
            return None
        return decision.grad_norm

    @property
    def sam_fraction(self) -> float:
        """Fraction of the steps taken so far that were SAM steps (0 before the first step)."""
        return self.sam_steps / self.steps_done if self.steps_done else 0.0

    # ------------------------------------------------------------------ steps
    def step(  # type: ignore[override]
        self, closure: Closure | None = None, base_step: Hook = None, unscale: Hook = None
    ) -> Any:
        """The engine's ``step``; the decision is made from the first closure call's gradient.

        A decision cached before that call (``is_look_step`` asked before the backward pass, on
        stale gradients) is discarded, so it costs one extra host read and changes nothing.
        """
        # The engine's step, called by name: torch wraps ``step`` of every optimizer class it
        # builds with its hook runner, so super() would reach LookSAM's wrapped copy and fire
        # this optimizer's step hooks twice.
        engine_step = SharpnessAwareOptimizer.step
        if closure is None:
            return engine_step(self, None, base_step, unscale)
        calls = 0

        def closure_then_decide() -> Any:
            nonlocal calls
            loss = closure()
            calls += 1
            if calls == 1:
                self._decision = None  # decide from this pass's gradient, not an earlier guess
            return loss

        self._deciding_in_step = True
        try:
            return engine_step(self, closure_then_decide, base_step, unscale)
        finally:
            self._deciding_in_step = False

    @torch.no_grad()
    def first_step(self) -> None:
        """SAM step, phase 1 (see the engine); the policy must have chosen SAM for this step."""
        if not self._takes_second_pass():
            raise RuntimeError(
                f"the adaptive policy chose a plain step for step {self.steps_done} "
                "(‖g‖² below μ + c·σ); check is_look_step before calling first_step()"
            )
        super().first_step()

    @torch.no_grad()
    def second_step(self, base_step: Hook = None) -> None:
        """Finish the step (see the engine), then commit μ, σ² and the SAM-step count."""
        super().second_step(base_step)
        decision = self._decision
        self._decision = None
        if decision is not None and decision.step == self.steps_done - 1:
            self.grad_sq_mean = decision.grad_sq_mean
            self.grad_sq_var = decision.grad_sq_var
            self.sam_steps += int(decision.use_sam)

    # ------------------------------------------------------------------ checkpointing
    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state.update(
            grad_sq_mean=self.grad_sq_mean, grad_sq_var=self.grad_sq_var, sam_steps=self.sam_steps
        )
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from ``state_dict()``, statistics included (checked first)."""
        extra = state_dict.get("sam_family", {})
        missing = [key for key in _STATE_KEYS if key not in extra]
        if missing:
            raise ValueError(
                f"not a {type(self).__name__} state_dict: sam_family lacks {missing} (the "
                "adaptive policy's statistics)"
            )
        super().load_state_dict(state_dict)

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.grad_sq_mean = float(extra.pop("grad_sq_mean"))
        self.grad_sq_var = float(extra.pop("grad_sq_var"))
        self.sam_steps = int(extra.pop("sam_steps"))
        self._decision = None
        super()._load_extra_state(extra)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={type(self.base).__name__}, rho={self.rho}, "
            f"alpha={self.alpha}, total_steps={self.total_steps}, delta={self.delta}, "
            f"lambda1={self.lambda1}, lambda2={self.lambda2}, steps_done={self.steps_done}, "
            f"sam_steps={self.sam_steps})"
        )


class AESAM(_AdaptivePolicy):
    r"""AE-SAM: SAM's gradient when ‖g_t‖² ≥ μ_t + c_t·σ_t, a plain base step with g otherwise.

    .. math::
        g_t^{\text{used}} = \begin{cases} ∇L(w_t + ρ\,g_t/‖g_t‖) & ‖g_t‖^2 \ge μ_t + c_t σ_t \\
        g_t & \text{otherwise} \end{cases}

    with μ_t, σ_t² and c_t as in this module's docstring (Jiang et al., ICLR 2023, Sec. 3.1).
    Cost: 1 or 2 forward-backward passes per step, on average 1.5 with the paper's defaults.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0.
        total_steps: the run's length T in optimizer steps (an integer ≥ 1).
        delta: forgetting rate δ of the moving averages, 0 < δ < 1 (paper: 0.9).
        lambda1: threshold coefficient reached at step T (paper: −1).
        lambda2: threshold coefficient at step 0, ≥ lambda1 (paper: 1).
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        total_steps: int,
        delta: float = DEFAULT_DELTA,
        lambda1: float = DEFAULT_LAMBDA1,
        lambda2: float = DEFAULT_LAMBDA2,
        scalars: str = "auto",
    ) -> None:
        policy = self._check_policy(total_steps, delta, lambda1, lambda2)
        super().__init__(base, rho=rho, scalars=scalars)
        self._init_policy(policy)


class AELookSAM(_AdaptivePolicy, LookSAM):
    r"""AE-LookSAM: LookSAM's look step when ‖g_t‖² ≥ μ_t + c_t·σ_t, its reuse step otherwise.

    On a SAM step g_s = ∇L(w + ρ g/‖g‖) is used and g_v = g_s − (⟨g, g_s⟩/‖g‖²)·g stored; on
    the other steps the base steps with g + α·‖g‖/‖g_v‖·g_v, exactly as LookSAM between its look
    steps (plain g until the first SAM step). The adaptive rule replaces LookSAM's k: there is no
    k argument (the engine's ``k`` is 1 and unused). Cost: 1–2 passes per step, as AE-SAM.

    Args:
        base: the optimizer that applies the update.
        rho: neighbourhood radius ρ ≥ 0.
        total_steps: the run's length T in optimizer steps (an integer ≥ 1).
        alpha: weight α ≥ 0 of the reused g_v (LookSAM's 0.7; 0 gives AE-SAM).
        delta: forgetting rate δ of the moving averages, 0 < δ < 1 (paper: 0.9).
        lambda1: threshold coefficient reached at step T (paper: −1).
        lambda2: threshold coefficient at step 0, ≥ lambda1 (paper: 1).
        scalars: ``"auto"`` (floats on the CPU, device tensors elsewhere), ``"host"`` or
            ``"device"``: where norms and factors live (see ``SharpnessAwareOptimizer``).
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float = 0.05,
        total_steps: int,
        alpha: float = 0.7,
        delta: float = DEFAULT_DELTA,
        lambda1: float = DEFAULT_LAMBDA1,
        lambda2: float = DEFAULT_LAMBDA2,
        scalars: str = "auto",
    ) -> None:
        policy = self._check_policy(total_steps, delta, lambda1, lambda2)
        super().__init__(base, rho=rho, k=1, alpha=alpha, scalars=scalars)
        self._init_policy(policy)
