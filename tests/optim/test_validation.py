"""Constructor validation: every bad argument is a ValueError whose message names the argument."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from looksam import SAM, LayerLookSAM, LookSAM, SAMk, SharpnessAwareOptimizer
from looksam import optim as looksam_optim

WRAPPER_CLASSES = [SAM, SAMk, LookSAM, LayerLookSAM]
WITH_K = [SAMk, LookSAM, LayerLookSAM]
WITH_ALPHA = [LookSAM, LayerLookSAM]

BAD_RHO = [-0.1, -1, float("nan"), float("inf"), -float("inf"), "0.05", None, True, 1j]
BAD_K = [0, -3, 2.0, 1.5, True, False, "5", None, float("nan"), np.float64(3.0)]
BAD_ALPHA = [-0.5, float("nan"), float("inf"), "0.7", None, True]
BAD_ADAPTIVE = ["yes", 1, 0, None]


def _base() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)


@pytest.mark.parametrize("rho", BAD_RHO, ids=repr)
@pytest.mark.parametrize("cls", WRAPPER_CLASSES, ids=lambda c: c.__name__)
def test_bad_rho(cls: type, rho: Any) -> None:
    with pytest.raises(ValueError, match="rho"):
        cls(_base(), rho=rho)


@pytest.mark.parametrize("k", BAD_K, ids=repr)
@pytest.mark.parametrize("cls", WITH_K, ids=lambda c: c.__name__)
def test_bad_k(cls: type, k: Any) -> None:
    with pytest.raises(ValueError, match=r"\bk\b"):
        cls(_base(), k=k)


@pytest.mark.parametrize("alpha", BAD_ALPHA, ids=repr)
@pytest.mark.parametrize("cls", WITH_ALPHA, ids=lambda c: c.__name__)
def test_bad_alpha(cls: type, alpha: Any) -> None:
    with pytest.raises(ValueError, match="alpha"):
        cls(_base(), alpha=alpha)


@pytest.mark.parametrize("adaptive", BAD_ADAPTIVE, ids=repr)
def test_bad_adaptive(adaptive: Any) -> None:
    with pytest.raises(ValueError, match="adaptive"):
        SAM(_base(), adaptive=adaptive)


BAD_BASES = {
    "parameter list": lambda: [torch.nn.Parameter(torch.zeros(3))],
    "model": lambda: torch.nn.Linear(2, 2),
    "optimizer class": lambda: torch.optim.SGD,
    "None": lambda: None,
}


@pytest.mark.parametrize("make_base", BAD_BASES.values(), ids=list(BAD_BASES))
@pytest.mark.parametrize("cls", WRAPPER_CLASSES, ids=lambda c: c.__name__)
def test_base_must_be_an_optimizer_instance(cls: type, make_base: Any) -> None:
    with pytest.raises(ValueError, match="base"):
        cls(make_base())


@pytest.mark.parametrize("outer", WRAPPER_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("inner", WRAPPER_CLASSES, ids=lambda c: c.__name__)
def test_wrapping_a_wrapper_is_rejected(outer: type, inner: type) -> None:
    with pytest.raises(ValueError, match="base"):
        outer(inner(_base()))


@pytest.mark.parametrize("cls", WRAPPER_CLASSES, ids=lambda c: c.__name__)
def test_boundary_values_are_accepted(cls: type) -> None:
    """ρ = 0, k = 1, α = 0 and integral/NumPy numbers are valid; values are stored as given."""
    kwargs: dict[str, Any] = {"rho": 0}
    if cls in WITH_K:
        kwargs["k"] = np.int64(1)
    if cls in WITH_ALPHA:
        kwargs["alpha"] = 0
    opt = cls(_base(), **kwargs)
    assert opt.rho == 0.0
    assert opt.k == 1
    assert opt.alpha == 0.0
    assert isinstance(opt, SharpnessAwareOptimizer)
    assert isinstance(opt, torch.optim.Optimizer)


def test_defaults_match_the_issue() -> None:
    """SAM(ρ=0.05, plain), SAMk(ρ=0.05, k=5), LookSAM/LayerLookSAM(ρ=0.05, k=5, α=0.7)."""
    assert (SAM(_base()).rho, SAM(_base()).k, SAM(_base()).adaptive) == (0.05, 1, False)
    assert (SAMk(_base()).rho, SAMk(_base()).k) == (0.05, 5)
    for cls in WITH_ALPHA:
        opt = cls(_base())
        assert (opt.rho, opt.k, opt.alpha) == (0.05, 5, 0.7)


def test_public_imports() -> None:
    """The four wrappers are the same objects from ``looksam`` and ``looksam.optim``."""
    for cls in WRAPPER_CLASSES:
        assert getattr(looksam_optim, cls.__name__) is cls
