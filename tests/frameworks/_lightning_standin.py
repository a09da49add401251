"""A stand-in for the parts of PyTorch Lightning that decide how an optimizer and its closure are
called, so the documented Lightning recipe runs in the tests without installing Lightning.

It reproduces the control flow of pytorch-lightning 2.6.6 (the same code is
``src/lightning/pytorch/...`` in Lightning-AI/pytorch-lightning); line numbers below are that
release's ``pytorch_lightning/...`` files:

* ``LightningOptimizer`` (``core/optimizer.py``). Its ``__init__`` re-classes the wrapper as a
  subclass of both itself and the wrapped optimizer's class (l. 56), so the optimizer's methods
  run with the *wrapper* as ``self``; ``__getattr__`` forwards every attribute the wrapper lacks
  to the optimizer (l. 170-171). ``step(closure=None)`` replaces a missing closure with
  ``do_nothing_closure`` and calls the strategy's ``optimizer_step`` with it (l. 146-156),
  between the ``_on_before_step``/``_on_after_step`` hooks, which the manual loop sets to count
  the step (``loops/optimization/manual.py`` l. 102-103, 131-137; ``trainer.global_step`` reads
  that count, ``loops/training_epoch_loop.py`` l. 113-117).
* ``Precision.optimizer_step`` for 32-bit and bf16 (``plugins/precision/precision.py``
  l. 96-123): ``optimizer.step(closure=partial(_wrap_closure, ...))``, where ``_wrap_closure``
  calls the closure, then the ``on_before_optimizer_step`` hooks. (fp16's GradScaler path,
  ``plugins/precision/amp.py`` l. 79-97, is not reproduced: it calls the closure once itself and
  steps without it.)
* Automatic optimization's ``Closure`` (``loops/optimization/automatic.py`` l. 128-147): *every*
  call runs ``training_step``, ``optimizer_zero_grad`` and the backward pass of the loss it
  returned (divided by ``accumulate_grad_batches``, 1 here); the loop hands it to the module's
  ``optimizer_step`` hook, whose default is ``optimizer.step(closure=optimizer_closure)``
  (``core/module.py`` l. 1368), and counts the step after the hook returns.
* ``LightningModule.manual_backward`` (``core/module.py`` l. 1117-1118): refused under automatic
  optimization, otherwise ``loss.backward()`` through the precision plugin.

Left out: devices, strategies, callbacks, logging beyond a dict, gradient clipping and
accumulation, validation. ``install`` registers this module as ``lightning`` (``import lightning
as L``, the recipe's spelling).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import pytest
import torch
from torch import Tensor, nn


class MisconfigurationException(Exception):  # noqa: N818 (Lightning's name)
    """Lightning's error for a misuse of its API."""


def do_nothing_closure() -> None:
    """What Lightning's ``step()`` hands the optimizer when it is given no closure."""


class LightningOptimizer:
    """The wrapper ``self.optimizers()`` returns (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, trainer: Trainer) -> None:
        self._optimizer = optimizer
        self._trainer = trainer
        self._on_before_step: Callable[[], None] = do_nothing_closure
        self._on_after_step: Callable[[], None] = do_nothing_closure
        # as Lightning does: isinstance(wrapper, type(optimizer)) holds, and the optimizer's
        # methods are found on the wrapper's class before __getattr__ is consulted
        self.__class__ = type(
            "Lightning" + type(optimizer).__name__, (LightningOptimizer, type(optimizer)), {}
        )

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        self._on_before_step()
        if closure is None:
            closure = do_nothing_closure
        output = self._trainer.precision_optimizer_step(self._optimizer, closure, **kwargs)
        self._on_after_step()
        return output

    def __getattr__(self, item: str) -> Any:
        return getattr(self._optimizer, item)


class LightningModule(nn.Module):
    """The module hooks the recipe relies on, with Lightning's defaults."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = True
        self.logged: dict[str, Any] = {}
        self._trainer: Trainer | None = None

    @property
    def trainer(self) -> Trainer:
        assert self._trainer is not None, "not attached to a Trainer"
        return self._trainer

    def optimizers(self) -> LightningOptimizer:
        return self.trainer.lightning_optimizer

    def manual_backward(self, loss: Tensor) -> None:
        if self.automatic_optimization:
            raise MisconfigurationException(
                "to use manual_backward, set automatic_optimization = False"
            )
        self.backward(loss)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def optimizer_zero_grad(
        self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer
    ) -> None:
        optimizer.zero_grad()

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: LightningOptimizer,
        optimizer_closure: Callable[[], Any],
    ) -> None:
        optimizer.step(closure=optimizer_closure)

    def log(self, name: str, value: Any) -> None:
        self.logged[name] = value


class _AutomaticClosure:
    """Automatic optimization's closure: training step, zero_grad, backward, on every call."""

    def __init__(
        self,
        module: LightningModule,
        optimizer: torch.optim.Optimizer,
        batch: Any,
        batch_idx: int,
        epoch: int,
    ) -> None:
        self._module = module
        self._optimizer = optimizer
        self._batch = batch
        self._batch_idx = batch_idx
        self._epoch = epoch

    @torch.enable_grad()
    def __call__(self) -> Tensor:
        closure_loss = self._module.training_step(self._batch, self._batch_idx) / 1
        self._module.optimizer_zero_grad(self._epoch, self._batch_idx, self._optimizer)
        self._module.backward(closure_loss)
        return closure_loss.detach().clone()


class Trainer:
    """Fits a module on one device: the training loop of manual or automatic optimization."""

    def __init__(self, max_epochs: int = 1) -> None:
        self.max_epochs = max_epochs
        self.global_step = 0
        #: How often the ``on_before_optimizer_step`` hooks ran (after each closure call).
        self.before_optimizer_step_calls = 0
        self.optimizers: list[torch.optim.Optimizer] = []
        self._lightning_optimizer: LightningOptimizer | None = None

    @property
    def lightning_optimizer(self) -> LightningOptimizer:
        assert self._lightning_optimizer is not None, "fit() has not started"
        return self._lightning_optimizer

    def fit(self, module: LightningModule, train_dataloaders: Iterable[Any]) -> None:
        module._trainer = self
        optimizer = module.configure_optimizers()
        self.optimizers = [optimizer]
        self._lightning_optimizer = wrapper = LightningOptimizer(optimizer, self)
        module.train()
        for epoch in range(self.max_epochs):
            for batch_idx, batch in enumerate(train_dataloaders):
                if module.automatic_optimization:
                    closure = _AutomaticClosure(module, optimizer, batch, batch_idx, epoch)
                    module.optimizer_step(epoch, batch_idx, wrapper, closure)
                    self.global_step += 1
                else:
                    wrapper._on_after_step = self._count_step
                    try:
                        module.training_step(batch, batch_idx)
                    finally:
                        wrapper._on_after_step = do_nothing_closure

    def _count_step(self) -> None:
        self.global_step += 1

    def precision_optimizer_step(
        self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any], **kwargs: Any
    ) -> Any:
        return optimizer.step(closure=partial(self._wrap_closure, closure), **kwargs)

    def _wrap_closure(self, closure: Callable[[], Any]) -> Any:
        result = closure()
        self.before_optimizer_step_calls += 1
        return result


def install(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Make ``import lightning`` give this stand-in for the rest of the test."""
    module = types.ModuleType("lightning")
    module.LightningModule = LightningModule  # type: ignore[attr-defined]
    module.Trainer = Trainer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lightning", module)
    return module
