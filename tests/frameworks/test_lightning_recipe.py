"""The PyTorch Lightning recipe of docs/training-loops.md trains exactly like the plain loop.

Lightning is not installed: ``_lightning_standin`` reproduces how it calls an optimizer and its
closure (its docstring cites the Lightning source it follows), and the page's code block is
executed against it as written. What Lightning does that matters here:

* manual optimization: ``self.optimizers()`` is a wrapper whose ``step(closure)`` passes the
  closure on, wrapped, and counts the step; ``step()`` without one passes a closure that
  computes nothing;
* automatic optimization: the closure runs ``training_step`` and the backward pass on every call.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _lightning_standin import LightningModule, Trainer, install
from _recipes import (
    EPOCHS,
    STEPS,
    WRAPPERS,
    assert_trains_like_the_plain_loop,
    build_loader,
    build_model,
    build_registered,
    counting_forwards,
    plain_loop,
    recipe_python,
    registered,
)
from torch import Tensor, nn

from looksam import frozen_bn_stats
from looksam.optim import get_optimizer_info, list_optimizers

#: Registered optimizers whose every k-th step (the first included) takes a second pass.
LOOKING = [
    i.name
    for i in list_optimizers()
    if i.wraps_base and i.drop_in and i.fixed_schedule and i.pass_range()[1] > 1
]


def recipe_module(monkeypatch: pytest.MonkeyPatch) -> type[LightningModule]:
    """The LightningModule class the documented code block defines, built on the stand-in."""
    install(monkeypatch)
    namespace: dict[str, Any] = {}
    exec(
        compile(recipe_python("PyTorch Lightning"), "recipe: PyTorch Lightning", "exec"), namespace
    )
    (cls,) = [
        v for v in namespace.values() if isinstance(v, type) and issubclass(v, LightningModule)
    ]
    return cls


def fit(module: LightningModule) -> Trainer:
    trainer = Trainer(max_epochs=EPOCHS)
    trainer.fit(module, build_loader())
    return trainer


def test_the_documented_recipe_trains_like_the_plain_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = recipe_module(monkeypatch)
    model = build_model()
    module = recipe(model)
    with counting_forwards(model) as passes:
        trainer = fit(module)
    sam: Any = trainer.optimizers[0]

    def recipe_optimizer(fresh: nn.Module) -> Any:  # the documented one, on an unfitted module
        return recipe(fresh).configure_optimizers()

    assert_trains_like_the_plain_loop(model, passes[0], recipe_optimizer)
    assert passes[0] == STEPS + len(range(0, STEPS, sam.k))  # a second pass on each look step
    assert sam.steps_done == trainer.global_step == STEPS  # Lightning counted every step
    assert trainer.before_optimizer_step_calls == passes[0]  # its hooks ran after each pass
    reference = build_model()
    last_loss = plain_loop(reference, recipe_optimizer(reference), build_loader())[-1]
    assert torch.equal(module.logged["train_loss"], last_loss)  # the loss at w, not w + ε


@pytest.mark.parametrize("name", WRAPPERS)
def test_the_recipe_trains_every_registered_optimizer_like_the_plain_loop(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    documented = recipe_module(monkeypatch)

    class Recipe(documented):  # type: ignore[valid-type, misc]
        def configure_optimizers(self) -> Any:
            return build_registered(name, self.parameters())

    model = build_model()
    with counting_forwards(model) as passes:
        trainer = fit(Recipe(model))

    assert_trains_like_the_plain_loop(model, passes[0], registered(name))
    if get_optimizer_info(name).pass_range()[1] > 1:
        assert passes[0] > STEPS
    assert trainer.global_step == STEPS


class AutomaticClassifier(LightningModule):
    """Automatic optimization: training_step returns the loss; Lightning's closure runs it."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.training_steps = 0

    def configure_optimizers(self) -> Any:
        return build_registered(self.name, self.parameters())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self.training_steps += 1
        x, y = batch
        sam: Any = self.optimizers().optimizer
        with frozen_bn_stats(self.model, enabled=sam.in_second_pass):
            return nn.functional.cross_entropy(self.model(x), y)


@pytest.mark.parametrize("name", WRAPPERS)
def test_automatic_optimization_trains_like_the_plain_loop(name: str) -> None:
    """The page says it works too: Lightning's closure re-runs training_step and backward."""
    model = build_model()
    module = AutomaticClassifier(model, name)
    trainer = fit(module)

    # one training_step per closure call: twice on look steps, like the plain loop's passes
    assert_trains_like_the_plain_loop(model, module.training_steps, registered(name))
    assert trainer.global_step == STEPS


class TwoPhaseClassifier(LightningModule):
    """The two-phase API finished by Lightning's ``opt.step()``, which the page warns against."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.automatic_optimization = False

    def configure_optimizers(self) -> Any:
        return build_registered(self.name, self.parameters())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        sam: Any = opt.optimizer
        sam.zero_grad()
        self.manual_backward(nn.functional.cross_entropy(self.model(x), y))
        if sam.is_look_step:
            sam.first_step()
            with frozen_bn_stats(self.model):
                self.manual_backward(nn.functional.cross_entropy(self.model(x), y))
        opt.step()  # Lightning hands the optimizer its own closure, which computes nothing


@pytest.mark.parametrize("name", LOOKING)
def test_the_two_phase_api_through_lightnings_step_raises_the_clear_error(name: str) -> None:
    model = build_model()
    before = [p.detach().clone() for p in model.parameters()]
    module = TwoPhaseClassifier(model, name)
    trainer = Trainer(max_epochs=1)
    with pytest.raises(RuntimeError, match="second forward-backward pass produced no gradient"):
        trainer.fit(module, build_loader())
    sam: Any = trainer.optimizers[0]
    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w)  # w exactly, not w + ε
    assert sam.steps_done == trainer.global_step == 0
    assert not sam.in_second_pass
