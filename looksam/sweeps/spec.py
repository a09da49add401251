"""Sweep specs: a TOML file describing a fair comparison, parsed into frozen dataclasses.

Search spaces are data (``{low, high, log}`` or ``{choices}``) and become ``trial.suggest_*``
calls in exactly one place, :func:`suggest`. Every optimizer gets the same budget (AlgoPerf's
rule), and every value that shapes the result — seeds, sampler seed, spec — is recorded.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looksam._plugins import PluginError, load_plugins
from looksam.optim import (
    DEFAULT_BASE,
    LINEUPS,
    base_optimizers,
    get_optimizer_info,
    list_optimizers,
)
from looksam.reports.summary import (  # which configuration the confirmation re-runs
    DEFAULT_MARGIN,
    PICKS,
)
from looksam.train.runner import AMP_MODES, DEVICES, RunConfig
from looksam.train.workloads import get_workload_info, timm_models

OBJECTIVES = ("pareto", "accuracy", "time-to-target")
SAMPLERS = ("tpe", "random", "nsga2", "gp", "grid")
PRUNERS = ("none", "median", "hyperband")
#: How studies share the machine: take turns trial by trial, or one after another.
ORDERS = ("interleaved", "sequential")
LR_SCALING = ("none", "linear", "sqrt")
#: Dimensions that are not optimizer hyperparameters.
RUN_DIMENSIONS = ("batch_size",)
DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"


class SpecError(ValueError):
    """A spec the user must fix; the message names the file, key and allowed values."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a numeric range or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """'rho ∈ [0.01, 1] log' or 'batch_size ∈ {32, 64}'."""
        if self.choices is not None:
            return f"{self.name} ∈ {{{', '.join(str(c) for c in self.choices)}}}"
        scale = " log" if self.log else ""
        return f"{self.name} ∈ [{self.low:g}, {self.high:g}]{scale}"


@dataclass(frozen=True)
class WorkloadSettings:
    """The problem every trial trains on."""

    name: str = "digits-noisy"
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    amp: str = "off"
    data_dir: str | None = None
    #: Gradient accumulation (``accumulate = N``): each batch a trial draws runs as N
    #: micro-batches, so a batch larger than memory trains with every entry.
    accumulate: int = 1

    def run_config(self, optimizer: str, **settings: Any) -> RunConfig:
        """A run of ``optimizer`` on this problem (workload, epochs, batch, device, precision,
        data, micro-batches), with ``settings`` (hyperparameters, seed, learning rate…) on top."""
        problem: dict[str, Any] = {
            "workload": self.name, "epochs": self.epochs, "batch_size": self.batch_size,
            "device": self.device, "amp": self.amp, "data_dir": self.data_dir,
            "micro_batches": self.accumulate,
        }  # fmt: skip
        return RunConfig(**{**problem, "optimizer": optimizer, **settings})


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep: problem, contenders, search spaces, objective, budget, stores."""

    name: str
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    optimizers: tuple[str, ...] = LINEUPS["sweep"]
    base: str = DEFAULT_BASE
    spaces: Mapping[str, tuple[Dimension, ...]] = field(default_factory=dict)
    fixed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    objective: str = "pareto"
    n_trials: int = 8
    timeout: float | None = None  # seconds per optimizer study, on top of n_trials
    seeds: tuple[int, ...] = (0,)
    sampler: str = "tpe"
    sampler_seed: int = 0
    pruner: str = "none"
    lr_scaling: str = "none"
    reference_batch_size: int | None = None
    warmup_fraction: float | None = None  # None: the runner's default linear LR warm-up
    rho_warmup_fraction: float = 0.0  # share of steps over which ρ ramps up from 0
    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = DEFAULT_TRACKING_URI  # None: no MLflow
    source: str | None = None  # the file it came from
    order: str = "interleaved"  # studies take turns (see looksam.sweeps.study)
    confirm_seeds: tuple[int, ...] = ()  # fresh seeds re-running each optimizer's choice
    #: "cheapest" (within ``confirm_margin`` of SAM's search best), "best", or the front's "knee"
    confirm_pick: str = "cheapest"
    confirm_margin: float = DEFAULT_MARGIN  # accuracy as a fraction: 0.01 is one point
    #: Whose search best sets the "cheapest" bar; None: the optimizer the registry calls full SAM.
    accuracy_reference: str | None = None
    #: Each trial's paired timing against the base: rounds, and steps per contender per round.
    timing_rounds: int = 9
    timing_steps: int = 16
    #: Modules imported before the spec is checked (their optimizers and workloads register).
    plugins: tuple[str, ...] = ()

    def study_name(self, optimizer: str) -> str:
        """One Optuna study per optimizer, named from sweep, workload and optimizer."""
        return f"{self.name}/{self.workload.name}/{optimizer}"

    def space_for(self, optimizer: str) -> tuple[Dimension, ...]:
        """The dimensions searched for ``optimizer`` (common ones plus its own)."""
        return self.spaces.get(optimizer, ())

    def budget_for(self, optimizer: str) -> int:
        """Trials ``optimizer``'s study runs: ``n_trials``, or every point of a grid.

        A grid sweep is an exhaustive design, not a search: each study runs its own grid once
        (a study with nothing to vary runs one trial), so budgets differ between optimizers
        by design and the spec says so by naming the grid sampler. A search study with nothing
        to search also runs one trial: more would train the same point on the same seeds.
        """
        if self.sampler != "grid":
            return self.n_trials if self.space_for(optimizer) else 1
        return math.prod(len(d.choices or ()) for d in self.space_for(optimizer))

    def grid_for(self, optimizer: str) -> dict[str, list[Any]]:
        """The grid sampler's search space for ``optimizer`` (empty: one fixed point)."""
        return {d.name: list(d.choices or ()) for d in self.space_for(optimizer)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for MLflow and reports)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- parsing

_TOP_KEYS = {
    "sweep", "workload", "optimizers", "space", "fixed", "objective", "budget", "seeds",
    "sampler", "pruner", "lr_scaling", "storage", "tracking", "order", "confirm", "timing",
    "plugins",
}  # fmt: skip


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"{where}: {message}")


def _take(overrides: dict[str, Any], key: str, default: Any) -> tuple[Any, bool]:
    """The override for ``key`` when one was given, else ``default``; and whether it was.

    An override is given when present and not None: 0, "" and [] are values to validate,
    never taken for "not given" (``--seeds 0`` must fail, not quietly become the spec's value).
    """
    if overrides.get(key) is not None:
        return overrides.pop(key), True
    overrides.pop(key, None)
    return default, False


def _one_of(where: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``; else a one-line SpecError listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise _fail(where, f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
    return value


def _at(where: str, section: str, key: str, overridden: bool) -> str:
    """Where a bad value came from: the spec's table, or the override that replaced it."""
    return f"{where} (override {key})" if overridden else f"{where} {section}".rstrip()


#: A sweep's name becomes part of file names (reports/NAME.html) and store keys (study
#: NAME/optimizer, MLflow experiment NAME): short, printable, no path separator.
NAME_MAX = 100


def check_sweep_name(where: str, name: Any) -> None:
    """Raise SpecError unless ``name`` can name files and stores (see :data:`NAME_MAX`)."""
    allowed = (
        f"1 to {NAME_MAX} printable characters without '/' or '\\' (it names files and stores)"
    )
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise _fail(where, f"name must be {allowed}, got {name!r}")
    if len(name) > NAME_MAX:
        raise _fail(where, f"name must be {allowed}, got a {len(name)}-character name")
    if any(c in "/\\" or not c.isprintable() for c in name):
        raise _fail(where, f"name must be {allowed}, got {name!r}")


def _check_fixed_key(
    where: str,
    opt_name: str,
    key: str,
    names: Sequence[str],
    base: str,
    raw_space: Mapping[str, Any],
) -> None:
    """A fixed value must be one its optimizer takes, and not also searched (given two ways)."""
    at = f"{where} [fixed.{opt_name}]"
    if opt_name == "common":
        takers = [n for n in names if key in _accepted_names(n, base)]
        if not takers:
            raise _fail(at, f"none of the optimizers {list(names)} takes {key!r}")
        return
    accepted = _accepted_names(opt_name, base)
    if key not in accepted:
        raise _fail(at, f"{opt_name} takes no {key!r}; it takes: {', '.join(sorted(accepted))}")
    own = raw_space.get(opt_name)
    if isinstance(own, Mapping) and key in own:
        raise _fail(
            at,
            f"{key} is fixed here and searched in [space.{opt_name}]: give it one way",
        )


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(
            where, f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}"
        )


def _table(where: str, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise _fail(where, f"[{key}] must be a table")
    return value


def _load_spec_plugins(where: str, raw: Any) -> tuple[str, ...]:
    """Import the spec's ``plugins`` first, so the names and spaces after them can be checked."""
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise _fail(where, f'plugins must be a list of module names like ["my_opt"], got {raw!r}')
    try:
        load_plugins(raw)
    except PluginError as error:
        raise _fail(f"{where} plugins", str(error)) from None
    return tuple(name.strip() for name in raw)


def _is_count(value: Any) -> bool:
    """An integer >= 1 (TOML booleans are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(where: str, value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"{name} must be a finite number, got {value!r}")
    return float(value)


def parse_dimension(where: str, name: str, raw: Any, optimizer: str | None = None) -> Dimension:
    """One ``name = {low, high, log}`` / ``{choices}`` entry, validated against the registry:
    against ``optimizer``'s own hyperparameter when the entry is in its section (ESAM's γ, a
    share of the batch, and RWP's γ, a noise scale, share a name and nothing else)."""
    if not isinstance(raw, Mapping):
        raise _fail(
            where, f"{name} must be a table like {{low = 0.01, high = 1.0}} or {{choices = [...]}}"
        )
    _check_keys(f"{where}.{name}", raw, {"low", "high", "log", "choices"})
    known = _hyperparameter(name, optimizer)
    integer = name == "batch_size" or (known is not None and known.kind == "int")
    if "choices" in raw:
        if set(raw) - {"choices"}:
            raise _fail(f"{where}.{name}", "give either choices or low/high, not both")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise _fail(f"{where}.{name}", "choices must be a non-empty list")
        for choice in choices:
            _check_value(f"{where}.{name}", name, choice, optimizer)
        return Dimension(name, choices=tuple(choices), integer=integer)
    if "low" not in raw or "high" not in raw:
        raise _fail(f"{where}.{name}", "needs both low and high (or choices)")
    low = _number(f"{where}.{name}", raw["low"], "low")
    high = _number(f"{where}.{name}", raw["high"], "high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _fail(f"{where}.{name}", f"log must be true or false, got {log!r}")
    if low > high:
        raise _fail(f"{where}.{name}", f"low ({low:g}) is greater than high ({high:g})")
    if log and low <= 0:
        raise _fail(f"{where}.{name}", f"a log-scaled range needs low > 0, got {low:g}")
    if integer and not (low.is_integer() and high.is_integer()):
        raise _fail(f"{where}.{name}", f"{name} is an integer: low and high must be integers")
    _check_value(f"{where}.{name}", name, int(low) if integer else low, optimizer)
    _check_value(f"{where}.{name}", name, int(high) if integer else high, optimizer)
    return Dimension(name, low, high, log, integer)


def registry_dimensions(optimizer: str, skip: set[str] | None = None) -> list[Dimension]:
    """``optimizer``'s own hyperparameters that its registry entry gives a search range."""
    return [
        Dimension(hp.name, hp.search[0], hp.search[1], hp.log, hp.kind == "int")
        for hp in get_optimizer_info(optimizer).hyperparameters
        if hp.search is not None and hp.name not in (skip or set())
    ]


def _check_value(where: str, name: str, value: Any, optimizer: str | None = None) -> None:
    if name == "batch_size":
        if not _is_count(value):
            raise _fail(where, f"batch_size values must be integers >= 1, got {value!r}")
        return
    searchable = _all_hyperparameters()  # read now: plugins may have registered more
    hp = _hyperparameter(name, optimizer)
    if hp is None:
        raise _fail(
            where,
            f"cannot search {name!r}; searchable: {', '.join(sorted(searchable))}, batch_size",
        )
    try:
        hp.validate(value)
    except ValueError as error:
        raise _fail(where, str(error)) from None


def _hyperparameter(name: str, optimizer: str | None) -> Any:
    """The spec of ``name``: ``optimizer``'s own when it has one (names are shared), else the
    first registered entry's (a name the optimizer lacks is refused later, naming it)."""
    own = _all_hyperparameters(optimizer).get(name) if optimizer is not None else None
    return own if own is not None else _all_hyperparameters().get(name)


def _all_hyperparameters(optimizer: str | None = None) -> dict[str, Any]:
    """Every hyperparameter any registered optimizer (or just ``optimizer``, when it is one)
    takes on any base it accepts, by name."""
    found: dict[str, Any] = {}
    infos = list_optimizers()
    own = [i for i in infos if i.name == optimizer]
    for info in own or infos:
        for base in info.accepted_bases() if info.wraps_base else (None,):
            for hp in info.all_hyperparameters(base):
                found.setdefault(hp.name, hp)
    return found


def load_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep spec; ``overrides`` (CLI flags) replace spec keys.

    Raises:
        SpecError: unreadable or malformed TOML (with the line), unknown keys (with the valid
            ones), bad ranges, unknown names, or pruning asked for with the pareto objective.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep spec") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read it ({error.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML: {error}") from None
    return parse_spec(data, str(path), overrides)


def parse_spec(
    data: Mapping[str, Any], source: str = "<spec>", overrides: Mapping[str, Any] | None = None
) -> SweepSpec:
    """Validate parsed TOML (see :func:`load_spec`), one section at a time, in file order.

    ``overrides`` (the command line's flags) replace spec values; each section takes the ones
    it knows, and an override no section took is an error.
    """
    where = source
    _check_keys(where, data, _TOP_KEYS)
    plugins = _load_spec_plugins(where, data.get("plugins", []))
    sweep = _table(where, data, "sweep")
    _check_keys(f"{where} [sweep]", sweep, {"name"})
    name = sweep.get("name", Path(source).stem if source != "<spec>" else "sweep")
    check_sweep_name(f"{where} [sweep]", name)
    overrides = dict(overrides or {})
    workload = _parse_workload(where, data, overrides)
    names, base = _parse_optimizers(where, data, overrides)
    spaces = _parse_spaces(where, data, names, base)
    fixed = _parse_fixed(where, data, names, base)
    objective, given = _take(overrides, "objective", data.get("objective", "pareto"))
    _one_of(_at(where, "", "objective", given), "objective", objective, OBJECTIVES)
    budget, n_trials, timeout, seeds = _parse_budget(where, data, overrides)
    order, confirm_seeds, confirm_pick, confirm_margin = _confirmation(
        where, data, overrides, seeds
    )
    timing = _parse_timing(where, data)
    sampler, sampler_seed, pruner = _parse_sampler(
        where, data, overrides, objective, spaces, budget
    )
    rule, ref_bs, warmup, rho_warmup = _parse_lr_scaling(where, data)
    storage, tracking_uri = _parse_stores(where, data, overrides)
    leftover = {k: v for k, v in overrides.items() if v is not None}
    if leftover:
        raise SpecError(f"unknown override(s): {', '.join(sorted(leftover))}")
    return SweepSpec(
        name=name,
        workload=workload,
        optimizers=tuple(names),
        base=base,
        spaces=spaces,
        fixed=fixed,
        objective=objective,
        n_trials=n_trials,
        timeout=timeout,
        seeds=seeds,
        sampler=sampler,
        sampler_seed=sampler_seed,
        pruner=pruner,
        lr_scaling=rule,
        reference_batch_size=ref_bs,
        warmup_fraction=warmup,
        rho_warmup_fraction=rho_warmup or 0.0,
        storage=storage,
        tracking_uri=tracking_uri,
        source=source,
        order=order,
        confirm_seeds=confirm_seeds,
        confirm_pick=confirm_pick,
        confirm_margin=confirm_margin,
        timing_rounds=timing["rounds"],
        timing_steps=timing["steps"],
        plugins=plugins,
    )


def _parse_workload(
    where: str, data: Mapping[str, Any], overrides: dict[str, Any]
) -> WorkloadSettings:
    """[workload]: a registered (or timm:/module:) name and the run settings it trains with."""
    raw_workload = dict(_table(where, data, "workload"))
    _check_keys(
        f"{where} [workload]", raw_workload,
        {"name", "epochs", "batch_size", "device", "amp", "data_dir", "accumulate",
         *timm_models.PARAMETERS},
    )  # fmt: skip
    overridden: set[str] = set()
    for key, override in (
        ("epochs", "epochs"), ("batch_size", "batch_size"), ("device", "device"),
        ("amp", "amp"), ("data_dir", "data_dir"), ("name", "workload"),
        ("accumulate", "accumulate"),
    ):  # fmt: skip
        value, given = _take(overrides, override, raw_workload.get(key))
        if given:
            raw_workload[key] = value
            overridden.add(key)

    def at_workload(key: str) -> str:
        override = "workload" if key == "name" else key
        return _at(where, "[workload]", override, key in overridden)

    # timm:MODEL's data, num_classes and img_size travel in its name, as from the command line.
    timm_options = {k: raw_workload.pop(k) for k in timm_models.PARAMETERS if k in raw_workload}
    if timm_options:
        try:
            raw_workload["name"] = timm_models.with_timm_options(
                raw_workload.get("name", WorkloadSettings.name), **timm_options
            )
        except (ValueError, TypeError) as error:
            raise _fail(at_workload("name"), str(error)) from None
    workload = WorkloadSettings(**raw_workload)
    try:
        get_workload_info(workload.name)
    except (ValueError, TypeError) as error:  # TypeError: a name that is not a string
        raise _fail(at_workload("name"), str(error)) from None
    for key in ("epochs", "batch_size", "accumulate"):
        value = getattr(workload, key)
        if value is not None and (not _is_count(value)):
            raise _fail(at_workload(key), f"{key} must be an integer >= 1, got {value!r}")
    for key, allowed in (("device", DEVICES), ("amp", AMP_MODES)):
        _one_of(at_workload(key), key, getattr(workload, key), allowed)
    if workload.data_dir is not None and (
        not isinstance(workload.data_dir, str)
        or not workload.data_dir
        or not workload.data_dir.isprintable()
    ):
        raise _fail(
            at_workload("data_dir"),
            f"data_dir must be a directory path, got {workload.data_dir!r}",
        )
    return workload


def _parse_optimizers(
    where: str, data: Mapping[str, Any], overrides: dict[str, Any]
) -> tuple[list[str], str]:
    """[optimizers]: registered names, each once, and the base the SAM family wraps."""
    raw_opt = _table(where, data, "optimizers")
    _check_keys(f"{where} [optimizers]", raw_opt, {"names", "base"})
    names, given = _take(overrides, "optimizers", raw_opt.get("names", list(SweepSpec.optimizers)))
    at_names = _at(where, "[optimizers]", "optimizers", given)
    if not isinstance(names, list | tuple) or not names:
        raise _fail(at_names, f"names must be a non-empty list, got {names!r}")
    for opt_name in names:
        try:
            get_optimizer_info(opt_name)
        except (ValueError, TypeError) as error:
            raise _fail(at_names, str(error)) from None
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise _fail(at_names, f"names lists {twice[0]!r} {list(names).count(twice[0])} times")
    base, given = _take(overrides, "base", raw_opt.get("base", DEFAULT_BASE))
    _one_of(_at(where, "[optimizers]", "base", given), "base", base, base_optimizers())
    return list(names), base


def _parse_spaces(
    where: str, data: Mapping[str, Any], names: Sequence[str], base: str
) -> dict[str, tuple[Dimension, ...]]:
    """[space.*]: each optimizer's search space; its own table wins over [space.common]."""
    raw_space = _table(where, data, "space")
    # Spaces of optimizers left out (e.g. by --optimizer) are allowed and ignored.
    registered = {info.name for info in list_optimizers()}
    _check_keys(f"{where} [space]", raw_space, {"common", *registered})
    common = [
        parse_dimension(f"{where} [space.common]", k, v)
        for k, v in _table(where, raw_space, "common").items()
    ]
    spaces: dict[str, tuple[Dimension, ...]] = {}
    for opt_name in names:
        table = dict(_table(where, raw_space, opt_name))
        from_registry = table.pop("registry", False)
        if not isinstance(from_registry, bool):
            raise _fail(
                f"{where} [space.{opt_name}]",
                f"registry must be true or false, got {from_registry!r}",
            )
        own = [
            parse_dimension(f"{where} [space.{opt_name}]", k, v, opt_name)
            for k, v in table.items()
        ]
        if from_registry:  # the entry's search ranges for what the table does not give
            own += registry_dimensions(opt_name, skip={d.name for d in own})
        merged = {d.name: d for d in (*common, *own)}
        accepted = _accepted_names(opt_name, base)
        for dim in merged.values():
            if dim.name not in accepted and dim.name in {d.name for d in own}:
                raise _fail(
                    f"{where} [space.{opt_name}]",
                    f"{opt_name} takes no {dim.name!r}; it takes: {', '.join(sorted(accepted))}",
                )
        # common dimensions apply where the optimizer takes them (rho is meaningless for sgd)
        spaces[opt_name] = tuple(d for d in merged.values() if d.name in accepted)
    return spaces


def _parse_fixed(
    where: str, data: Mapping[str, Any], names: Sequence[str], base: str
) -> dict[str, dict[str, Any]]:
    """[fixed.*]: values pinned rather than searched, each taken by its optimizer."""
    raw_space = _table(where, data, "space")
    registered = {info.name for info in list_optimizers()}
    fixed: dict[str, dict[str, Any]] = {}
    for opt_name, values in _table(where, data, "fixed").items():
        if opt_name not in registered and opt_name != "common":
            raise _fail(
                f"{where} [fixed]", f"{opt_name!r} is not among the optimizers {list(names)}"
            )
        if not isinstance(values, Mapping):
            raise _fail(f"{where} [fixed.{opt_name}]", "must be a table of values")
        for key, value in values.items():
            _check_value(f"{where} [fixed.{opt_name}]", key, value, opt_name)
            _check_fixed_key(where, opt_name, key, list(names), base, raw_space)
        fixed[opt_name] = dict(values)
    return fixed


def _parse_budget(
    where: str, data: Mapping[str, Any], overrides: dict[str, Any]
) -> tuple[dict[str, Any], int, float | None, tuple[int, ...]]:
    """[budget]: trials per study (8 unless given), an optional timeout, distinct seeds."""
    budget = dict(_table(where, data, "budget"))
    _check_keys(f"{where} [budget]", budget, {"n_trials", "timeout", "seeds"})
    budget_overridden: set[str] = set()
    for key in ("n_trials", "timeout"):
        value, given = _take(overrides, key, budget.get(key))
        if given:
            budget[key] = value
            budget_overridden.add(key)
    n_trials = budget.get("n_trials", 8)
    if not _is_count(n_trials):
        raise _fail(
            _at(where, "[budget]", "n_trials", "n_trials" in budget_overridden),
            f"n_trials must be an integer >= 1, got {n_trials!r}",
        )
    timeout = budget.get("timeout")
    at_timeout = _at(where, "[budget]", "timeout", "timeout" in budget_overridden)
    if timeout is not None and _number(at_timeout, timeout, "timeout") <= 0:
        raise _fail(at_timeout, f"timeout must be > 0 seconds, got {timeout!r}")
    seeds_raw, given = _take(overrides, "seeds", budget.get("seeds", 1))
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw >= 1:
        seeds = tuple(range(seeds_raw))
    elif (
        isinstance(seeds_raw, list)
        and seeds_raw
        and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds_raw)
    ):
        seeds = tuple(seeds_raw)
    else:
        raise _fail(
            _at(where, "[budget]", "seeds", given),
            f"seeds must be a count >= 1 or a list of ints, got {seeds_raw!r}",
        )
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise _fail(
            _at(where, "[budget]", "seeds", given),
            f"seeds lists {repeated[0]} {seeds.count(repeated[0])} times: a repeated seed "
            "repeats a run",
        )
    return budget, n_trials, float(timeout) if timeout is not None else None, seeds


def _parse_timing(where: str, data: Mapping[str, Any]) -> dict[str, int]:
    """[timing]: the paired measurement's rounds and steps per round."""
    raw_timing = _table(where, data, "timing")
    _check_keys(f"{where} [timing]", raw_timing, {"rounds", "steps"})
    timing = {"rounds": 9, "steps": 16, **raw_timing}
    for key, value in timing.items():
        if not _is_count(value):
            raise _fail(f"{where} [timing]", f"{key} must be an integer >= 1, got {value!r}")
    return timing


def _parse_sampler(
    where: str,
    data: Mapping[str, Any],
    overrides: dict[str, Any],
    objective: str,
    spaces: Mapping[str, tuple[Dimension, ...]],
    budget: Mapping[str, Any],
) -> tuple[str, int, str]:
    """[sampler] and ``pruner``: Optuna's sampler (a grid needs lists and no trial count), its
    seed, and a pruner the objective allows."""
    raw_sampler = _table(where, data, "sampler")
    _check_keys(f"{where} [sampler]", raw_sampler, {"name", "seed"})
    sampler, given = _take(overrides, "sampler", raw_sampler.get("name", "tpe"))
    _one_of(_at(where, "", "sampler", given), "sampler", sampler, SAMPLERS)
    sampler_seed = raw_sampler.get("seed", 0)
    if isinstance(sampler_seed, bool) or not isinstance(sampler_seed, int):
        raise _fail(f"{where} [sampler]", f"seed must be an integer, got {sampler_seed!r}")
    if sampler == "grid":
        _check_grid(where, spaces, budget)
    pruner, given = _take(overrides, "pruner", data.get("pruner", "none"))
    _one_of(_at(where, "", "pruner", given), "pruner", pruner, PRUNERS)
    if pruner != "none" and objective == "pareto":
        raise _fail(
            where,
            f"pruner {pruner!r} cannot be used with the pareto objective: Optuna cannot prune "
            'multi-objective studies; use pruner = "none" or objective = "accuracy"',
        )
    return sampler, int(sampler_seed), pruner


def _parse_lr_scaling(
    where: str, data: Mapping[str, Any]
) -> tuple[str, int | None, float | None, float | None]:
    """[lr_scaling]: how the learning rate follows the batch size, and the warm-up shares."""
    raw_scaling = _table(where, data, "lr_scaling")
    _check_keys(
        f"{where} [lr_scaling]",
        raw_scaling,
        {"rule", "reference_batch_size", "warmup_fraction", "rho_warmup_fraction"},
    )
    rule = _one_of(f"{where} [lr_scaling]", "rule", raw_scaling.get("rule", "none"), LR_SCALING)
    ref_bs = raw_scaling.get("reference_batch_size")
    if ref_bs is not None and (not _is_count(ref_bs)):
        raise _fail(
            f"{where} [lr_scaling]",
            f"reference_batch_size must be an integer >= 1, got {ref_bs!r}",
        )
    warmup = _fraction(f"{where} [lr_scaling]", raw_scaling, "warmup_fraction")
    rho_warmup = _fraction(f"{where} [lr_scaling]", raw_scaling, "rho_warmup_fraction")
    return rule, ref_bs, warmup, rho_warmup


def _parse_stores(
    where: str, data: Mapping[str, Any], overrides: dict[str, Any]
) -> tuple[str, str | None]:
    """``storage`` and [tracking]: the Optuna storage URL and the MLflow URI (None: off)."""
    storage, given = _take(overrides, "storage", data.get("storage", DEFAULT_STORAGE))
    if not isinstance(storage, str) or not storage.strip() or not storage.isprintable():
        raise _fail(
            _at(where, "", "storage", given),
            f"storage must be a URL (sqlite:///…, postgresql://…) or journal:PATH, "
            f"got {storage!r}",
        )
    raw_tracking = _table(where, data, "tracking")
    _check_keys(f"{where} [tracking]", raw_tracking, {"uri", "enabled"})
    tracking_uri, given = _take(
        overrides, "tracking_uri", raw_tracking.get("uri", DEFAULT_TRACKING_URI)
    )
    if (
        not isinstance(tracking_uri, str)
        or not tracking_uri.strip()
        or not tracking_uri.isprintable()
    ):
        raise _fail(
            _at(where, "[tracking]", "tracking_uri", given),
            f"uri must be an MLflow tracking URI (sqlite:///…, http://…), got {tracking_uri!r}",
        )
    enabled = raw_tracking.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(f"{where} [tracking]", f"enabled must be true or false, got {enabled!r}")
    no_mlflow, _ = _take(overrides, "no_mlflow", False)
    return str(storage), None if no_mlflow or not enabled else tracking_uri


def _confirmation(
    where: str, data: Mapping[str, Any], overrides: dict[str, Any], seeds: tuple[int, ...]
) -> tuple[str, tuple[int, ...], str, float]:
    """The scheduling order and the confirmation stage: its fresh seeds, what it re-runs and
    the margin (a fraction) of the "cheapest" pick, given in the spec in accuracy points.

    Confirmation seeds follow the search's (``max(seeds) + 1`` on), so no confirmation run
    repeats a search run.
    """
    order, given = _take(overrides, "order", data.get("order", "interleaved"))
    _one_of(_at(where, "", "order", given), "order", order, ORDERS)
    raw = _table(where, data, "confirm")
    _check_keys(f"{where} [confirm]", raw, {"seeds", "pick", "margin"})
    count, given = _take(overrides, "confirm_seeds", raw.get("seeds", 0))
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise _fail(
            _at(where, "[confirm]", "confirm_seeds", given),
            f"seeds must be an integer >= 0 (0: no confirmation stage), got {count!r}",
        )
    pick = _one_of(f"{where} [confirm]", "pick", raw.get("pick", "cheapest"), PICKS)
    points = _number(f"{where} [confirm]", raw.get("margin", 100 * DEFAULT_MARGIN), "margin")
    if not 0 < points < 100:
        raise _fail(
            f"{where} [confirm]",
            f"margin is in accuracy points and must be between 0 and 100, got {points:g}",
        )
    first = max(seeds) + 1
    return order, tuple(range(first, first + count)), pick, points / 100


def _fraction(where: str, table: Mapping[str, Any], key: str) -> float | None:
    """An optional share of the training steps, in [0, 1)."""
    value = table.get(key)
    if value is None:
        return None
    if not 0 <= _number(where, value, key) < 1:
        raise _fail(where, f"{key} is a share of the training steps, in [0, 1); got {value!r}")
    return float(value)


def _check_grid(
    where: str,
    spaces: Mapping[str, tuple[Dimension, ...]],
    budget: Mapping[str, Any],
) -> None:
    """A grid runs every combination of listed values: ranges and trial counts make no sense."""
    for opt_name, space in spaces.items():
        for dim in space:
            if dim.choices is None:
                raise _fail(
                    f"{where} [space.{opt_name}]",
                    f"the grid sampler needs a list of values for {dim.name}, "
                    f"e.g. {dim.name} = {{choices = [...]}}, not a range",
                )
    if "n_trials" in budget:
        raise _fail(
            f"{where} [budget]",
            "n_trials cannot be set with the grid sampler: each study runs every grid point once",
        )


def _accepted_names(optimizer: str, base: str) -> set[str]:
    info = get_optimizer_info(optimizer)
    return {hp.name for hp in info.all_hyperparameters(base if info.wraps_base else None)} | set(
        RUN_DIMENSIONS
    )


# ---------------------------------------------------------------------- trials


def suggest(trial: Any, space: tuple[Dimension, ...]) -> dict[str, Any]:
    """The one place a search space becomes ``trial.suggest_*`` calls."""
    params: dict[str, Any] = {}
    for dim in space:
        if dim.choices is not None:
            params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        elif dim.integer:
            assert dim.low is not None
            assert dim.high is not None
            params[dim.name] = trial.suggest_int(
                dim.name, int(dim.low), int(dim.high), log=dim.log
            )
        else:
            assert dim.low is not None
            assert dim.high is not None
            params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)
    return params


def reference_params(space: tuple[Dimension, ...], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The first trial of every study: ``defaults`` (the registry's, which are each paper's
    operating point, e.g. LookSAM's k=5, α=0.7, ρ=0.05, and the workload's) clipped into the space.

    Dimensions without a default take the (geometric, for log ranges) middle of the range or the
    first choice.
    """
    point: dict[str, Any] = {}
    for dim in space:
        wanted = defaults.get(dim.name)
        if dim.choices is not None:
            point[dim.name] = wanted if wanted in dim.choices else dim.choices[0]
            continue
        assert dim.low is not None
        assert dim.high is not None
        if wanted is None:
            wanted = math.sqrt(dim.low * dim.high) if dim.log else (dim.low + dim.high) / 2
        value = min(max(float(wanted), dim.low), dim.high)
        point[dim.name] = round(value) if dim.integer else value
    return point


def scaled_lr(lr: float, batch_size: int, rule: str, reference_batch_size: int) -> float:
    """Learning rate for ``batch_size`` under the scaling rule, relative to the reference size."""
    ratio = batch_size / reference_batch_size
    if rule == "linear":
        return lr * ratio
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    return lr
