"""Special cases that must collapse onto a simpler optimizer (float64 MLP, 7 steps, k = 3).

Each equivalence is checked on the final weights with tight tolerances, for an SGD (Nesterov
momentum, weight decay) base and an AdamW base. A control test makes sure the setup is sensitive
enough for these comparisons to fail when the optimizers really differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from looksam import SAM, LayerLookSAM, LookSAM, SAMk

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 7  # look steps at t = 0, 3, 6 for k = 3
TIGHT = {"rtol": 1e-12, "atol": 1e-14}

BaseFactory = Callable[[Any], torch.optim.Optimizer]
BASES: dict[str, BaseFactory] = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
}

Wrap = Callable[[torch.optim.Optimizer], torch.optim.Optimizer]

EQUIVALENT: dict[str, tuple[Wrap, Wrap]] = {
    "SAM(rho=0) == base": (lambda b: SAM(b, rho=0.0), lambda b: b),
    "ASAM(rho=0) == base": (lambda b: SAM(b, rho=0.0, adaptive=True), lambda b: b),
    "SAMk(rho=0) == base": (lambda b: SAMk(b, rho=0.0, k=3), lambda b: b),
    "LookSAM(rho=0) == base": (lambda b: LookSAM(b, rho=0.0, k=3), lambda b: b),
    "LayerLookSAM(rho=0) == base": (lambda b: LayerLookSAM(b, rho=0.0, k=3), lambda b: b),
    "SAMk(k=1) == SAM": (lambda b: SAMk(b, rho=0.05, k=1), lambda b: SAM(b, rho=0.05)),
    "LookSAM(k=1) == SAM": (
        lambda b: LookSAM(b, rho=0.05, k=1, alpha=0.7),
        lambda b: SAM(b, rho=0.05),
    ),
    "LookSAM(alpha=0) == SAMk": (
        lambda b: LookSAM(b, rho=0.05, k=3, alpha=0.0),
        lambda b: SAMk(b, rho=0.05, k=3),
    ),
}

DIFFERENT: dict[str, tuple[Wrap, Wrap]] = {
    "SAM(rho=0.05) != base": (lambda b: SAM(b, rho=0.05), lambda b: b),
    "LookSAM(alpha=0.7) != SAMk": (
        lambda b: LookSAM(b, rho=0.05, k=3, alpha=0.7),
        lambda b: SAMk(b, rho=0.05, k=3),
    ),
    "LayerLookSAM != LookSAM": (
        lambda b: LayerLookSAM(b, rho=0.05, k=3),
        lambda b: LookSAM(b, rho=0.05, k=3),
    ),
    "ASAM != SAM": (lambda b: SAM(b, rho=0.05, adaptive=True), lambda b: SAM(b, rho=0.05)),
}


def _final_weights(train: Callable[..., Any], wrap: Wrap, base: BaseFactory) -> list[Any]:
    weights, _ = train(lambda ps: wrap(base(ps)), STEPS)
    return weights


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("case", EQUIVALENT)
def test_equivalent_configurations(case: str, base_name: str, train: Callable[..., Any]) -> None:
    """The left optimizer reproduces the right one's trajectory."""
    left, right = EQUIVALENT[case]
    base = BASES[base_name]
    assert_close(_final_weights(train, left, base), _final_weights(train, right, base), **TIGHT)


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("case", DIFFERENT)
def test_controls_differ(case: str, base_name: str, train: Callable[..., Any]) -> None:
    """Control: genuinely different optimizers end far apart, so the equivalences above bite."""
    left, right = DIFFERENT[case]
    base = BASES[base_name]
    a, b = _final_weights(train, left, base), _final_weights(train, right, base)
    gap = max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))
    assert gap > 1e-6
