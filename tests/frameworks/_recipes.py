"""What the framework-recipe tests share: the documented code, model, data and loops to compare.

The recipes are the code blocks of ``docs/training-loops.md``. Every recipe is held to one
standard: it must train exactly like the README's own loop ("The optimizers in your training
loop": ``opt.step(closure)`` with BatchNorm statistics frozen in the perturbed pass), in float64,
over a run long enough for several look steps and reuse steps.

Plain functions, imported as ``from _recipes import ...`` (pytest puts this folder on
``sys.path``, as it does ``tests/optim`` for ``_models``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from looksam import frozen_bn_stats
from looksam.optim import create_optimizer, get_optimizer_info, list_optimizers

#: The page the framework recipes live on (the README links to it).
RECIPES = Path(__file__).resolve().parents[2] / "docs" / "training-loops.md"

IN_FEATURES, CLASSES, BATCH = 6, 3, 8
BATCHES_PER_EPOCH, EPOCHS = 6, 2
STEPS = BATCHES_PER_EPOCH * EPOCHS  # the recipes' LookSAM (k = 5) looks at steps 0, 5 and 10

#: Every registered optimizer that wraps a base optimizer: what the recipes are written for.
#: What a framework's loop can drive: the contract's methods need the harness's own loop.
WRAPPERS = [info.name for info in list_optimizers() if info.wraps_base and info.drop_in]


def recipe_python(heading: str) -> str:
    """The first ```` ```python ```` block of the section ``## {heading}`` of the recipes page."""
    text = RECIPES.read_text()
    section = text.index(f"\n## {heading}\n") + 1
    ends = [i for i in (text.find("\n## ", section), text.find("\n### ", section)) if i != -1]
    start = text.find("```python\n", section, min(ends, default=len(text)))
    assert start != -1, f"{RECIPES.name} section {heading!r} has no python block"
    start += len("```python\n")
    return text[start : text.index("```", start)]


def build_model(seed: int = 0) -> nn.Sequential:
    """A float64 MLP with BatchNorm, whose running statistics must stay out of the second pass."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, CLASSES)
        )
    return model.double()


def build_loader() -> DataLoader[tuple[Tensor, ...]]:
    """Fixed float64 data, served in order: every run sees the same batches."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(
        BATCHES_PER_EPOCH * BATCH, IN_FEATURES, dtype=torch.float64, generator=generator
    )
    y = x[:, :CLASSES].argmax(dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


def build_registered(name: str, params: Iterable[Any]) -> Any:
    """``name`` from the registry on SGD, for a run of ``STEPS`` steps.

    A look step every 2nd step where the optimizer has k; ``total_steps`` puts late-phase SAM's
    switch (⌈0.875·T⌉ = step 11) inside the run.
    """
    info = get_optimizer_info(name)
    k = {"k": 2} if any(hp.name == "k" for hp in info.hyperparameters) else {}
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the random methods (G-RST, RWP) seed their generators from it
        return create_optimizer(name, params, base="sgd", lr=0.05, total_steps=STEPS, **k)


def registered(name: str) -> Callable[[nn.Module], Any]:
    """``build_registered(name, ...)`` over a model's parameters."""
    return lambda model: build_registered(name, model.parameters())


def cross_entropy_closure(
    model: nn.Module, opt: Any, x: Tensor, y: Tensor
) -> Callable[[], Tensor]:
    """The README's closure: zero the gradients, forward (BatchNorm frozen at w + ε), backward."""

    def closure() -> Tensor:
        opt.zero_grad()
        with frozen_bn_stats(model, enabled=opt.in_second_pass):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def plain_loop(
    model: nn.Module, opt: Any, loader: Iterable[Any], epochs: int = EPOCHS
) -> list[Tensor]:
    """The README's own loop, which every recipe must reproduce; returns each step's loss."""
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            losses.append(opt.step(cross_entropy_closure(model, opt, x, y)))
    return losses


def base_only_loop(
    model: nn.Module, base: torch.optim.Optimizer, loader: Iterable[Any], epochs: int = EPOCHS
) -> None:
    """The same loop with the base optimizer alone: one pass, its own step, no perturbation."""
    for _ in range(epochs):
        for x, y in loader:
            base.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            base.step()


@contextmanager
def counting_forwards(model: nn.Module) -> Iterator[list[int]]:
    """Count the model's forward passes (one per closure call): ``[count]`` while inside."""
    count = [0]

    def hook(module: nn.Module, args: Any) -> None:
        count[0] += 1

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def assert_trains_like_the_plain_loop(
    model: nn.Module, passes: int, build: Callable[[nn.Module], Any]
) -> None:
    """A framework's run ended where the plain loop ends, and the sharpness-aware part mattered.

    Args:
        model: the model after the framework's run of ``EPOCHS`` epochs on ``build_loader()``.
        passes: the forward passes that run made.
        build: builds, on a fresh ``build_model()``, the optimizer that run used.
    """
    reference = build_model()
    with counting_forwards(reference) as ref_passes:
        plain_loop(reference, build(reference), build_loader())
    assert_same_state(model, reference)  # weights and BatchNorm statistics, bit for bit
    assert passes == ref_passes[0]  # the same steps took a second pass
    base_only = build_model()
    base_only_loop(base_only, build(base_only).base, build_loader())
    assert_moved_apart(model, base_only)  # g_s (or MSAM's w̃) changed the updates


def assert_same_state(actual: nn.Module, expected: nn.Module) -> None:
    """Weights and BatchNorm buffers equal bit for bit (the same float64 arithmetic ran)."""
    got, want = actual.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert_close(got[key], want[key], rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")


def assert_moved_apart(a: nn.Module, b: nn.Module) -> None:
    """The two runs end at different weights: the sharpness-aware gradient changed the updates."""
    with torch.no_grad():
        gap = max(
            float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
        )
    assert gap > 1e-6, f"the runs differ by only {gap:.2e}"
