"""The registry: names, costs, hyperparameters, and create_optimizer's inputs and errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from _models import closure_for
from torch import nn

import looksam
from looksam import (
    AESAM,
    ESAM,
    GRST,
    GSAM,
    KSAM,
    MESA,
    MSAM,
    RWP,
    SAF,
    AELookSAM,
    LatePhaseSAM,
)
from looksam.optim import (
    SAM,
    LayerLookSAM,
    LookSAM,
    SAMk,
    SharpnessAwareOptimizer,
    base_optimizers,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
)

NAMES = [
    *("sgd", "adamw", "lamb"),
    *("sam", "samk", "looksam", "layerlooksam", "msam", "aesam", "aelooksam", "gsam", "latesam"),
    *("esam", "ksam", "saf", "mesa", "grst", "rwp"),
]
WRAPPER_CLASSES = {
    "sam": SAM,
    "samk": SAMk,
    "looksam": LookSAM,
    "layerlooksam": LayerLookSAM,
    "msam": MSAM,
    "aesam": AESAM,
    "aelooksam": AELookSAM,
    "gsam": GSAM,
    "latesam": LatePhaseSAM,
    "esam": ESAM,
    "ksam": KSAM,
    "saf": SAF,
    "mesa": MESA,
    "grst": GRST,
    "rwp": RWP,
}
CASES = [
    (info.name, base)
    for info in list_optimizers()
    for base in (info.accepted_bases() if info.wraps_base else [None])
]


def test_names_and_order() -> None:
    """The built-in optimizers, base optimizers first; top-level exports."""
    infos = list_optimizers()
    assert [i.name for i in infos] == NAMES
    assert [i.wraps_base for i in infos] == [False] * 3 + [True] * (len(NAMES) - 3)
    assert set(base_optimizers()) == {"sgd", "adamw", "lamb"}
    assert looksam.create_optimizer is create_optimizer
    assert looksam.list_optimizers is list_optimizers


@pytest.mark.parametrize(("name", "base"), CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_create_and_step(
    name: str,
    base: str | None,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., Any],
    make_closure: Callable[..., Any],
) -> None:
    """Every optimizer × base builds over a model and one step(closure) moves every weight."""
    model = make_mlp()
    opt = create_optimizer(name, model, base=base, total_steps=10)
    if name in WRAPPER_CLASSES:
        assert type(opt) is WRAPPER_CLASSES[name]
        assert opt.param_groups is opt.base.param_groups
        expected_base = {"sgd": "SGD", "adamw": "AdamW", "lamb": "Lamb"}[base or "sgd"]
        assert type(opt.base).__name__ == expected_base
    else:
        assert not isinstance(opt, SharpnessAwareOptimizer)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = make_batch()
    loss = opt.step(closure_for(name, model, opt, x, y))
    assert torch.isfinite(loss)
    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.isfinite(p).all()
        assert not torch.equal(p, w)


def test_hyperparameters_reach_the_optimizer(make_mlp: Callable[..., nn.Sequential]) -> None:
    """Given values are applied to wrapper and base; omitted ones take the registry defaults."""
    opt = create_optimizer("looksam", make_mlp(), lr=0.2, momentum=0.8, rho=0.1, k=3, alpha=0.5)
    assert (opt.rho, opt.k, opt.alpha) == (0.1, 3, 0.5)
    group = opt.base.param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.2, 0.8)
    defaults = {hp.name: hp.default for hp in get_optimizer_info("looksam").all_hyperparameters()}
    assert group["weight_decay"] == defaults["weight_decay"]

    adam = create_optimizer("sam", make_mlp(), base="adamw", beta1=0.8, adaptive=True)
    assert adam.adaptive is True
    assert adam.base.param_groups[0]["betas"][0] == 0.8
    defaults = {hp.name: hp.default for hp in get_optimizer_info("sam").all_hyperparameters()}
    assert adam.rho == defaults["rho"]


def test_accepts_model_parameter_list_and_groups(make_mlp: Callable[..., nn.Sequential]) -> None:
    """A model, a list of tensors and param-group dicts (with per-group lr) all work."""
    model = make_mlp()
    params = list(model.parameters())
    from_model = create_optimizer("samk", model, lr=0.3)
    from_list = create_optimizer("samk", params, lr=0.3)
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}]
    from_groups = create_optimizer("samk", groups, lr=0.3)
    for opt in (from_model, from_list):
        assert len(opt.param_groups) == 1
        assert opt.param_groups[0]["params"] == params
    assert [g["lr"] for g in from_groups.param_groups] == [0.3, 0.01]
    assert [p for g in from_groups.param_groups for p in g["params"]] == params


@pytest.mark.parametrize(
    ("name", "k", "expected"),
    [
        ("sgd", 5, 1.0),
        ("adamw", 5, 1.0),
        ("lamb", 5, 1.0),
        ("sam", 5, 2.0),
        ("sam", 3, 2.0),
        ("samk", 5, 1.2),
        ("samk", 4, 1.25),
        ("looksam", 5, 1.2),
        ("looksam", 1, 2.0),
        ("layerlooksam", 2, 1.5),
    ],
)
def test_passes_per_step(name: str, k: int, expected: float) -> None:
    """Forward-backward passes per step: 1 for base optimizers, 2 for SAM, 1 + 1/k otherwise."""
    assert get_optimizer_info(name).passes_per_step({"k": k}) == pytest.approx(expected)


def test_passes_per_step_default_k_is_5() -> None:
    assert get_optimizer_info("looksam").passes_per_step() == pytest.approx(1.2)


SGD_HPS = ["lr", "momentum", "weight_decay", "nesterov"]


@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("sam", ["rho", "adaptive"]),
        ("samk", ["rho", "k"]),
        ("looksam", ["rho", "k", "alpha"]),
        ("layerlooksam", ["rho", "k", "alpha"]),
    ],
)
def test_hyperparameter_lists(name: str, own: list[str]) -> None:
    """A wrapper's own hyperparameters, then the chosen base's (sgd unless another is named)."""
    info = get_optimizer_info(name)
    assert [hp.name for hp in info.hyperparameters] == own
    assert [hp.name for hp in info.all_hyperparameters()] == [*own, *SGD_HPS]
    adamw = [hp.name for hp in info.all_hyperparameters("adamw")]
    assert adamw == [*own, "lr", "weight_decay", "beta1", "beta2"]


def test_base_optimizer_lists_only_its_own() -> None:
    """A base optimizer's entry carries its own hyperparameters, once."""
    info = get_optimizer_info("sgd")
    assert [hp.name for hp in info.hyperparameters] == SGD_HPS
    assert [hp.name for hp in info.all_hyperparameters()] == SGD_HPS


def test_registry_defaults_are_valid() -> None:
    """Every declared default passes its own validation (a sweep may start from them)."""
    for info in list_optimizers():
        for base in base_optimizers() if info.wraps_base else [None]:
            for hp in info.all_hyperparameters(base):
                assert hp.validate(hp.default) == hp.default


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="adamq") as excinfo:
        create_optimizer("adamq", [nn.Parameter(torch.zeros(2))])
    assert all(name in str(excinfo.value) for name in NAMES)
    with pytest.raises(ValueError, match="nope") as excinfo:
        get_optimizer_info("nope")
    assert all(name in str(excinfo.value) for name in NAMES)


def test_unknown_base_lists_valid_bases() -> None:
    with pytest.raises(ValueError, match="rmsprop") as excinfo:
        create_optimizer("looksam", [nn.Parameter(torch.zeros(2))], base="rmsprop")
    assert all(base in str(excinfo.value) for base in base_optimizers())


def test_base_optimizer_rejects_base() -> None:
    with pytest.raises(ValueError, match="base"):
        create_optimizer("sgd", [nn.Parameter(torch.zeros(2))], base="adamw")


@pytest.mark.parametrize(
    ("name", "base", "hp", "valid"),
    [
        ("looksam", None, {"beta1": 0.9}, ["rho", "k", "alpha", "lr", "momentum", "nesterov"]),
        ("sam", "adamw", {"k": 3}, ["rho", "adaptive", "lr", "beta1", "beta2"]),
        ("sgd", None, {"rho": 0.1}, ["lr", "momentum", "weight_decay", "nesterov"]),
    ],
)
def test_unknown_hyperparameter_lists_valid_ones(
    name: str, base: str | None, hp: dict[str, Any], valid: list[str]
) -> None:
    (bad,) = hp
    with pytest.raises(ValueError, match=bad) as excinfo:
        create_optimizer(name, [nn.Parameter(torch.zeros(2))], base=base, **hp)
    assert all(v in str(excinfo.value) for v in valid)


@pytest.mark.parametrize(
    ("name", "base", "hp"),
    [
        ("looksam", None, {"rho": -0.1}),
        ("looksam", None, {"rho": float("nan")}),
        ("looksam", None, {"k": 0}),
        ("looksam", None, {"k": 2.5}),
        ("looksam", None, {"k": True}),
        ("looksam", None, {"alpha": -1.0}),
        ("sam", None, {"adaptive": "yes"}),
        ("sgd", None, {"lr": -0.1}),
        ("sgd", None, {"momentum": 1.5}),
        ("sgd", None, {"nesterov": 1}),
        ("samk", "adamw", {"beta2": -0.1}),
        ("samk", "adamw", {"weight_decay": float("inf")}),
        ("lamb", None, {"beta1": 2.0}),
    ],
)
def test_out_of_range_values_name_the_range(
    name: str, base: str | None, hp: dict[str, Any]
) -> None:
    """Out-of-range values: ValueError naming the hyperparameter and its valid range."""
    (key,) = hp
    info = get_optimizer_info(name)
    (spec,) = [h for h in info.all_hyperparameters(base) if h.name == key]
    with pytest.raises(ValueError, match=key) as excinfo:
        create_optimizer(name, [nn.Parameter(torch.zeros(2))], base=base, **hp)
    if spec.kind != "bool":
        assert spec.describe_range() in str(excinfo.value)


@pytest.mark.parametrize(("name", "base"), [("adamw", None), ("looksam", "lamb")])
@pytest.mark.parametrize("key", ["beta1", "beta2"])
def test_declared_beta_range_is_usable(name: str, base: str | None, key: str) -> None:
    """Every value inside a declared range must build an optimizer that takes a finite step;
    a value the optimizer cannot use belongs outside the range (ValueError naming the key).

    Checked at the upper end of the betas' declared range."""
    (spec,) = [h for h in get_optimizer_info(name).all_hyperparameters(base) if h.name == key]
    assert spec.high is not None
    w = nn.Parameter(torch.ones(3))
    try:
        opt = create_optimizer(name, [w], base=base, **{key: spec.high})
    except ValueError as err:
        rejection = str(err)
    else:
        rejection = None
    if rejection is not None:
        assert key in rejection, f"{key}={spec.high} is inside the declared range: {rejection}"
        return
    for _ in range(2):
        opt.zero_grad()
        (w * w).sum().backward()
        if isinstance(opt, SharpnessAwareOptimizer) and opt.is_look_step:
            opt.first_step()
            (w * w).sum().backward()
        opt.step()
    assert torch.isfinite(w).all(), f"{key}={spec.high} is in the declared range but gives NaN"


# ---------------------------------------------------------------------- host reads a step may make


def test_only_adaptive_rules_may_read_one_value_per_step() -> None:
    allowances = {i.name: i.host_read_allowance for i in list_optimizers() if i.wraps_base}
    assert allowances.pop("aesam") == 1
    assert allowances.pop("aelooksam") == 1
    assert set(allowances.values()) == {0}  # late-phase SAM too: its phase is fixed in advance


def test_the_allowance_comes_from_the_registry_not_the_name() -> None:
    aesam = get_optimizer_info("aesam")
    assert replace(aesam, name="mine").host_read_allowance == 1
    assert replace(aesam, fixed_schedule=True).host_read_allowance == 0
    assert replace(aesam, passes=lambda hp: (1.5, 1.5)).host_read_allowance == 0


def test_the_diagnosis_draws_each_gradient_in_its_entrys_colour() -> None:
    from looksam.optim import DEFAULT_BASE, full_sam, gradient_colours
    from looksam.optim._registry import DIAGNOSED

    colours = gradient_colours()
    assert colours == {
        "g": get_optimizer_info(DEFAULT_BASE).colour,
        "g_s": full_sam().colour,
        "g_v": get_optimizer_info(DIAGNOSED).colour,
    }
    assert len(set(colours.values())) == 3
