"""The engine every SAM-family optimizer here runs on: SAM, SAM-k, LookSAM, Look-LayerSAM, GSAM,
AE-SAM, AE-LookSAM and late-phase SAM take their second pass through it, and MSAM its one pass.

A wrapper owns no parameters of its own: it shares its base optimizer's ``param_groups`` (so an LR
scheduler attached to the wrapper drives the base) and only decides *which gradient* the base
optimizer steps with. Everything a resumed run needs (step counter, stored g_v, the base
optimizer's moments) travels through ``state_dict()``.

Data-parallel training (``DistributedDataParallel``, one replica per rank, each rank on its slice
of the global batch). Both closure calls must go through the DDP module; the engine itself needs
nothing else. Two ways to perturb:

* **global** (the default; what one process on the whole batch computes): DDP all-reduces g in
  the first pass and g_s in the second, so every rank forms the same ε, the same g_v and the same
  update. Communication is DDP's usual one all-reduce of |θ| numbers per backward pass, so a look
  step costs two.
* **per-rank** (the SAM paper's m-sharpness, m = the per-rank batch): the first pass of a look
  step runs under ``ddp.no_sync()`` around forward *and* backward, so each rank perturbs with its
  own g; the second pass is synchronised and every rank steps with the averaged g_s. SAM and
  SAM-k need no extra communication and the first pass saves its all-reduce. LookSAM and
  Look-LayerSAM store g_v from the *local* g, which differs between ranks: their ``sync_gv`` hook
  averages it (one all-reduce of |θ| numbers per look step) so the reuse steps stay identical.

A look step re-points ``param.data`` at w + ε and back. DDP's reducer keeps the parameter objects,
not their storage, so this works with its default ``gradient_as_bucket_view=False``. With
``gradient_as_bucket_view=True`` the gradients are views of DDP's communication buffer, which the
second backward overwrites with g_s. LookSAM and Look-LayerSAM copy g into a buffer of their own
on every look step anyway; GSAM, which keeps the gradient tensors themselves, detects the views
and copies g first (one extra |θ| copy per look step). Both settings give the same result.

Scalars. On an accelerator no step reads a value back to the host: ‖g‖, ρ/‖g‖ and the guards for
a zero or non-finite norm are 0-dim tensors on the device (see ``looksam.optim._foreach``), so a
GPU never waits for the host inside a step. On the CPU, where a read costs nothing and every 0-dim
operation is a dispatch, they are Python floats. The ``scalars`` switch on every wrapper chooses:
``"auto"`` (the default: floats on the CPU, device tensors elsewhere), ``"host"`` or ``"device"``
(which tests use to run the accelerators' path on a CPU). Both paths compute the same quantities
with the same guards; they differ only in rounding (floats are doubles).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from looksam.optim._foreach import (
    Scalar,
    add_scaled,
    check_scalars,
    clone_all,
    global_norm,
    group_by_device_and_dtype,
    safe_ratio,
    scalars_on_host,
)

Closure = Callable[[], Any]
#: What ``step`` calls to apply the update or unscale the gradients (None: the default).
Hook = Callable[[], object] | None


def check_rho(rho: float) -> float:
    """Validate ρ (perturbation radius): a finite real number ≥ 0."""
    return _check_real("rho", rho, "a finite number >= 0 (0 disables the perturbation)")


def check_alpha(alpha: float) -> float:
    """Validate α (weight of the reused g_v): a finite real number ≥ 0."""
    return _check_real("alpha", alpha, "a finite number >= 0 (0 reduces LookSAM to SAM-k)")


def check_k(k: int) -> int:
    """Validate k (g_s is computed on steps 0, k, 2k, …): an integer ≥ 1."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (1 computes g_s every step), got {k!r}")
    return int(k)


def check_total_steps(total_steps: int) -> int:
    """Validate T, the run's length in optimizer steps, that a schedule spans: an integer ≥ 1."""
    if (
        isinstance(total_steps, bool)
        or not isinstance(total_steps, numbers.Integral)
        or total_steps < 1
    ):
        raise ValueError(
            "total_steps must be an integer >= 1 (the run's length in optimizer steps, which "
            f"the schedule spans), got {total_steps!r}"
        )
    return int(total_steps)


def _check_real(name: str, value: float, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


#: A look step whose second pass left every gradient empty: the closure was not re-run.
_NO_SECOND_GRADIENT = (
    "look step {step}: the second forward-backward pass produced no gradient (every p.grad is "
    "None after the closure's second call), so the step was not taken; w is restored. A "
    "closure that runs no forward-backward pass does this, e.g. a two-phase step finished by "
    "PyTorch Lightning's opt.step(), which passes a closure of its own: pass your "
    "forward-backward closure to opt.step(closure=...) (docs/training-loops.md, 'PyTorch "
    "Lightning'), or make the closure zero the gradients, run forward and backward on every call"
)


@dataclass
class Bucket:
    """Parameters with a gradient on one (device, dtype): one foreach launch per operation."""

    params: list[Tensor]
    grads: list[Tensor]


@dataclass
class _LookInFlight:
    """What a look step carries from ``first_step`` to ``second_step``."""

    buckets: list[Bucket]  # grads hold g (GSAM) or nothing (SAM, SAM-k free g early)
    originals: list[list[Tensor]]  # per bucket: the untouched storage of w, swapped back exactly
    grad_norm: Scalar  # ‖g‖: a float (host scalars) or 0-dim on the device


def call_or_undo(closure: Closure, undo: Callable[[], object]) -> Any:
    """Call ``closure`` with gradients on; if it raises (OOM, Ctrl-C…), ``undo`` first puts the
    weights back at w, so that no failure leaves the model at a perturbed point."""
    try:
        with torch.enable_grad():
            return closure()
    except BaseException:
        undo()
        raise


class SharpnessAwareOptimizer(Optimizer):
    """Base of the SAM family: wraps a base optimizer and feeds it a sharpness-aware gradient.

    Step ``t`` (counted from 0) is a *look step* when ``t % k == 0``. On a look step the engine
    builds the perturbed weights w + ε out of place (``_perturbed_weights``), points every
    parameter at them for the second forward-backward pass, then points the parameters back at
    their original, untouched storage: w is restored exactly, with no copy and no subtraction, and
    the look step costs one norm and one scaled add beyond the two passes. The base optimizer then
    steps with g_s. On the other steps subclasses may adjust g in place
    (``_adjust_plain_gradient_``).

    Because a look step briefly re-points ``param.data``, parameters must own their storage: this
    is true of ordinary modules and DDP, not of FSDP's flattened views.

    Subclasses set ``k`` and ``alpha`` and override the hooks; the control flow, the closure
    contract, the two-phase API and checkpointing live here once.

    ``scalars`` (every wrapper takes it): ``"auto"`` keeps norms and factors as Python floats on
    the CPU and as 0-dim device tensors elsewhere, ``"host"`` and ``"device"`` force one form
    (see the module docstring). It may be reassigned between steps.
    """

    #: Whether ``_finish_look_`` needs g after the second pass (LookSAM's projection does).
    keeps_first_gradient = False

    def __init__(
        self,
        base: Optimizer,
        *,
        rho: float,
        k: int = 1,
        alpha: float = 0.0,
        scalars: str = "auto",
    ) -> None:
        if not isinstance(base, Optimizer):
            raise ValueError(
                "base must be a torch.optim.Optimizer instance "
                f"(e.g. torch.optim.SGD(params, lr=0.1)), got {type(base).__name__}"
            )
        if isinstance(base, SharpnessAwareOptimizer):
            raise ValueError("base must be a plain optimizer, not another SAM-family wrapper")
        self.rho = check_rho(rho)
        self.k = check_k(k)
        self.alpha = check_alpha(alpha)
        self._scalars = check_scalars(scalars)
        # Optimizer.__init__ registers the base's group dicts as they are (no defaults to add),
        # then we share the very list so groups added to either one are seen by both.
        super().__init__(base.param_groups, defaults={})
        self.base = base
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.steps_done = 0
        self._in_flight: _LookInFlight | None = None
        #: Timing only (see :meth:`replay_look_schedule`): which steps take the second pass.
        self._replayed_looks: Callable[[int], bool] | None = None
        self._bucket_key: tuple[int, ...] = ()
        self._bucket_params: list[list[Tensor]] = []
        self._bucket_devices: tuple[torch.device, ...] = ()
        #: Whether this step's scalars are floats: the switch resolved on the buckets' devices.
        self._host = False
        #: id(params list) → (that list, a tensor aliasing each parameter's storage of w).
        self._aliases: dict[int, tuple[list[Tensor], list[Tensor]]] = {}

    @property
    def scalars(self) -> str:
        """``"auto"``, ``"host"`` or ``"device"``: where norms and factors live (see the class)."""
        return self._scalars

    @scalars.setter
    def scalars(self, mode: str) -> None:
        self._scalars = check_scalars(mode)

    # ------------------------------------------------------------------ schedule
    @property
    def is_look_step(self) -> bool:
        """Whether the next step computes g_s (two gradients) rather than one."""
        return self.steps_done % self.k == 0

    def replay_look_schedule(self, looks: Callable[[int], bool] | None) -> None:
        """Timing only: take the second pass on the steps ``looks(steps_done)`` names.

        An adaptive rule (AE-SAM) or a phase (late-phase SAM) spends its second passes where a
        whole run puts them, which a short timing window does not see. Replaying the run's
        measured share of second passes gives the window the run's mix of steps. The rule is
        still evaluated every step (its cost belongs to the step); only its answer is replaced.
        ``None`` restores the optimizer's own rule. Never use it for training.
        """
        self._replayed_looks = looks

    def _takes_second_pass(self) -> bool:
        """This step's answer: the optimizer's rule, unless a timing replay overrides it."""
        if self._in_flight is not None:  # between first_step() and second_step()
            return True
        own = self.is_look_step
        replayed = self._replayed_looks
        return own if replayed is None else replayed(self.steps_done)

    @property
    def in_second_pass(self) -> bool:
        """True between ``first_step()`` and ``second_step()``: the weights are perturbed."""
        return self._in_flight is not None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (the wrapper sees it through the shared list)."""
        if "base" in self.__dict__:
            self.base.add_param_group(param_group)
        else:  # called by Optimizer.__init__ while the shared groups are registered
            super().add_param_group(param_group)

    # ------------------------------------------------------------------ steps
    def step(  # type: ignore[override]
        self, closure: Closure | None = None, base_step: Hook = None, unscale: Hook = None
    ) -> Any:
        """Run one optimizer step and return the loss of the first closure call.

        Args:
            closure: zeroes the gradients, runs forward and backward and returns the loss (torch's
                convention). It is called once on plain steps and twice on look steps. It may be
                omitted only when the gradients are already computed for this step: after a
                manual backward on a plain step, or after ``first_step()`` and the second backward
                on a look step (the two-phase API, which ``GradScaler.step`` also uses).
            base_step: what applies the update; see :meth:`second_step`.
            unscale: called on a look step just before the perturbation is formed from g, e.g.
                ``lambda: scaler.unscale_(opt)`` so a GradScaler's g is unscaled first (the
                fp16 recipe); ``base_step`` unscales the final gradient.
        """
        if closure is None:
            if self._in_flight is None and self._takes_second_pass():
                raise RuntimeError(
                    f"{type(self).__name__}.step() needs a closure: step {self.steps_done} is a "
                    "look step that evaluates the gradient twice. Pass step(closure), or call "
                    "first_step(), run the second backward pass, then step()/second_step()."
                )
            self.second_step(base_step)
            return None
        with torch.enable_grad():
            loss = closure()
        if self._takes_second_pass():
            if unscale is not None:
                unscale()
            self.first_step()
            call_or_undo(closure, self.abandon_look_step)
        self.second_step(base_step)
        return loss

    @torch.no_grad()
    def abandon_look_step(self) -> None:
        """Undo ``first_step()`` (restore w exactly) without stepping; a no-op outside a look."""
        if self._in_flight is not None:
            self._restore_weights(self._in_flight)
            self._in_flight = None

    @torch.no_grad()
    def first_step(self) -> None:
        """Look step, phase 1: move the weights to w + ε and clear the gradients.

        The gradients g must be populated (backward already run). Afterwards ``p.grad`` is
        ``None`` for every parameter, so the next backward writes g_s cleanly whatever
        ``zero_grad`` mode the closure uses.
        """
        if not self._takes_second_pass():
            raise RuntimeError(
                f"step {self.steps_done} is not a look step (k={self.k}); check is_look_step "
                "before calling first_step()"
            )
        self.abandon_look_step()  # a half-done look step (the second pass raised): undo it
        buckets = self._buckets()
        grad_norm = self._first_gradient_norm(buckets)
        originals: list[list[Tensor]] = []
        if self.rho > 0.0:  # ‖g‖ = 0 or ∞ is handled on the device: ε = 0 (or NaN, for ∞·0)
            perturbed = self._perturbed_weights(buckets, grad_norm)
            for bucket, weights in zip(buckets, perturbed, strict=True):
                originals.append(self._storage_aliases(bucket.params))
                for p, w in zip(bucket.params, weights, strict=True):
                    p.data = w
        for bucket in buckets:
            for p in bucket.params:
                p.grad = None
            if not self.keeps_first_gradient:
                bucket.grads = []  # SAM and SAM-k are done with g: free it before the 2nd pass
            elif any(g._is_view() for g in bucket.grads):
                # DDP(gradient_as_bucket_view=True) hands out views of its communication buffer
                # and writes g_s into the same memory: keep a private copy of g.
                bucket.grads = clone_all(bucket.grads)
        self._in_flight = _LookInFlight(buckets, originals, grad_norm)

    @torch.no_grad()
    def second_step(self, base_step: Hook = None) -> None:
        """Finish the step: restore w (look steps), form the gradient, let the base optimizer step.

        On a look step ``p.grad`` must hold g_s from the second backward pass.

        Args:
            base_step: what applies the update, ``self.base.step`` by default. Mixed precision
                passes ``lambda: scaler.step(opt.base)`` so the GradScaler unscales the final
                gradient and skips the update on overflow (docs/training-loops.md, mixed
                precision).
        """
        in_flight = self._in_flight
        if in_flight is None:
            if self._takes_second_pass():
                raise RuntimeError(
                    f"step {self.steps_done} is a look step: call first_step() and run the second "
                    "backward pass before second_step()"
                )
            self._adjust_plain_gradient_()
        else:
            self._in_flight = None
            self._restore_weights(in_flight)
            if not any(p.grad is not None for b in in_flight.buckets for p in b.params):
                raise RuntimeError(_NO_SECOND_GRADIENT.format(step=self.steps_done))
            self._finish_look_(in_flight)
        if base_step is None:
            self.base.step()
        else:
            base_step()
        self.steps_done += 1

    # ------------------------------------------------------------------ hooks for subclasses
    def _first_gradient_norm(self, buckets: list[Bucket]) -> Scalar:
        """‖g‖ over every bucket (float or tensor); LookSAM also keeps its copy of g here."""
        return self._gradient_norm(buckets)

    def _gradient_norm(self, buckets: list[Bucket]) -> Scalar:
        """‖g‖ of the gradients now in ``p.grad``: what this step already knows, else computed."""
        known = self._known_gradient_norm()
        if known is not None:
            return known
        return global_norm([b.grads for b in buckets], host=self._host)

    def _known_gradient_norm(self) -> float | None:
        """‖g‖ of the current gradients if this step already read it to the host (an adaptive
        rule's decision does), so that it is not computed twice; None by default."""
        return None

    def _perturbed_weights(self, buckets: list[Bucket], grad_norm: Scalar) -> list[list[Tensor]]:
        """w + ρ·g/‖g‖ (global norm) per bucket, out of place; called when ρ > 0.

        ‖g‖ = 0 gives ε = 0. A non-finite g (an fp16 overflow) makes w + ε non-finite where g
        is, so the second pass's g_s is too and GradScaler skips the step, as it would have.
        """
        scale = safe_ratio(self.rho, grad_norm)
        return [add_scaled(b.params, b.grads, scale) for b in buckets]

    def _finish_look_(self, in_flight: _LookInFlight) -> None:
        """Look at g_s (now in ``p.grad``) before the base step; SAM and SAM-k need nothing."""

    def _adjust_plain_gradient_(self) -> None:
        """Modify g in place before a plain (non-look) step; SAM-k leaves it alone."""

    # ------------------------------------------------------------------ helpers
    def _buckets(self) -> list[Bucket]:
        """Parameters with a gradient, grouped by (device, dtype); sets this step's scalar form.

        The grouping is cached on the identity of that parameter list: between look steps it is
        the same every step, and regrouping would cost more Python time than the arithmetic.
        """
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        key = tuple(map(id, params))
        if key != self._bucket_key:
            grouped = group_by_device_and_dtype(params)
            self._bucket_params = [lists[0] for lists in grouped]
            self._bucket_devices = tuple(ps[0].device for ps in self._bucket_params)
            self._bucket_key = key
            self._aliases.clear()  # they belong to the old lists
        self._host = self._resolve_host(self._bucket_devices)
        # Every p here has a gradient (checked above); cast() per parameter would cost a call each.
        return [Bucket(ps, [p.grad for p in ps]) for ps in self._bucket_params]  # type: ignore[misc]

    def _resolve_host(self, devices: tuple[torch.device, ...]) -> bool:
        """Host scalars for this step: the switch, on every bucket's device (none: host)."""
        return all(scalars_on_host(self._scalars, d) for d in devices)

    def _storage_aliases(self, params: list[Tensor]) -> list[Tensor]:
        """A tensor aliasing each parameter's own storage (w), to point it back at after w + ε.

        ``p.data`` dispatches a detach per parameter; the base updates w in place, so the aliases
        of the last step still hold: they are reused until a parameter's data has moved (a
        ``model.to()``, a reassigned ``p.data``), which comparing addresses detects without a
        dispatch.
        """
        cached = self._aliases.get(id(params))
        if cached is not None and cached[0] is params:
            aliases = cached[1]
            if all(a.data_ptr() == p.data_ptr() for a, p in zip(aliases, params, strict=True)):
                return aliases
        aliases = [p.data for p in params]
        self._aliases[id(params)] = (params, aliases)
        return aliases

    @staticmethod
    def _restore_weights(in_flight: _LookInFlight) -> None:
        for bucket, originals in zip(in_flight.buckets, in_flight.originals, strict=False):
            for p, w in zip(bucket.params, originals, strict=True):
                p.data = w

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: own per-parameter state, counters, the base's state."""
        own = super().state_dict()
        own["base"] = self.base.state_dict()
        own["sam_family"] = {"steps_done": self.steps_done}
        own["sam_family"].update(self._extra_state())
        return own

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint from ``state_dict()``; the groups stay shared with the base."""
        missing = {"state", "param_groups", "base", "sam_family"} - set(state_dict)
        if missing:
            raise ValueError(
                f"not a {type(self).__name__} state_dict: missing keys {sorted(missing)}"
            )
        super().load_state_dict(
            {"state": state_dict["state"], "param_groups": state_dict["param_groups"]}
        )
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        extra = dict(state_dict["sam_family"])
        self.steps_done = int(extra.pop("steps_done"))
        self._load_extra_state(extra)
        self._in_flight = None

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        del extra

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={type(self.base).__name__}, rho={self.rho}, k={self.k}, "
            f"alpha={self.alpha}, scalars={self.scalars!r}, steps_done={self.steps_done})"
        )


def params_of(params_or_model: torch.nn.Module | Iterable[Any]) -> Iterable[Any]:
    """Accept a model, an iterable of tensors or an iterable of param-group dicts."""
    if isinstance(params_or_model, torch.nn.Module):
        return params_or_model.parameters()
    return params_or_model
