r"""SAF and MESA (Du et al., NeurIPS 2022): sharpness-aware training for (almost) free.

Du, Zhou, Feng, Tan & Zhou, "Sharpness-Aware Training for Free", NeurIPS 2022 (arXiv:2205.14083;
code: AngusDujw/SAF). Neither perturbs the weights: both add a *trajectory loss* that keeps the
model's outputs close to outputs it had earlier, which the paper shows bounds the change of the
loss along the trajectory (a sharpness surrogate). With z_i the logits of example i, τ the
temperature, λ the weight and p(z) = softmax(z/τ):

.. math::
    L = L_B(w) + λ\,τ^2\,\frac{1}{|B|}\sum_{i∈B} \mathrm{KL}\big(p(\hat z_i)\,\big\|\,p(z_i)\big)

* **SAF**: ẑ_i are example i's own logits from Ẽ epochs ago, kept in an output bank indexed by
  the example's position in the training set (so the workload must give sample ids).
* **MESA**: ẑ_i are the logits of an exponential moving average of the weights on the same
  example (one extra forward pass of the EMA model per step; no sample ids).

Both apply the term from epoch ``start_epoch`` (SAF: once its bank holds outputs from Ẽ epochs
ago); before that a step is the base optimizer's.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional
from torch.optim import Optimizer

from looksam.optim._contract import LossTermMethod, tensor_bytes

#: The epoch stamp of a bank row never written.
_NEVER = torch.iinfo(torch.int64).min


def _check_number(name: str, value: float, *, positive: bool, meaning: str) -> float:
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if (
        bad
        or not (value > 0 if positive else value >= 0)
        or value != value
        or value == float("inf")
    ):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound} ({meaning}), got {value!r}")
    return float(value)


def _check_int(name: str, value: int, low: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low} ({meaning}), got {value!r}")
    return int(value)


def trajectory_kl(logits: Tensor, reference: Tensor, temperature: float) -> Tensor:
    """τ²·KL(softmax(ẑ/τ) ‖ softmax(z/τ)) per example (summed over classes); ẑ carries no grad."""
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half precision: in fp32
    log_p = functional.log_softmax(logits.to(dtype) / temperature, dim=1)
    log_q = functional.log_softmax(reference.to(dtype) / temperature, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    return kl * temperature**2


class _TrajectoryLoss(LossTermMethod):
    """What SAF and MESA share: λ, τ, the start epoch and the per-example KL term."""

    def __init__(
        self, base: Optimizer, *, weight: float, temperature: float, start_epoch: int
    ) -> None:
        super().__init__(base)
        self.weight = _check_number(
            "weight", weight, positive=False, meaning="λ, the trajectory loss's coefficient"
        )
        self.temperature = _check_number(
            "temperature", temperature, positive=True, meaning="τ of the softened outputs"
        )
        self.start_epoch = _check_int(
            "start_epoch", start_epoch, 0, "the epoch the trajectory loss starts"
        )
        self.steps_per_epoch = 1

    def _active(self) -> bool:
        return self._always_on or self.epoch(self.steps_per_epoch) >= self.start_epoch

    def _term(self, logits: Tensor, reference: Tensor, valid: Tensor | None = None) -> Tensor:
        kl = trajectory_kl(logits, reference, self.temperature)
        if valid is not None:
            kl = kl * valid
        return self.weight * kl.mean().to(logits.dtype)


class SAF(_TrajectoryLoss):
    r"""Sharpness-Aware training for Free: a KL term to each example's outputs from Ẽ epochs ago.

    The output bank holds Ẽ + 1 epochs of logits for every training example (a ring of slots:
    this epoch's outputs are written while those of epoch e − Ẽ are read), plus the epoch each
    row was written in; a row that was not written in epoch e − Ẽ (the example fell in a dropped
    last batch) contributes nothing. Memory: (Ẽ + 1)·C·4 + (Ẽ + 1)·8 bytes per training example
    (``memory_bytes``). Cost: one forward-backward pass per step, plus a gather and a write of
    |B|·C numbers.

    Defaults: λ = 0.3 and τ = 5 (the authors' README: λ 0.3 or 0.8, τ "a very stable
    parameter"), Ẽ = 3 and a start at epoch 5 (their code's defaults). The official code keeps
    the bank in host memory as a NumPy array; here it lives on the model's device.

    Data-parallel training: each rank sees a different share of the examples in every epoch, so
    every rank writes every rank's rows (one all-gather of |B|·C logits and |B| ids per pass,
    through the ``gather`` hook the runner sets) and reads its own: the ranks' banks stay the same.

    Args:
        base: the optimizer that applies the update.
        weight: λ ≥ 0 (0: the base optimizer).
        temperature: τ > 0.
        lag: Ẽ ≥ 1, how many epochs back the reference outputs are.
        start_epoch: the first epoch (from 0) with the term; it also waits for Ẽ epochs of bank.
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        weight: float = 0.3,
        temperature: float = 5.0,
        lag: int = 3,
        start_epoch: int = 5,
    ) -> None:
        super().__init__(base, weight=weight, temperature=temperature, start_epoch=start_epoch)
        self.lag = _check_int("lag", lag, 1, "how many epochs back the reference outputs are")
        self.num_examples = 0
        self.bank: Tensor | None = None  # (Ẽ + 1, N, C) logits
        self.written: Tensor | None = None  # (Ẽ + 1, N): the epoch each row was written in

    def attach(self, model: nn.Module, *, num_examples: int, steps_per_epoch: int) -> None:
        del model
        self.num_examples = int(num_examples)
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def loss_term(self, inputs: Tensor, logits: Tensor, index: Tensor | None) -> Tensor:
        """Writes this epoch's logits into the bank; the KL to those of epoch e − Ẽ once on."""
        del inputs
        if index is None:
            raise ValueError("SAF needs each example's position in the training set (sample ids)")
        self._allocate(logits)
        assert self.bank is not None
        assert self.written is not None
        epoch = self.epoch(self.steps_per_epoch)
        slots = self.lag + 1
        rows, outputs = index, logits.detach()
        if self.gather is not None:  # data-parallel: every rank's rows, into every rank's bank
            rows, outputs = self.gather(index), self.gather(outputs)
        self.bank[epoch % slots, rows] = outputs.to(self.bank.dtype)
        self.written[epoch % slots, rows] = epoch
        if not self._active() or self.weight == 0.0:
            return logits.new_zeros(())
        past = (epoch - self.lag) % slots
        valid = (self.written[past, index] == epoch - self.lag).to(logits.dtype)
        return self._term(logits, self.bank[past, index], valid)

    def _allocate(self, logits: Tensor) -> None:
        if self.bank is not None:
            return
        if self.num_examples < 1:
            raise RuntimeError("SAF.attach(...) must be called with the training set's size first")
        slots, classes = self.lag + 1, logits.shape[1]
        dtype = torch.promote_types(logits.dtype, torch.float32)  # fp32, or fp64 for fp64 models
        self.bank = torch.zeros(
            slots, self.num_examples, classes, dtype=dtype, device=logits.device
        )
        # "never": no epoch e − Ẽ matches it, not even −1 in epoch Ẽ − 1
        self.written = torch.full(
            (slots, self.num_examples), _NEVER, dtype=torch.int64, device=logits.device
        )

    def memory_bytes(self) -> dict[str, int]:
        """The bank's size (logits and epoch stamps); empty until the first pass allocates it."""
        if self.bank is None or self.written is None:
            return {}
        return {"output bank": tensor_bytes([self.bank, self.written])}

    def bytes_per_example(self) -> int:
        """(Ẽ + 1) logits and (Ẽ + 1) epoch stamps for each training example."""
        if self.bank is None or self.written is None:
            return 0
        return (self.bank[:, 0].numel() * self.bank.element_size()) + (
            self.written[:, 0].numel() * self.written.element_size()
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"bank": self.bank, "written": self.written, "num_examples": self.num_examples}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.bank, self.written = extra.get("bank"), extra.get("written")
        self.num_examples = int(extra.get("num_examples", self.num_examples))

    def __repr__(self) -> str:
        return (
            f"SAF(base={type(self.base).__name__}, weight={self.weight}, temperature="
            f"{self.temperature}, lag={self.lag}, start_epoch={self.start_epoch})"
        )


class MESA(_TrajectoryLoss):
    r"""Memory-Efficient SAF: the KL term to the outputs of an EMA of the weights.

    After every base step the EMA model moves towards the weights, w̄ ← δ·w̄ + (1 − δ)·w (floating
    buffers, e.g. BatchNorm's running statistics, likewise; integer buffers are copied). Once on,
    each pass runs the EMA model forward (in eval mode, no gradient) on the same inputs.
    Memory: one copy of the model's parameters and buffers (``memory_bytes``). Cost: one
    forward-backward pass plus one forward of the EMA model per step: 1 + ⅓ passes.

    Defaults: λ = 0.3 and τ = 5 (the authors' MESA script), a start at epoch 5 (their code) and
    δ = 0.999 (the paper's ImageNet runs use timm's 0.9998 over ~1250 steps per epoch; the small
    workloads here run a few hundred steps in all, over which 0.9998 would hardly move).

    Args:
        base: the optimizer that applies the update.
        weight: λ ≥ 0 (0: the base optimizer, plus the EMA's bookkeeping).
        temperature: τ > 0.
        decay: δ ∈ [0, 1), the EMA's decay per step.
        start_epoch: the first epoch (from 0) with the term.
    """

    def __init__(
        self,
        base: Optimizer,
        *,
        weight: float = 0.3,
        temperature: float = 5.0,
        decay: float = 0.999,
        start_epoch: int = 5,
    ) -> None:
        super().__init__(base, weight=weight, temperature=temperature, start_epoch=start_epoch)
        self.decay = _check_number("decay", decay, positive=False, meaning="the EMA's decay")
        if self.decay >= 1.0:
            raise ValueError(
                f"decay must be a finite number in [0, 1) (the EMA's decay), got {decay!r}"
            )
        self.ema: nn.Module | None = None
        self._model_params: list[Tensor] = []
        self._ema_params: list[Tensor] = []
        self._float_buffers: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._other_buffers: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._pending: dict[str, Tensor] | None = None

    def attach(self, model: nn.Module, *, num_examples: int, steps_per_epoch: int) -> None:
        del num_examples
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        ema = copy.deepcopy(model).eval()
        for p in ema.parameters():
            p.requires_grad_(False)
        if self._pending is not None:
            ema.load_state_dict(self._pending)
            self._pending = None
        self.ema = ema
        self._model_params = list(model.parameters())
        self._ema_params = list(ema.parameters())
        pairs = list(zip(model.buffers(), ema.buffers(), strict=True))
        floats = [(m, e) for m, e in pairs if m.is_floating_point()]
        others = [(m, e) for m, e in pairs if not m.is_floating_point()]
        self._float_buffers = ([m for m, _ in floats], [e for _, e in floats])
        self._other_buffers = ([m for m, _ in others], [e for _, e in others])

    def loss_term(self, inputs: Tensor, logits: Tensor, index: Tensor | None) -> Tensor:
        """The KL to the EMA model's outputs on ``inputs`` once on; 0 before (no EMA forward)."""
        del index
        if self.ema is None:
            raise RuntimeError("MESA.attach(model, ...) must be called before training")
        if not self._active() or self.weight == 0.0:
            return logits.new_zeros(())
        with torch.no_grad():
            reference = self.ema(inputs)
        self.forward_examples += len(inputs)
        return self._term(logits, reference)

    def _after_step(self) -> None:
        if self.ema is None:
            return
        with torch.no_grad():
            # w̄ ← δ·w̄ + (1 − δ)·w, one foreach launch per list (the parameters' storage is
            # read where it is now: a wrapper may have re-pointed p.data for a pass and back).
            torch._foreach_lerp_(self._ema_params, self._model_params, 1.0 - self.decay)
            if self._float_buffers[0]:
                torch._foreach_lerp_(
                    self._float_buffers[1], self._float_buffers[0], 1.0 - self.decay
                )
            if self._other_buffers[0]:
                torch._foreach_copy_(self._other_buffers[1], self._other_buffers[0])

    def memory_bytes(self) -> dict[str, int]:
        """The EMA model's parameters and buffers."""
        if self.ema is None:
            return {}
        return {"EMA model": tensor_bytes([*self.ema.parameters(), *self.ema.buffers()])}

    def _extra_state(self) -> dict[str, Any]:
        return {"ema": None if self.ema is None else self.ema.state_dict()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        state = extra.get("ema")
        if state is None:
            return
        if self.ema is None:
            self._pending = state  # loaded into the EMA model when attach() builds it
        else:
            self.ema.load_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"MESA(base={type(self.base).__name__}, weight={self.weight}, temperature="
            f"{self.temperature}, decay={self.decay}, start_epoch={self.start_epoch})"
        )
