"""The optimizer registry: one frozen description per optimizer, one factory for all of them.

The CLI, the runner and the sweeps build optimizers only through :func:`create_optimizer` and
read their ranges and costs only from :func:`list_optimizers`, so adding an entry here is all a
new optimizer needs to appear everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from looksam.optim._base import params_of
from looksam.optim.layer_looksam import LayerLookSAM
from looksam.optim.looksam import LookSAM
from looksam.optim.sam import SAM
from looksam.optim.samk import SAMk


@dataclass(frozen=True)
class HyperParameter:
    """One tunable argument: its default, its valid range and how a search should sample it."""

    name: str
    default: float | int | bool
    low: float | None = None
    high: float | None = None
    kind: str = "float"  # "float" | "int" | "bool"
    high_open: bool = False  # the upper bound itself is not allowed (Adam's betas < 1)
    help: str = ""

    def validate(self, value: Any) -> float | int | bool:
        """Return ``value`` converted to this kind, or raise ValueError naming the range."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.name} must be {self.describe_range()}, got {value!r}")
        if self.kind == "int" and (not float(value).is_integer()):
            raise ValueError(f"{self.name} must be {self.describe_range()}, got {value!r}")
        if not math.isfinite(value) or (self.low is not None and value < self.low):
            raise ValueError(f"{self.name} must be {self.describe_range()}, got {value!r}")
        if self.high is not None and (
            value > self.high or (self.high_open and value == self.high)
        ):
            raise ValueError(f"{self.name} must be {self.describe_range()}, got {value!r}")
        return int(value) if self.kind == "int" else float(value)

    def short_range(self) -> str:
        """Compact range for tables: '≥0', '[0,1]', 'int ≥1', 'bool'."""
        if self.kind == "bool":
            return "bool"
        prefix = "int " if self.kind == "int" else ""
        if self.low is not None and self.high is not None:
            return f"{prefix}[{self.low:g},{self.high:g}{')' if self.high_open else ']'}"
        return f"{prefix}≥{self.low:g}" if self.low is not None else prefix.strip() or "any"

    def describe_range(self) -> str:
        """Human-readable allowed range, e.g. 'an integer >= 1' or 'a number in [0, 1)'."""
        what = "an integer" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            close = ")" if self.high_open else "]"
            return f"{what} in [{self.low:g}, {self.high:g}{close}"
        if self.low is not None:
            return f"{what} >= {self.low:g}"
        return what


def _rho() -> HyperParameter:
    return HyperParameter("rho", 0.05, 0.0, None, help="perturbation radius ρ")


def _k() -> HyperParameter:
    return HyperParameter("k", 5, 1, None, kind="int", help="g_s every k-th step")


def _alpha() -> HyperParameter:
    return HyperParameter("alpha", 0.7, 0.0, None, help="weight α of the reused g_v")


_BASE_ARGS: dict[str, tuple[HyperParameter, ...]] = {
    "sgd": (
        HyperParameter("lr", 0.05, 0.0, None, help="learning rate"),
        HyperParameter("momentum", 0.9, 0.0, 1.0, help="heavy-ball momentum"),
        HyperParameter("weight_decay", 5e-4, 0.0, None, help="L2 penalty"),
        HyperParameter("nesterov", False, kind="bool", help="Nesterov momentum"),
    ),
    "adamw": (
        HyperParameter("lr", 1e-3, 0.0, None, help="learning rate"),
        HyperParameter("weight_decay", 0.05, 0.0, None, help="decoupled weight decay"),
        HyperParameter("beta1", 0.9, 0.0, 1.0, high_open=True, help="first-moment decay"),
        HyperParameter("beta2", 0.999, 0.0, 1.0, high_open=True, help="second-moment decay"),
    ),
    "lamb": (
        HyperParameter("lr", 2e-3, 0.0, None, help="learning rate"),
        HyperParameter("weight_decay", 0.02, 0.0, None, help="decoupled weight decay"),
        HyperParameter("beta1", 0.9, 0.0, 1.0, high_open=True, help="first-moment decay"),
        HyperParameter("beta2", 0.999, 0.0, 1.0, high_open=True, help="second-moment decay"),
    ),
}


def _make_sgd(params: Iterable[Any], hp: Mapping[str, Any]) -> Optimizer:
    return torch.optim.SGD(
        params,
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        nesterov=hp["nesterov"] and hp["momentum"] > 0,
    )


def _make_adamw(params: Iterable[Any], hp: Mapping[str, Any]) -> Optimizer:
    return torch.optim.AdamW(
        params, lr=hp["lr"], weight_decay=hp["weight_decay"], betas=(hp["beta1"], hp["beta2"])
    )


def _make_lamb(params: Iterable[Any], hp: Mapping[str, Any]) -> Optimizer:
    from timm.optim import Lamb  # imported lazily: timm takes seconds to import

    return Lamb(
        params, lr=hp["lr"], weight_decay=hp["weight_decay"], betas=(hp["beta1"], hp["beta2"])
    )


_BASE_FACTORIES: dict[str, Callable[[Iterable[Any], Mapping[str, Any]], Optimizer]] = {
    "sgd": _make_sgd,
    "adamw": _make_adamw,
    "lamb": _make_lamb,
}

BASE_OPTIMIZERS: tuple[str, ...] = tuple(_BASE_FACTORIES)


@dataclass(frozen=True)
class OptimizerInfo:
    """What the rest of looksam-bench needs to know about one optimizer."""

    name: str
    summary: str
    wraps_base: bool  # False for the base optimizers themselves
    hyperparameters: tuple[HyperParameter, ...]  # the wrapper's own (base ones are per base)
    cost_formula: str  # forward-backward passes per step, as people write it
    _passes: Callable[[int], float] = field(repr=False)
    _wrap: Callable[[Optimizer, Mapping[str, Any]], Optimizer] | None = field(
        default=None, repr=False
    )
    display_name: str = ""  # how reports name it ("" : the registry name)
    #: Its place in the SAM comparison: "full" (the method the cheap variants approximate),
    #: "approximation" (a cheap variant findings compare with the full one) or "none".
    sam_role: str = "none"

    @property
    def label(self) -> str:
        """The name reports print."""
        return self.display_name or self.name

    def passes_per_step(self, k: int = 5) -> float:
        """Forward-backward passes per optimizer step (k is ignored where it does not apply)."""
        return self._passes(k)

    def all_hyperparameters(self, base: str | None = None) -> tuple[HyperParameter, ...]:
        """The wrapper's hyperparameters followed by those of ``base`` (or of itself)."""
        base_name = (base or "sgd") if self.wraps_base else self.name
        return self.hyperparameters + _BASE_ARGS[base_name]


_REGISTRY: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo(
            "sgd",
            "SGD with (Nesterov) momentum",
            False,
            (),
            "1",
            lambda k: 1.0,
            display_name="SGD",
        ),
        OptimizerInfo(
            "adamw",
            "AdamW (decoupled weight decay)",
            False,
            (),
            "1",
            lambda k: 1.0,
            display_name="AdamW",
        ),
        OptimizerInfo(
            "lamb",
            "LAMB, layer-wise adaptive (timm)",
            False,
            (),
            "1",
            lambda k: 1.0,
            display_name="LAMB",
        ),
        OptimizerInfo(
            "sam",
            "SAM: g_s = ∇L(w + ρg/‖g‖) every step (adaptive=ASAM)",
            True,
            (_rho(), HyperParameter("adaptive", False, kind="bool", help="ASAM: T = |w|")),
            "2",
            lambda k: 2.0,
            lambda base, hp: SAM(base, rho=hp["rho"], adaptive=hp["adaptive"]),
            display_name="SAM",
            sam_role="full",
        ),
        OptimizerInfo(
            "samk",
            "SAM every k steps, plain g in between (naive baseline)",
            True,
            (_rho(), _k()),
            "1 + 1/k",
            lambda k: 1.0 + 1.0 / k,
            lambda base, hp: SAMk(base, rho=hp["rho"], k=hp["k"]),
            display_name="SAM-k",
            sam_role="approximation",
        ),
        OptimizerInfo(
            "looksam",
            "LookSAM: g_s every k steps, reuses g_v in between",
            True,
            (_rho(), _k(), _alpha()),
            "1 + 1/k",
            lambda k: 1.0 + 1.0 / k,
            lambda base, hp: LookSAM(base, rho=hp["rho"], k=hp["k"], alpha=hp["alpha"]),
            display_name="LookSAM",
            sam_role="approximation",
        ),
        OptimizerInfo(
            "layerlooksam",
            "Look-LayerSAM: LookSAM with layer-wise ρ‖w_l‖/‖g_l‖",
            True,
            (_rho(), _k(), _alpha()),
            "1 + 1/k",
            lambda k: 1.0 + 1.0 / k,
            lambda base, hp: LayerLookSAM(base, rho=hp["rho"], k=hp["k"], alpha=hp["alpha"]),
            display_name="Look-LayerSAM",
            sam_role="approximation",
        ),
    )
}


def list_optimizers() -> list[OptimizerInfo]:
    """Every registered optimizer, base optimizers first."""
    return list(_REGISTRY.values())


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name``; ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(_REGISTRY)}"
        ) from None


def create_optimizer(
    name: str,
    params_or_model: torch.nn.Module | Iterable[Any],
    *,
    base: str | None = None,
    **hyperparameters: Any,
) -> Optimizer:
    """Build a registered optimizer over a model's parameters (or params / param groups).

    Args:
        name: one of :func:`list_optimizers` (``sgd``, ``adamw``, ``lamb``, ``sam``, ``samk``,
            ``looksam``, ``layerlooksam``).
        params_or_model: an ``nn.Module``, an iterable of tensors, or param-group dicts.
        base: for the SAM family, the base optimizer that applies the update (default ``sgd``).
        **hyperparameters: the optimizer's and its base's hyperparameters (``lr``, ``rho``,
            ``k``…); anything omitted takes the registry default.

    Raises:
        ValueError: unknown name, base or hyperparameter, or a value outside its range.

    Example::

        opt = create_optimizer("looksam", model, base="sgd", lr=0.05, rho=0.1, k=5, alpha=0.7)
    """
    info = get_optimizer_info(name)
    if info.wraps_base:
        base_name = "sgd" if base is None else base
        if base_name not in _BASE_FACTORIES:
            raise ValueError(
                f"unknown base optimizer {base_name!r} for {name}; choose one of: "
                f"{', '.join(BASE_OPTIMIZERS)}"
            )
    elif base is not None:
        raise ValueError(f"{name} is a base optimizer and takes no base= (got {base!r})")
    else:
        base_name = name
    known = {hp.name: hp for hp in info.all_hyperparameters(base_name)}
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {name}"
            f"{f' with base {base_name}' if info.wraps_base else ''}; valid: {', '.join(known)}"
        )
    values = {
        key: hp.validate(hyperparameters[key]) if key in hyperparameters else hp.default
        for key, hp in known.items()
    }
    base_opt = _BASE_FACTORIES[base_name](params_of(params_or_model), values)
    if info._wrap is None:
        return base_opt
    return info._wrap(base_opt, values)
