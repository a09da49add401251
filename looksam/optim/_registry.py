"""The optimizer registry: one frozen description per optimizer, one factory for all of them.

Everything the harness knows about an optimizer lives in its :class:`OptimizerInfo`: how to build
it, what a step costs, which hyperparameters it takes (with ranges, search ranges and help), how
reports name and colour it, and what it can do (take k, perturb per rank, need the run's length,
work under a GradScaler, stand in for SAM). The CLI, the runner, the sweeps and the reports read
only this, so :func:`register_optimizer` is all a new optimizer (built in or a user's plugin)
needs to appear everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.optim import Optimizer

from looksam.optim._base import params_of

SAM_ROLES = ("full", "approximation", "none")
HP_KINDS = ("float", "int", "bool")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True)
class HyperParameter:
    """One tunable argument: default, valid range, how a search samples it, how reports treat it.

    ``low``/``high`` bound what is *valid*; ``search`` (with ``log``) is the range a sweep searches
    when a spec asks for the registry's space, usually much narrower. ``sensitivity`` marks the
    knobs the HTML report draws sensitivity panels for.
    """

    name: str
    default: float | int | bool
    low: float | None = None
    high: float | None = None
    kind: str = "float"  # "float" | "int" | "bool"
    high_open: bool = False  # the upper bound itself is not allowed (Adam's betas < 1)
    help: str = ""
    search: tuple[float, float] | None = None  # the range a sweep searches by default
    log: bool = False  # search on a log scale
    sensitivity: bool = False  # reports draw accuracy and cost against it

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

    def check(self) -> None:
        """Raise ValueError if the description contradicts itself (a plugin's typo)."""
        if self.kind not in HP_KINDS:
            raise ValueError(f"hyperparameter {self.name}: kind must be one of {HP_KINDS}")
        self.validate(self.default)
        if self.search is not None:
            low, high = self.search
            if not low <= high or (self.log and low <= 0):
                raise ValueError(
                    f"hyperparameter {self.name}: search range {self.search} must have "
                    f"low <= high{' and low > 0 (log scale)' if self.log else ''}"
                )
            self.validate(low)
            self.validate(high)


#: A factory: (base optimizer or params, resolved hyperparameters[, total_steps=]) → optimizer.
Factory = Callable[..., Optimizer]
#: Forward-backward passes per step, from the resolved hyperparameters: (fewest, most).
Passes = Callable[[Mapping[str, Any]], tuple[float, float]]


def fixed_passes(count: float) -> Passes:
    """A cost that does not depend on the hyperparameters (1 for SGD, 2 for SAM)."""
    return lambda hp: (count, count)


def fixed_range(fewest: float, most: float) -> Passes:
    """An adaptive cost: the rule decides each step between ``fewest`` and ``most`` passes."""
    return lambda hp: (fewest, most)


def every_k_passes(hp: Mapping[str, Any]) -> tuple[float, float]:
    """1 + 1/k: one pass per step and a second one every k-th."""
    cost = 1.0 + 1.0 / hp["k"]
    return cost, cost


@dataclass(frozen=True, kw_only=True)
class OptimizerInfo:
    """What the rest of looksam-bench needs to know about one optimizer.

    Build it with keywords; ``dataclasses.replace`` on an existing entry and
    :func:`register_optimizer` make a variant of it.
    """

    name: str  # registry key: lower case, as typed on the command line
    summary: str  # one line for `looksam-bench optimizers`
    factory: Factory = field(repr=False)
    display_name: str = ""  # how reports name it ("": the registry name)
    colour: str = ""  # '#rrggbb' in every chart ("": the next free palette colour)
    paper: str = ""  # what it implements, short: "Foret et al., ICLR 2021"
    #: The optimizer's own hyperparameters (a wrapper's base adds its own on top).
    hyperparameters: tuple[HyperParameter, ...] = ()
    passes: Passes = field(default=fixed_passes(1.0), repr=False)
    cost_formula: str = "1"  # the cost as people write it: "2", "1 + 1/k", "1–2"
    #: True for the SAM family, which wraps a base optimizer (False: it is a base optimizer).
    wraps_base: bool = False
    #: The bases it accepts (empty: every registered base optimizer).
    bases: tuple[str, ...] = ()
    #: Its place in the SAM comparison: "full" (the method the cheap variants approximate),
    #: "approximation" (a cheap variant that findings compare with the full one) or "none".
    sam_role: str = "none"
    per_rank_perturbation: bool = False  # can perturb with each rank's own g (m-sharpness)
    needs_total_steps: bool = False  # its schedule needs the run's length (total_steps=)
    #: Whether any window of steps pays its expected passes (every k-th step, every step, never).
    #: False for a rule or a phase (AE-SAM, late-phase SAM): short timing windows replay the
    #: run's measured share of second passes instead of trusting the window's own.
    fixed_schedule: bool = True
    grad_scaler: bool = True  # works under fp16's GradScaler recipe
    #: Whether its steps keep every parameter's storage in place, as the CUDA graphs of
    #: torch.compile's "reduce-overhead" and "max-autotune" modes need. The SAM family points
    #: ``param.data`` at perturbed copies for a pass, so its entries say False.
    cuda_graphs: bool = True
    #: A base optimizer whose learning rate the workloads tune (they ship an SGD rate).
    uses_workload_lr: bool = False
    #: The training-method contract (``looksam.optim._contract``): what it needs from the loop.
    #: Per-example losses through a BatchClosure that can run a pass on a subset (ESAM, K-SAM).
    needs_per_sample_loss: bool = False
    #: A loss term of its own, added on every pass: the optimizer is a LossTermMethod (SAF, MESA).
    adds_loss_term: bool = False
    #: Each example's position in the training set, given to its loss term (SAF's output bank).
    needs_sample_index: bool = False
    #: The state it keeps beyond the base optimizer, as people write it ("" : none worth naming).
    memory_formula: str = ""

    @property
    def label(self) -> str:
        """The name reports print."""
        return self.display_name or self.name

    @property
    def loop_needs(self) -> tuple[str, ...]:
        """What the training loop must give it beyond a plain closure, in words (the contract's
        flags); empty for a drop-in wrapper."""
        needs = (
            (self.needs_per_sample_loss, "per-example losses and subset passes"),
            (self.adds_loss_term, "its loss term added"),
            (self.needs_sample_index, "sample ids"),
        )
        return tuple(words for needed, words in needs if needed)

    @property
    def drop_in(self) -> bool:
        """Whether ``step(closure)`` with a plain closure is all it needs: no per-example losses,
        no loss term (see ``looksam.optim._contract``). Any training loop, a framework's
        included, can drive such an entry unchanged; the others need the loop's side too."""
        return not self.loop_needs

    @property
    def takes_k(self) -> bool:
        """Whether it has a look interval k (SAM-k, LookSAM, …): scaling sweeps vary it."""
        return any(hp.name == "k" for hp in self.hyperparameters)

    def second_pass_share(self, hyperparameters: Mapping[str, Any] | None = None) -> float:
        """Expected share of steps that take a second pass (passes per step − 1, in [0, 1])."""
        return min(1.0, max(0.0, self.passes_per_step(hyperparameters) - 1.0))

    @property
    def host_read_allowance(self) -> int:
        """Host reads (syncs, on an accelerator) one step of this optimizer may make.

        An optimizer whose second pass a rule decides at run time (``fixed_schedule`` False)
        *and* whose passes per step span a range (``pass_range()`` low != high, e.g. AE-SAM's
        1-2) must read one value per step to take that decision: 1. Everything else (a fixed
        schedule such as SAM, LookSAM, SAM-k; a phase fixed in advance such as late-phase SAM,
        whose pass range is one number) keeps every value on the device: 0.
        """
        low, high = self.pass_range()
        return 1 if not self.fixed_schedule and low != high else 0

    @property
    def approximates_sam(self) -> bool:
        """A cheap variant that findings compare with full SAM."""
        return self.sam_role == "approximation"

    def defaults(self, base: str | None = None) -> dict[str, Any]:
        """Every hyperparameter (its own and its base's) at its default."""
        return {hp.name: hp.default for hp in self.all_hyperparameters(base)}

    def pass_range(self, hyperparameters: Mapping[str, Any] | None = None) -> tuple[float, float]:
        """(fewest, most) forward-backward passes per step; omitted values take defaults."""
        values = {hp.name: hp.default for hp in self.hyperparameters}
        values.update(hyperparameters or {})
        return self.passes(values)

    def passes_per_step(self, hyperparameters: Mapping[str, Any] | None = None) -> float:
        """Expected passes per step: exact for fixed schedules, mid-range for adaptive ones."""
        low, high = self.pass_range(hyperparameters)
        return (low + high) / 2

    def all_hyperparameters(self, base: str | None = None) -> tuple[HyperParameter, ...]:
        """The wrapper's hyperparameters followed by those of ``base`` (or of itself)."""
        if not self.wraps_base:
            return self.hyperparameters
        return self.hyperparameters + get_optimizer_info(base or DEFAULT_BASE).hyperparameters

    def accepted_bases(self) -> tuple[str, ...]:
        """The base optimizers it can wrap, in registry order."""
        return tuple(b for b in base_optimizers() if not self.bases or b in self.bases)


#: The base optimizer a wrapper gets when none is named, and the one speeds are compared with.
DEFAULT_BASE = "sgd"
#: What `run` trains when no optimizer is named.
DEFAULT_OPTIMIZER = "looksam"
#: The method whose premise `diagnose` measures (it reuses g_v between looks).
DIAGNOSED = "looksam"
#: The line-ups commands compare when the user names none.
LINEUPS: dict[str, tuple[str, ...]] = {
    "sweep": ("sgd", "sam", "samk", "looksam"),  # a sweep spec without [optimizers] names
    "scaling": ("sgd", "looksam"),  # data-parallel scaling runs
}

_REGISTRY: dict[str, OptimizerInfo] = {}


def _check_info(info: OptimizerInfo) -> None:
    """Raise ValueError, naming the field, for an entry that cannot work."""
    where = f"optimizer {info.name!r}"
    if not isinstance(info.name, str) or not _NAME.match(info.name):
        raise ValueError(
            f"{where}: the name must be lower case letters, digits, '-' or '_', starting with a "
            "letter"
        )
    if not callable(info.factory):
        raise ValueError(f"{where}: factory must be callable")
    if info.colour and not _COLOUR.match(info.colour):
        raise ValueError(f"{where}: colour must look like '#0072B2', got {info.colour!r}")
    if info.sam_role not in SAM_ROLES:
        raise ValueError(f"{where}: sam_role must be one of {', '.join(SAM_ROLES)}")
    names = [hp.name for hp in info.hyperparameters]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: hyperparameter names repeat: {names}")
    for hp in info.hyperparameters:
        hp.check()
    if not info.wraps_base and info.bases:
        raise ValueError(f"{where}: only a wrapper (wraps_base=True) can restrict its bases")
    for base in info.bases:
        if base not in _REGISTRY or _REGISTRY[base].wraps_base:
            raise ValueError(f"{where}: {base!r} is not a registered base optimizer")
    if info.needs_sample_index and not info.adds_loss_term:
        raise ValueError(
            f"{where}: needs_sample_index gives the ids to a loss term: set adds_loss_term too"
        )
    if (info.needs_per_sample_loss or info.adds_loss_term) and not info.wraps_base:
        raise ValueError(
            f"{where}: a method that needs per-example losses or adds a loss term wraps a base "
            "optimizer (wraps_base=True)"
        )
    low, high = info.pass_range()
    if not 0 < low <= high:
        raise ValueError(f"{where}: passes per step must satisfy 0 < fewest <= most")


def register_optimizer(info: OptimizerInfo, *, replace_existing: bool = False) -> OptimizerInfo:
    """Add ``info`` to the registry so every command can use it; returns the stored entry.

    A copy made with ``dataclasses.replace(get_optimizer_info("sam"), name="mine")`` keeps the
    original's display name and colour; those must stay unique across the registry, so the copy
    is stored with its registry name as label and the next free palette colour instead.

    Raises:
        ValueError: a malformed entry, or a name that is taken (unless ``replace_existing``).
    """
    if not isinstance(info, OptimizerInfo):
        raise ValueError(f"register_optimizer takes an OptimizerInfo, got {type(info).__name__}")
    if info.name in _REGISTRY and not replace_existing:
        raise ValueError(
            f"optimizer {info.name!r} is already registered; pick another name or pass "
            "replace_existing=True"
        )
    _check_info(info)
    others = [i for i in _REGISTRY.values() if i.name != info.name]
    if info.display_name and info.display_name in {i.label for i in others}:
        info = replace(info, display_name="")
    if info.colour and info.colour.upper() in {i.colour.upper() for i in others}:
        info = replace(info, colour="")
    _REGISTRY[info.name] = info
    return info


def list_optimizers() -> list[OptimizerInfo]:
    """Every registered optimizer, in registration order (base optimizers first)."""
    return list(_REGISTRY.values())


def base_optimizers() -> tuple[str, ...]:
    """Names of the registered optimizers that a SAM-family wrapper can wrap."""
    return tuple(name for name, info in _REGISTRY.items() if not info.wraps_base)


def gradient_colours() -> dict[str, str]:
    """The colours the diagnosis draws g, g_s and g_v in: those of the entries each belongs to
    (the default base's plain gradient, full SAM's perturbed one, the diagnosed method's g_v), so
    a reader who knows the sweep reports knows the lines."""
    return {
        "g": get_optimizer_info(DEFAULT_BASE).colour,
        "g_s": full_sam().colour,
        "g_v": get_optimizer_info(DIAGNOSED).colour,
    }


def shared_hyperparameter(name: str) -> HyperParameter:
    """The spec of a hyperparameter several entries share (ρ, k, α), from the first entry that
    declares it: what a command-line option or a suite means by it when no optimizer is named."""
    return next(hp for i in _REGISTRY.values() for hp in i.hyperparameters if hp.name == name)


def option_help(name: str) -> str:
    """Help for a command-line option that sets hyperparameter ``name`` for any optimizer: the
    registry's own words and range, so that every command and ``optimizers`` say the same."""
    spec = shared_hyperparameter(name)
    return f"{spec.help[:1].upper()}{spec.help[1:]}, {spec.describe_range()}."


def full_sam() -> OptimizerInfo:
    """The entry the cheap variants approximate (``sam_role == "full"``)."""
    return next(i for i in _REGISTRY.values() if i.sam_role == "full")


def sensitivity_axes(name: str) -> tuple[str, ...]:
    """The hyperparameters reports draw sensitivity panels for: ``name``'s, or, for a name this
    process has not registered (a plugin's sweep read without its plugin), every entry's."""
    infos = [_REGISTRY[name]] if name in _REGISTRY else list(_REGISTRY.values())
    return tuple(
        dict.fromkeys(hp.name for i in infos for hp in i.hyperparameters if hp.sensitivity)
    )


def integer_hyperparameters() -> frozenset[str]:
    """Names of the hyperparameters any registered optimizer declares as integers (k…)."""
    return frozenset(
        hp.name for i in _REGISTRY.values() for hp in i.hyperparameters if hp.kind == "int"
    )


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name``; ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(_REGISTRY)}"
        ) from None


def resolve_base(name: str, base: str | None) -> str | None:
    """The base ``name`` wraps (``None`` for a base optimizer); ValueError for a wrong one."""
    info = get_optimizer_info(name)
    if not info.wraps_base:
        if base is not None:
            raise ValueError(f"{name} is a base optimizer and takes no base= (got {base!r})")
        return None
    base_name = DEFAULT_BASE if base is None else base
    accepted = info.accepted_bases()
    if base_name not in accepted:
        raise ValueError(
            f"unknown base optimizer {base_name!r} for {name}; choose one of: "
            f"{', '.join(accepted)}"
        )
    return base_name


def resolve_hyperparameters(
    name: str, base: str | None, hyperparameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Every hyperparameter of ``name`` on ``base``: given values validated, the rest defaults."""
    info = get_optimizer_info(name)
    base_name = resolve_base(name, base)
    known = {hp.name: hp for hp in info.all_hyperparameters(base_name)}
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {name}"
            f"{f' with base {base_name}' if info.wraps_base else ''}; valid: {', '.join(known)}"
        )
    return {
        key: hp.validate(hyperparameters[key]) if key in hyperparameters else hp.default
        for key, hp in known.items()
    }


def parse_hyperparameters(
    name: str, base: str | None, assignments: Iterable[str]
) -> dict[str, Any]:
    """``["rho=0.1", "k=3", "adaptive=true"]`` → typed, validated values for ``name`` on ``base``.

    The command line's ``--hp NAME=VALUE``: each value is read as its hyperparameter's kind.

    Raises:
        ValueError: not ``NAME=VALUE``, an unknown name, or a value of the wrong kind or range.
    """
    info = get_optimizer_info(name)
    known = {hp.name: hp for hp in info.all_hyperparameters(resolve_base(name, base))}
    values: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise ValueError(f"--hp takes NAME=VALUE (e.g. rho=0.1), got {text!r}")
        hp = known.get(key)
        if hp is None:
            raise ValueError(f"{name} has no hyperparameter {key!r}; valid: {', '.join(known)}")
        value: Any
        if hp.kind == "bool":
            lowered = raw.lower()
            if lowered not in ("true", "false"):
                raise ValueError(f"{key} must be true or false, got {raw!r}")
            value = lowered == "true"
        else:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key} must be {hp.describe_range()}, got {raw!r}") from None
        values[key] = hp.validate(value)
    return values


def create_optimizer(
    name: str,
    params_or_model: torch.nn.Module | Iterable[Any],
    *,
    base: str | None = None,
    total_steps: int | None = None,
    **hyperparameters: Any,
) -> Optimizer:
    """Build a registered optimizer over a model's parameters (or params / param groups).

    Args:
        name: one of :func:`list_optimizers` (``looksam-bench optimizers`` lists them).
        params_or_model: an ``nn.Module``, an iterable of tensors, or param-group dicts.
        base: for the SAM family, the base optimizer that applies the update (default ``sgd``).
        total_steps: the run's length in optimizer steps; required by the optimizers whose
            schedule depends on it (``needs_total_steps``: AE-SAM, late-phase SAM), ignored by
            the others.
        **hyperparameters: the optimizer's and its base's hyperparameters (``lr``, ``rho``,
            ``k``…); anything omitted takes the registry default.

    Raises:
        ValueError: unknown name, base or hyperparameter, a value outside its range, or a
            missing ``total_steps``.

    Example::

        opt = create_optimizer("looksam", model, base="sgd", lr=0.05, rho=0.1, k=5, alpha=0.7)
    """
    info = get_optimizer_info(name)
    base_name = resolve_base(name, base)
    values = resolve_hyperparameters(name, base, hyperparameters)
    extra: dict[str, Any] = {}
    if info.needs_total_steps:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(
                f"{name} schedules itself over the run: pass total_steps= (an integer >= 1), "
                f"got {total_steps!r}"
            )
        extra["total_steps"] = total_steps
    if not info.wraps_base:
        return info.factory(params_of(params_or_model), values)
    assert base_name is not None
    base_opt = get_optimizer_info(base_name).factory(params_of(params_or_model), values)
    return info.factory(base_opt, values, **extra)
