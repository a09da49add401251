"""The Hugging Face Accelerate recipe of docs/training-loops.md trains exactly like the plain loop.

Accelerate is installed (the ``test`` extra) and its code runs for real, on the CPU, with the
page's code block executed as written. ``accelerator.prepare`` wraps the optimizer in an
``AcceleratedOptimizer``, whose ``step(closure)`` passes the closure on (without a GradScaler),
and ``accelerator.backward(loss)`` divides by ``gradient_accumulation_steps`` (1) and runs the
backward pass.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from _recipes import (
    EPOCHS,
    STEPS,
    WRAPPERS,
    assert_trains_like_the_plain_loop,
    build_loader,
    build_model,
    counting_forwards,
    recipe_python,
    registered,
)
from accelerate.optimizer import AcceleratedOptimizer
from torch import nn

from looksam.optim import get_optimizer_info

#: The documented block's one line that names the optimizer; the registry test swaps it.
OPTIMIZER_LINE = "opt = LookSAM(base, rho=0.05, k=5, alpha=0.7)\n"


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Accelerator()`` would take a GPU if there were one; the reference runs on the CPU."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")


def run_block(block: str, model: nn.Module, **names: Any) -> dict[str, Any]:
    """Execute a documented block with the names it expects (``model``, ``loader``, ``epochs``)."""
    namespace: dict[str, Any] = {"model": model, "loader": build_loader(), "epochs": EPOCHS}
    namespace.update(names)
    exec(compile(block, "recipe: Hugging Face Accelerate", "exec"), namespace)
    return namespace


def recipe_optimizer(block: str, model: nn.Module) -> Any:
    """The optimizer the documented block builds (its imports, ``base = ...``, ``opt = ...``)."""
    lines = [
        line
        for line in block.splitlines()
        if line.startswith(("import torch", "from looksam ", "base = ", "opt = "))
    ]
    assert len(lines) == 4, lines
    return run_block("\n".join(lines), model)["opt"]


def test_the_documented_recipe_trains_like_the_plain_loop() -> None:
    block = recipe_python("Hugging Face Accelerate")
    model = build_model()
    with counting_forwards(model) as passes:
        names = run_block(block, model)
    opt, sam = names["opt"], names["sam"]

    assert isinstance(opt, AcceleratedOptimizer)  # the recipe stepped through Accelerate's wrapper
    assert opt.optimizer is sam
    assert names["model"] is model  # one CPU process: prepare() kept the module as it was
    assert_trains_like_the_plain_loop(model, passes[0], partial(recipe_optimizer, block))
    assert passes[0] == STEPS + len(range(0, STEPS, sam.k))  # a second pass on each look step
    assert sam.steps_done == STEPS
    resumed = recipe_optimizer(block, build_model())
    resumed.load_state_dict(opt.state_dict())  # what accelerator.save_state() stores
    assert resumed.steps_done == STEPS


@pytest.mark.parametrize("name", WRAPPERS)
def test_the_recipe_trains_every_registered_optimizer_like_the_plain_loop(name: str) -> None:
    block = recipe_python("Hugging Face Accelerate")
    assert OPTIMIZER_LINE in block
    model = build_model()
    with counting_forwards(model) as passes:
        names = run_block(
            block.replace(OPTIMIZER_LINE, "opt = build(model)\n"), model, build=registered(name)
        )

    assert type(names["sam"]) is type(registered(name)(build_model()))  # the swap took effect
    assert_trains_like_the_plain_loop(model, passes[0], registered(name))
    if get_optimizer_info(name).pass_range()[1] > 1:
        assert passes[0] > STEPS
    assert names["sam"].steps_done == STEPS
