"""One-shot GPU benchmark: step costs in bf16, host syncs per optimizer step, compiled vs eager.

``bench/gpu.sh`` (``python -m looksam.bench.gpu [--out DIR] [--dry-run] [--time-budget S]``) is
the single command someone with one CUDA GPU runs to fill the README's Results; it fits in
``--time-budget`` seconds (8 minutes by default) and does three things:

1. **Step costs in bf16.** :func:`~looksam.bench.suite.measure_suite` on every workload of
   :data:`GPU_PLAN` (ViT-S/16 and ResNet-50 on ImageNet-sized random tensors) for the base and
   every registered SAM-family optimizer: paired step-cost ratios with their IQR, samples/s,
   floor (passes per step, counted) and overhead. The rounds are picked per workload from a
   short calibration of the base's step time, so each workload fits its share of the budget.
2. **Host syncs.** A few plain and look steps of every SAM-family optimizer on a small model,
   counting what the optimizer's ``step`` does outside its closure (the model's forward and
   backward are not counted): on CUDA the warnings of ``torch.cuda.set_sync_debug_mode("warn")``
   and, on any device, the host reads (``Tensor.item``, ``tolist``, ``float()``, ``int()``,
   ``bool()``). Each optimizer is held to its registry entry's ``host_read_allowance``: no sync
   at all, except for an adaptive rule that must read one value per step to decide. An optimizer
   above its allowance fails the run, on CUDA and in the CPU dry run alike: a CPU has no sync to
   pay for, but the host reads it counts are the very calls that would sync on a GPU.
3. **Compiled against eager.** For the base (SGD) and LookSAM, the same session built twice,
   with ``RunConfig.compile`` on and off: the compiled/eager step-time ratio over paired rounds,
   and whether the losses after N steps agree within a float tolerance. A compile error fails.

It writes ``results.json`` (machine, every table, every check with its reason) and
``results.md`` (tables ready to paste into the README, the card's name in the heading) into
the output folder, prints the Markdown, and exits 1 when an enforced check failed (2 for bad
input, before anything runs).

``--dry-run`` (automatic without a CUDA device) runs the same code on ``synthetic-mlp`` on the
CPU with tiny settings (:data:`DRY_RUN_PLAN`), in well under a minute, so CI keeps the script
working; its numbers are not GPU numbers.

Everything here is a library too: a notebook can call :func:`run_gpu_bench` and
:func:`to_markdown`, or the parts on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import torch

from looksam._json import write_json
from looksam.bench.suite import SuiteSpec, default_optimizers, measure_suite
from looksam.optim import (
    DEFAULT_BASE,
    DEFAULT_OPTIMIZER,
    SharpnessAwareOptimizer,
    get_optimizer_info,
    list_optimizers,
)
from looksam.train.runner import RunConfig, TrainingSession, environment, resolve_device
from looksam.train.timing import synchronize, time_relative

# ---------------------------------------------------------------------- settings (data)


@dataclass(frozen=True)
class StepCostSetting:
    """One workload of part 1: how its suite is measured and its share of the time budget."""

    workload: str
    batch_size: int
    amp: str
    k: int  # look interval of the k-step optimizers (steps_per_round must be a multiple)
    steps_per_round: int
    warmup_steps: int
    min_rounds: int  # run at least this many paired rounds, even over the budget
    max_rounds: int  # never more, even with time to spare
    share: float  # of the time budget: calibration, session building, warm-up and rounds


@dataclass(frozen=True)
class SyncSetting:
    """Part 2: the small model whose optimizer steps are watched for host syncs."""

    workload: str
    batch_size: int
    k: int  # look interval for the k-step optimizers: k = 2 alternates look and plain steps
    warmup_steps: int  # not counted: lazy state, first-step allocations
    steps: int  # counted, per optimizer
    share: float


@dataclass(frozen=True)
class CompileSetting:
    """Part 3: compiled against eager, for :data:`COMPILED_OPTIMIZERS`."""

    workload: str
    batch_size: int
    amp: str
    k: int
    loss_steps: int  # steps both versions train before their losses are compared
    rel_tol: float  # the losses agree when within this relative tolerance (floats, not bits)
    rounds: int
    steps_per_round: int
    warmup_steps: int
    backend: str | None  # torch.compile's backend; None: its default (inductor)
    share: float


@dataclass(frozen=True)
class Plan:
    """Everything one run does: the device and the settings of the three parts."""

    mode: str  # "gpu" | "dry-run"
    device: str
    step_costs: tuple[StepCostSetting, ...]
    sync: SyncSetting
    compile: CompileSetting
    #: Whether host syncs above the allowance fail the run (False: reported as notes only).
    enforce_syncs: bool


#: Total wall-clock the default run aims for, in seconds (shares below are fractions of it).
DEFAULT_TIME_BUDGET_S = 480.0
#: Where results go without ``--out`` and without ``$OUT``.
DEFAULT_OUT = Path("reports/gpu-bench")
#: The optimizers part 3 compiles: the base and the method this project is named after.
COMPILED_OPTIMIZERS = (DEFAULT_BASE, DEFAULT_OPTIMIZER)  # SGD and LookSAM

#: One CUDA GPU, bf16 autocast. Shares: 2 × 0.30 step costs, 0.05 syncs, 0.30 compile (mostly
#: inductor's compile time) and 0.05 left for start-up and writing.
GPU_PLAN = Plan(
    mode="gpu",
    device="cuda",
    step_costs=(
        StepCostSetting(
            workload="synthetic-vit-s16-imagenet",
            batch_size=128,
            amp="bf16",
            k=5,
            steps_per_round=10,
            warmup_steps=10,
            min_rounds=5,
            max_rounds=30,
            share=0.30,
        ),
        StepCostSetting(
            workload="synthetic-resnet50-imagenet",
            batch_size=128,
            amp="bf16",
            k=5,
            steps_per_round=10,
            warmup_steps=10,
            min_rounds=5,
            max_rounds=30,
            share=0.30,
        ),
    ),
    sync=SyncSetting(
        workload="synthetic-mlp", batch_size=128, k=2, warmup_steps=2, steps=4, share=0.05
    ),
    compile=CompileSetting(
        workload="synthetic-vit-s16-imagenet",
        batch_size=128,
        amp="bf16",
        k=5,
        loss_steps=10,
        rel_tol=2e-2,  # bf16: eager and inductor kernels round differently
        rounds=10,
        steps_per_round=10,
        warmup_steps=5,
        backend=None,
        share=0.30,
    ),
    enforce_syncs=True,
)

#: The CPU dry run (CI): the same code on a tiny MLP, seconds per part. torch.compile uses the
#: ``aot_eager`` backend (Dynamo's tracing and AOT autograd without inductor's C++ build, which
#: alone takes about 30 s on two cores).
DRY_RUN_PLAN = Plan(
    mode="dry-run",
    device="cpu",
    step_costs=(
        StepCostSetting(
            workload="synthetic-mlp",
            batch_size=64,
            amp="bf16",
            k=2,
            steps_per_round=2,
            warmup_steps=2,
            min_rounds=3,
            max_rounds=3,
            share=0.30,
        ),
    ),
    sync=SyncSetting(
        workload="synthetic-mlp", batch_size=64, k=2, warmup_steps=2, steps=4, share=0.05
    ),
    compile=CompileSetting(
        workload="synthetic-mlp",
        batch_size=64,
        amp="off",
        k=2,
        loss_steps=4,
        rel_tol=1e-4,
        rounds=3,
        steps_per_round=2,
        warmup_steps=1,
        backend="aot_eager",
        share=0.30,
    ),
    enforce_syncs=True,
)

#: Calibration of part 1: untimed then timed steps of the base, to predict a round's length.
CALIBRATION_WARMUP_STEPS = 3
CALIBRATION_STEPS = 5
#: A step costs its passes times this (optimizer arithmetic, bookkeeping) in the prediction.
STEP_OVERHEAD_SLACK = 1.2

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _error_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _k_hyperparameters(name: str, k: int) -> dict[str, Any]:
    return {"k": k} if get_optimizer_info(name).takes_k else {}


def sam_family() -> tuple[str, ...]:
    """Every registered SAM-family optimizer (read at call time: plugins count)."""
    return tuple(info.name for info in list_optimizers() if info.wraps_base)


# ---------------------------------------------------------------------- part 1: step costs


def plan_rounds(
    setting: StepCostSetting,
    optimizers: tuple[str, ...],
    seconds_per_pass: float,
    build_seconds: float,
    budget_s: float,
) -> int:
    """Paired rounds that fit ``budget_s`` (pure function).

    A step of each optimizer is predicted as its registry's expected passes times the base's
    measured seconds per pass (times :data:`STEP_OVERHEAD_SLACK`); every contender's session
    takes ``build_seconds`` to build and ``setting.warmup_steps`` untimed steps. The answer is
    clamped to ``[min_rounds, max_rounds]``.
    """
    passes = sum(
        get_optimizer_info(name).passes_per_step(_k_hyperparameters(name, setting.k))
        for name in optimizers
    )
    step_all = seconds_per_pass * passes * STEP_OVERHEAD_SLACK  # one step of every contender
    fixed = build_seconds * len(optimizers) + setting.warmup_steps * step_all
    per_round = setting.steps_per_round * step_all
    fits = math.floor((budget_s - fixed) / per_round) if per_round > 0 else setting.max_rounds
    return max(setting.min_rounds, min(setting.max_rounds, fits))


def calibrate(setting: StepCostSetting, device: str) -> tuple[float, float]:
    """(seconds per step of the base, seconds to build its session) on ``setting``'s workload."""
    started = time.perf_counter()
    session = TrainingSession(
        RunConfig(
            workload=setting.workload,
            optimizer=DEFAULT_BASE,
            batch_size=setting.batch_size,
            device=device,
            amp=setting.amp,
            epochs=10_000,
        )
    )
    build = time.perf_counter() - started
    batches = session.batches()
    for _ in range(CALIBRATION_WARMUP_STEPS):
        session.train_step(*next(batches))
    synchronize(session.device)
    started = time.perf_counter()
    for _ in range(CALIBRATION_STEPS):
        session.train_step(*next(batches))
    synchronize(session.device)
    per_step = (time.perf_counter() - started) / CALIBRATION_STEPS
    del session, batches
    _release_memory()
    return per_step, build


def measure_step_costs(
    setting: StepCostSetting, device: str, budget_s: float, log: Log = _stderr
) -> dict[str, Any]:
    """Part 1 for one workload: the suite of :func:`default_optimizers` in ``budget_s``."""
    started = time.perf_counter()
    optimizers = default_optimizers()
    per_pass, build = calibrate(setting, device)
    left = budget_s - (time.perf_counter() - started)
    rounds = plan_rounds(setting, optimizers, per_pass, build, left)
    log(
        f"  {setting.workload}: {len(optimizers)} optimizers, {rounds} rounds × "
        f"{setting.steps_per_round} steps (base step {per_pass * 1e3:.1f} ms, "
        f"budget {budget_s:.0f} s)"
    )
    spec = SuiteSpec(
        workload=setting.workload,
        optimizers=optimizers,
        reference=DEFAULT_BASE,
        k=setting.k,
        batch_size=setting.batch_size,
        device=device,
        amp=setting.amp,
        rounds=rounds,
        steps_per_round=setting.steps_per_round,
        warmup_steps=setting.warmup_steps,
    )
    report = measure_suite(spec)
    _release_memory()
    rows = [
        {
            "optimizer": cost.optimizer,
            "label": get_optimizer_info(cost.optimizer).label,
            "median_step_seconds": cost.median_step_seconds,
            "samples_per_second": cost.samples_per_second,
            "ratio": cost.ratio,
            "ratio_q1": cost.ratio_q1,
            "ratio_q3": cost.ratio_q3,
            "floor": cost.floor,
            "overhead": cost.overhead,
        }
        for cost in report.costs
    ]
    return {
        "workload": setting.workload,
        "reference": DEFAULT_BASE,
        "batch_size": report.batch_size,
        "amp": setting.amp,
        "k": setting.k,
        "rounds": rounds,
        "steps_per_round": setting.steps_per_round,
        "warmup_steps": setting.warmup_steps,
        "calibration_step_seconds": per_pass,
        "budget_s": budget_s,
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }


def _step_cost_check(table: dict[str, Any]) -> dict[str, Any]:
    bad = [
        row["optimizer"]
        for row in table["rows"]
        if not all(
            isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0
            for key in ("ratio", "samples_per_second", "floor")
        )
    ]
    reason = (
        f"{len(table['rows'])} optimizers measured over {table['rounds']} paired rounds"
        if not bad
        else f"non-finite or zero measurements for {', '.join(bad)}"
    )
    return _check(f"step-costs/{table['workload']}", not bad, reason)


# ---------------------------------------------------------------------- part 2: host syncs


def _always(*_: Any, **__: Any) -> bool:
    return True


def _names_the_cpu(device: Any) -> bool:
    if isinstance(device, str):
        return device.split(":")[0] == "cpu"
    return isinstance(device, torch.device) and device.type == "cpu"


def _to_the_cpu(*args: Any, **kwargs: Any) -> bool:
    """``t.to("cpu")``, ``t.to(torch.device("cpu"), …)``, ``t.to(device="cpu")``; not a dtype
    or another tensor's device (which is the device, on the path an accelerator takes)."""
    return _names_the_cpu(kwargs.get("device")) or any(_names_the_cpu(a) for a in args)


def _bool_mask(index: Any, *_: Any) -> bool:
    """``t[mask]`` / ``t[mask] = v`` with a boolean tensor: its size is only known on the host."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts)


#: The Tensor methods that wait for the device (each is one sync on CUDA), with the test of a
#: call's arguments that says whether this call does: the value reads, ``nonzero`` (whose output
#: size is data-dependent), boolean-mask indexing, and a copy to the CPU.
HOST_READ_METHODS: dict[str, Callable[..., bool]] = {
    "item": _always,
    "tolist": _always,
    "__float__": _always,
    "__int__": _always,
    "__bool__": _always,
    "__index__": _always,
    "nonzero": _always,
    "cpu": _always,
    "to": _to_the_cpu,
    "__getitem__": _bool_mask,
    "__setitem__": _bool_mask,
}
#: torch functions that wait for the device like the methods above.
HOST_READ_FUNCTIONS = ("nonzero", "masked_select")
_SYNC_WARNING = "synchronizing"


def _site(filename: str, lineno: int) -> str:
    """``looksam/optim/_foreach.py:43``: a path from the package down, or the file's name."""
    parts = Path(filename).parts
    for anchor in ("looksam", "torch"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return f"{'/'.join(parts[i:])}:{lineno}"
    return f"{Path(filename).name}:{lineno}"


@dataclass
class StepReads:
    """What one optimizer step did outside its closure."""

    host_reads: int = 0
    syncs: int | None = None  # sync-debug warnings (CUDA only; None: not watched)
    sites: Counter[str] = field(default_factory=Counter)  # file:line → count, reads and syncs


class HostReadCounter:
    """Counts host reads (and, on CUDA, sync warnings) inside an optimizer's ``step``.

    Use :func:`count_step_host_reads`; :attr:`steps` holds one :class:`StepReads` per ``step``
    call. The closure the step calls (the model's forward and backward) is not counted.
    """

    def __init__(self, sync_debug: bool = False) -> None:
        self.sync_debug = sync_debug
        self.steps: list[StepReads] = []
        self._counting = False
        self._depth = 0  # float(t) may call item() inside: count the outermost read only
        self._current: StepReads | None = None
        self._caught: list[warnings.WarningMessage] = []
        self._mark = 0

    def _read(self, method: str) -> None:
        if self._counting and self._depth == 0 and self._current is not None:
            self._current.host_reads += 1
            frame = sys._getframe(2)  # the wrapper's caller
            self._current.sites[_site(frame.f_code.co_filename, frame.f_lineno)] += 1

    def _resume(self) -> None:
        self._counting = True
        if self.sync_debug:
            self._mark = len(self._caught)
            torch.cuda.set_sync_debug_mode("warn")

    def _pause(self) -> None:
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode(0)
            current = self._current
            for caught in self._caught[self._mark :]:
                if current is not None and _SYNC_WARNING in str(caught.message):
                    current.syncs = (current.syncs or 0) + 1
                    current.sites[f"sync@{_site(caught.filename, caught.lineno)}"] += 1
            self._mark = len(self._caught)
        self._counting = False

    def _method(
        self, name: str, original: Callable[..., Any], reads: Callable[..., bool] = _always
    ) -> Callable[..., Any]:
        def read(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self._counting and reads(*args, **kwargs):
                self._read(name)
            self._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                self._depth -= 1

        return read

    def _closure(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        def uncounted() -> Any:
            self._pause()
            try:
                return closure()
            finally:
                self._resume()

        return uncounted

    def _step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            if args and callable(args[0]):
                args = (self._closure(args[0]), *args[1:])
            elif callable(kwargs.get("closure")):
                kwargs["closure"] = self._closure(kwargs["closure"])
            self._current = StepReads(syncs=0 if self.sync_debug else None)
            self.steps.append(self._current)
            self._resume()
            try:
                return original(*args, **kwargs)
            finally:
                self._pause()
                self._current = None

        return step


@contextlib.contextmanager
def count_step_host_reads(
    optimizer: torch.optim.Optimizer, *, sync_debug: bool = False
) -> Iterator[HostReadCounter]:
    """Count the host reads of every ``optimizer.step`` call made inside the block.

    ``torch.Tensor``'s host-reading methods (:data:`HOST_READ_METHODS`) and the torch functions
    in :data:`HOST_READ_FUNCTIONS` are wrapped while the block runs and ``optimizer.step`` is
    wrapped on the instance; all are restored afterwards.
    Reads made by the closure the step calls (forward and backward) are not counted, nor
    anything outside ``step``. With ``sync_debug`` (CUDA), ``torch.cuda.set_sync_debug_mode``
    is ``"warn"`` only while the step's own code runs, and its warnings are counted per step;
    other warnings raised meanwhile are re-issued after the block.
    """
    counter = HostReadCounter(sync_debug=sync_debug)
    patched: dict[str, Any] = {}
    functions = {name: getattr(torch, name) for name in HOST_READ_FUNCTIONS}
    had_step = "step" in vars(optimizer)
    own_step = vars(optimizer).get("step")
    previous_mode = torch.cuda.get_sync_debug_mode() if sync_debug else 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter._caught = caught
        try:
            for name, reads in HOST_READ_METHODS.items():
                patched[name] = torch.Tensor.__dict__.get(name)
                wrapped = counter._method(name, getattr(torch.Tensor, name), reads)
                setattr(torch.Tensor, name, wrapped)
            for name, function in functions.items():
                setattr(torch, name, counter._method(name, function))
            optimizer.step = counter._step(optimizer.step)  # type: ignore[method-assign]
            yield counter
        finally:
            if had_step:
                optimizer.step = own_step  # type: ignore[method-assign,assignment]
            else:
                del optimizer.step
            for name, function in functions.items():
                setattr(torch, name, function)
            for name, original in patched.items():
                if original is None:
                    delattr(torch.Tensor, name)
                else:
                    setattr(torch.Tensor, name, original)
            if sync_debug:
                torch.cuda.set_sync_debug_mode(previous_mode)
    for message in caught:
        if _SYNC_WARNING not in str(message.message):
            warnings.warn_explicit(
                message.message, message.category, message.filename, message.lineno
            )


def _worst(steps: list[StepReads], looks: list[bool], look: bool, syncs: bool) -> int | None:
    values = [
        (s.syncs or 0) if syncs else s.host_reads
        for s, lk in zip(steps, looks, strict=True)
        if lk == look
    ]
    return max(values) if values else None


def check_host_syncs(setting: SyncSetting, device: str, enforce: bool) -> dict[str, Any]:
    """Part 2: a few plain and look steps of every SAM-family optimizer, their reads counted.

    k-step optimizers run with ``setting.k`` (2: look and plain steps alternate); those without
    a fixed schedule replay a second pass on every other step, so both kinds are seen (their
    rule is still evaluated every step). On CUDA the sync warnings are what is judged, elsewhere
    the host reads (reported, judged only when ``enforce``).
    """
    started = time.perf_counter()
    cuda = resolve_device(device).type == "cuda"
    measure = "host syncs" if cuda else "host reads"
    rows = []
    for name in sam_family():
        info = get_optimizer_info(name)
        allowance = info.host_read_allowance
        row: dict[str, Any] = {"optimizer": name, "label": info.label, "allowance": allowance}
        try:
            session = TrainingSession(
                RunConfig(
                    workload=setting.workload,
                    optimizer=name,
                    hyperparameters=_k_hyperparameters(name, setting.k),
                    batch_size=setting.batch_size,
                    device=device,
                    epochs=10_000,
                )
            )
            session.replay_second_passes(0.5, 2)
            # The path an accelerator takes, also in a CPU dry run (where "auto" reads floats).
            cast(SharpnessAwareOptimizer, session.optimizer).scalars = "device"
            batches = session.batches()
            for _ in range(setting.warmup_steps):
                session.train_step(*next(batches))
            looks = []
            with count_step_host_reads(session.optimizer, sync_debug=cuda) as counter:
                for _ in range(setting.steps):
                    before = session.passes
                    session.train_step(*next(batches))
                    looks.append(session.passes - before > 1)
            synchronize(session.device)
        except Exception as error:  # one optimizer's failure must not hide the others'
            row.update(error=_error_line(error), passed=False, per_step=[])
            rows.append(row)
            continue
        steps = counter.steps
        sites: Counter[str] = Counter()
        for s in steps:
            sites.update(s.sites)
        per_step = [
            {"look": lk, "host_reads": s.host_reads, "syncs": s.syncs}
            for s, lk in zip(steps, looks, strict=True)
        ]
        worst_plain = _worst(steps, looks, False, cuda)
        worst_look = _worst(steps, looks, True, cuda)
        worst = max(v for v in (worst_plain, worst_look, 0) if v is not None)
        row.update(
            error=None,
            plain_steps=looks.count(False),
            look_steps=looks.count(True),
            worst_plain=worst_plain,
            worst_look=worst_look,
            worst=worst,
            host_reads_per_step=sum(s.host_reads for s in steps) / max(1, len(steps)),
            sites=dict(sites.most_common()),
            per_step=per_step,
            passed=worst <= allowance,
        )
        rows.append(row)
        del session, batches
    _release_memory()
    return {
        "workload": setting.workload,
        "device": device,
        "measure": measure,
        "enforced": enforce,
        "warmup_steps": setting.warmup_steps,
        "steps": setting.steps,
        "k": setting.k,
        "rule": (
            "allowance per step: 1 for an optimizer whose registry entry has fixed_schedule "
            "False and a pass range with low != high (a rule that reads one value per step to "
            "decide on the second pass), 0 for every other"
        ),
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }


def _sync_checks(table: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    measure = table["measure"]
    for row in table["rows"]:
        name = f"host-sync/{row['optimizer']}"
        if row.get("error"):
            checks.append(_check(name, False, row["error"]))
            continue
        sites = ", ".join(f"{site} ×{n}" for site, n in list(row["sites"].items())[:3])
        reason = (
            f"up to {row['worst']} {measure} per step (plain {_dash(row['worst_plain'])}, look "
            f"{_dash(row['worst_look'])}), allowed {row['allowance']}"
            + (f"; from {sites}" if row["worst"] else "")
        )
        if not table["enforced"]:
            reason += " (informational: this plan does not enforce the allowance)"
        checks.append(_check(name, row["passed"], reason, enforced=table["enforced"]))
    return checks


# ---------------------------------------------------------------------- part 3: compile


@contextlib.contextmanager
def _compile_backend(backend: str | None) -> Iterator[None]:
    """``torch.compile`` with ``backend`` while sessions are built (the runner calls it)."""
    if backend is None:
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = original


def _compile_session(setting: CompileSetting, name: str, device: str, compiled: bool) -> Any:
    config = RunConfig(
        workload=setting.workload,
        optimizer=name,
        hyperparameters=_k_hyperparameters(name, setting.k),
        batch_size=setting.batch_size,
        device=device,
        amp=setting.amp,
        compile=compiled,
        epochs=10_000,
        seed=0,
    )
    with _compile_backend(setting.backend if compiled else None):
        return TrainingSession(config)


def _losses(session: TrainingSession, batches: Iterator[Any], steps: int) -> list[float]:
    return [float(session.train_step(*next(batches))) for _ in range(steps)]


def compare_compiled(setting: CompileSetting, device: str, name: str) -> dict[str, Any]:
    """Part 3 for one optimizer: compiled/eager step-time ratio and loss agreement.

    Both sessions start from the same seed and draw the same batches; Dynamo's caches are reset
    first (``torch._dynamo.reset()``), so the first compiled step includes the compilation.
    """
    started = time.perf_counter()
    row: dict[str, Any] = {
        "optimizer": name,
        "label": get_optimizer_info(name).label,
        "error": None,
    }
    torch._dynamo.reset()
    eager = _compile_session(setting, name, device, compiled=False)
    eager_batches = eager.batches()
    row["eager_losses"] = _losses(eager, eager_batches, setting.loss_steps)
    try:
        compiled = _compile_session(setting, name, device, compiled=True)
        compiled_batches = compiled.batches()
        synchronize(compiled.device)
        first = time.perf_counter()
        losses = _losses(compiled, compiled_batches, 1)
        synchronize(compiled.device)
        row["first_compiled_step_seconds"] = time.perf_counter() - first
        losses += _losses(compiled, compiled_batches, setting.loss_steps - 1)
        row["compiled_losses"] = losses
    except Exception as error:  # a compile failure is a finding, reported per optimizer
        row["error"] = _error_line(error)
        row["elapsed_s"] = time.perf_counter() - started
        return row
    a, b = row["eager_losses"][-1], row["compiled_losses"][-1]
    row["final_eager_loss"], row["final_compiled_loss"] = a, b
    row["relative_difference"] = abs(a - b) / max(abs(a), abs(b), 1e-12)
    row["losses_agree"] = (
        math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=setting.rel_tol)
    )

    def stepper(session: TrainingSession, batches: Iterator[Any]) -> Callable[[], None]:
        def step() -> None:
            session.train_step(*next(batches))

        return step

    try:
        timings = time_relative(
            {
                "eager": stepper(eager, eager_batches),
                "compiled": stepper(compiled, compiled_batches),
            },
            "eager",
            device=eager.device,
            steps_per_round=setting.steps_per_round,
            rounds=setting.rounds,
            warmup_steps=setting.warmup_steps,
        )
    except Exception as error:  # a recompile that fails late still fails the check
        row["error"] = _error_line(error)
        row["elapsed_s"] = time.perf_counter() - started
        return row
    by_name = {t.name: t for t in timings}
    row.update(
        eager_step_seconds=by_name["eager"].median_step_seconds,
        compiled_step_seconds=by_name["compiled"].median_step_seconds,
        ratio=by_name["compiled"].ratio,
        ratio_q1=by_name["compiled"].ratio_q1,
        ratio_q3=by_name["compiled"].ratio_q3,
        elapsed_s=time.perf_counter() - started,
    )
    del eager, compiled
    _release_memory()
    return row


def measure_compiled(setting: CompileSetting, device: str, log: Log = _stderr) -> dict[str, Any]:
    """Part 3: :func:`compare_compiled` for every optimizer of :data:`COMPILED_OPTIMIZERS`."""
    started = time.perf_counter()
    rows = []
    for name in COMPILED_OPTIMIZERS:
        log(f"  {name}: eager and compiled on {setting.workload}")
        rows.append(compare_compiled(setting, device, name))
    return {
        "workload": setting.workload,
        "batch_size": setting.batch_size,
        "amp": setting.amp,
        "k": setting.k,
        "backend": setting.backend or "inductor",
        "loss_steps": setting.loss_steps,
        "rel_tol": setting.rel_tol,
        "rounds": setting.rounds,
        "steps_per_round": setting.steps_per_round,
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }


def _compile_checks(table: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for row in table["rows"]:
        name = f"compile/{row['optimizer']}"
        if row["error"]:
            checks.append(_check(name, False, f"torch.compile failed: {row['error']}"))
            continue
        a, b = row["final_eager_loss"], row["final_compiled_loss"]
        verdict = "agree" if row["losses_agree"] else "differ"
        reason = (
            f"losses after {table['loss_steps']} steps {verdict}: eager {a:.6g}, compiled "
            f"{b:.6g} (relative difference {row['relative_difference']:.2g}, tolerance "
            f"{table['rel_tol']:g}); compiled/eager step time {row['ratio']:.2f}"
        )
        checks.append(_check(name, row["losses_agree"], reason))
    return checks


# ---------------------------------------------------------------------- the whole run


def _check(name: str, passed: bool, reason: str, *, enforced: bool = True) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "enforced": enforced, "reason": reason}


def machine(device: str) -> dict[str, Any]:
    """Where the numbers were measured: the runner's environment plus CUDA's versions."""
    dev = resolve_device(device)
    info: dict[str, Any] = asdict(environment(dev))
    info["cuda_version"] = torch.version.cuda
    info["cudnn_version"] = (
        torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    )
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
        info["gpu_count"] = torch.cuda.device_count()
    return info


def run_gpu_bench(
    *,
    dry_run: bool = False,
    time_budget: float = DEFAULT_TIME_BUDGET_S,
    plan: Plan | None = None,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Run the three parts and return the results (what ``results.json`` holds).

    Args:
        dry_run: the CPU plan (:data:`DRY_RUN_PLAN`) instead of :data:`GPU_PLAN`.
        time_budget: seconds the whole run aims for; each part gets its ``share`` of it.
        plan: run this plan instead (a notebook's own settings).
        log: where progress lines go (stderr by default).
    """
    plan = plan or (DRY_RUN_PLAN if dry_run else GPU_PLAN)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": plan.mode,
        "machine": machine(plan.device),
        "time_budget_s": time_budget,
        "step_costs": [],
        "host_sync": None,
        "compile": None,
        "checks": [],
    }
    checks: list[dict[str, Any]] = results["checks"]
    total_parts = 3
    log(
        f"[1/{total_parts}] step costs ({plan.step_costs[0].amp}) of {len(default_optimizers())} "
        "optimizers"
    )
    for setting in plan.step_costs:
        try:
            table = measure_step_costs(setting, plan.device, setting.share * time_budget, log)
        except Exception as error:  # OOM, a crashing optimizer: report, go on with the rest
            _release_memory()
            checks.append(_check(f"step-costs/{setting.workload}", False, _error_line(error)))
            continue
        results["step_costs"].append(table)
        checks.append(_step_cost_check(table))
    log(f"[2/{total_parts}] host syncs of {len(sam_family())} SAM-family optimizers")
    try:
        sync = check_host_syncs(plan.sync, plan.device, plan.enforce_syncs)
        results["host_sync"] = sync
        checks.extend(_sync_checks(sync))
    except Exception as error:
        checks.append(_check("host-sync", False, _error_line(error)))
    log(f"[3/{total_parts}] torch.compile against eager")
    try:
        compiled = measure_compiled(plan.compile, plan.device, log)
        results["compile"] = compiled
        checks.extend(_compile_checks(compiled))
    except Exception as error:
        checks.append(_check("compile", False, _error_line(error)))
    elapsed = time.perf_counter() - started
    results["elapsed_s"] = elapsed
    checks.append(
        _check(
            "time-budget",
            elapsed <= time_budget,
            f"{elapsed:.0f} s of {time_budget:.0f} s",
            enforced=False,
        )
    )
    results["passed"] = all(c["passed"] for c in checks if c["enforced"])
    return results


# ---------------------------------------------------------------------- Markdown


def _dash(value: Any) -> str:
    return "–" if value is None else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: Any, fmt: str) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return format(value, fmt)


def to_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: a heading with the card, then one table per part and checks."""
    env = results["machine"]
    dry = results["mode"] != "gpu"
    lines = []
    if dry:
        lines.append(f"## GPU benchmark: dry run on CPU ({env['device_name']}), not GPU numbers")
    else:
        lines.append(f"## GPU benchmark: {env['device_name']}")
    commit = (env.get("git_commit") or "")[:10]
    lines += [
        "",
        f"torch {env['torch_version']}, CUDA {env.get('cuda_version') or '–'}, "
        f"{results['elapsed_s'] / 60:.1f} min of a {results['time_budget_s'] / 60:.1f} min "
        f"budget{f', commit {commit}' if commit else ''}. "
        "Generated by `bench/gpu.sh`" + (" `--dry-run`." if dry else "."),
    ]
    for table in results["step_costs"]:
        ref = get_optimizer_info(table["reference"]).label
        lines += [
            "",
            f"### Step cost relative to {ref}: {table['workload']} (batch {table['batch_size']}, "
            f"{table['amp']}, k = {table['k']}, median of {table['rounds']} paired rounds × "
            f"{table['steps_per_round']} steps)",
            "",
            f"| Optimizer | Step / {ref} | IQR | Floor (passes) | Overhead | Samples/s | "
            "Step (ms) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in table["rows"]:
            lines.append(
                f"| {row['label']} | {_num(row['ratio'], '.2f')} | "
                f"{_num(row['ratio_q1'], '.2f')}–{_num(row['ratio_q3'], '.2f')} | "
                f"{_num(row['floor'], '.2f')} | {_num(row['overhead'], '+.2f')} | "
                f"{_num(row['samples_per_second'], ',.0f')} | "
                f"{_num(row['median_step_seconds'] * 1e3, '.2f')} |"
            )
    sync = results.get("host_sync")
    if sync:
        measure = sync["measure"]
        lines += [
            "",
            f"### {measure.capitalize()} per optimizer step ({sync['workload']} on "
            f"{sync['device']}, {sync['steps']} steps after {sync['warmup_steps']} warm-up, "
            f"k = {sync['k']})",
            "",
            "| Optimizer | Allowed | Plain step, most | Look step, most | Host reads / step | "
            "Where | Result |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for row in sync["rows"]:
            if row.get("error"):
                lines.append(
                    f"| {row['label']} | {row['allowance']} | – | – | – | "
                    f"{_cell(row['error'])} | error |"
                )
                continue
            sites = ", ".join(f"`{s}` ×{n}" for s, n in list(row["sites"].items())[:2])
            verdict = "ok" if row["passed"] else "over" if not sync["enforced"] else "FAIL"
            lines.append(
                f"| {row['label']} | {row['allowance']} | {_dash(row['worst_plain'])} | "
                f"{_dash(row['worst_look'])} | {_num(row['host_reads_per_step'], '.2f')} | "
                f"{_cell(sites) or '–'} | {verdict} |"
            )
        if not sync["enforced"]:
            lines += [
                "",
                "Reported, not judged: this plan does not enforce the allowance.",
            ]
    comp = results.get("compile")
    if comp:
        lines += [
            "",
            f"### torch.compile against eager: {comp['workload']} (batch {comp['batch_size']}, "
            f"{comp['amp']}, {comp['backend']}, {comp['rounds']} paired rounds)",
            "",
            f"| Optimizer | Compiled / eager | IQR | First compiled step (s) | "
            f"Loss after {comp['loss_steps']} steps, eager | compiled | Agree |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in comp["rows"]:
            if row["error"]:
                lines.append(f"| {row['label']} | – | – | – | – | – | {_cell(row['error'])} |")
                continue
            lines.append(
                f"| {row['label']} | {_num(row.get('ratio'), '.2f')} | "
                f"{_num(row.get('ratio_q1'), '.2f')}–{_num(row.get('ratio_q3'), '.2f')} | "
                f"{_num(row.get('first_compiled_step_seconds'), '.1f')} | "
                f"{_num(row['final_eager_loss'], '.5g')} | "
                f"{_num(row['final_compiled_loss'], '.5g')} | "
                f"{'yes' if row['losses_agree'] else 'NO'} |"
            )
    lines += ["", "### Checks", "", "| Check | Result | Reason |", "|---|---|---|"]
    for check in results["checks"]:
        result = "pass" if check["passed"] else "FAIL" if check["enforced"] else "note"
        lines.append(f"| {check['name']} | {result} | {_cell(check['reason'])} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    write_json(results, json_path)
    md_path.write_text(to_markdown(results))
    return json_path, md_path


# ---------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _out_problem(out: Path, source: str = "--out") -> str | None:
    """Why results could not be written to ``out`` (None: fine); creates the folder."""
    if out.exists() and not out.is_dir():
        return f"{source} {out} is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{source} {out}: cannot create it ({error.strerror or error})"
    if not os.access(out, os.W_OK | os.X_OK):
        return f"{source} {out}: cannot write there"
    return None


def main(argv: list[str] | None = None) -> int:
    """``bench/gpu.sh``: parse, check the output folder, run, write, print; the exit code."""
    parser = _Parser(
        prog="bench/gpu.sh",
        description="One-shot GPU benchmark: step costs in bf16, host syncs per optimizer step, "
        "torch.compile against eager. Writes results.json and results.md.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: $OUT when set, else {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny CPU run of every part (automatic without a CUDA device)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=DEFAULT_TIME_BUDGET_S,
        metavar="SECONDS",
        help=f"wall-clock the run aims for (default {DEFAULT_TIME_BUDGET_S:.0f})",
    )
    args = parser.parse_args(argv)
    if not (math.isfinite(args.time_budget) and args.time_budget > 0):
        parser.error(f"--time-budget must be a number of seconds > 0, got {args.time_budget:g}")
    if args.out is not None:
        out, source = args.out, "--out"
    elif os.environ.get("OUT"):
        out, source = Path(os.environ["OUT"]), "$OUT"
    else:
        out, source = DEFAULT_OUT, "the output folder"
    problem = _out_problem(out, source)
    if problem is not None:
        parser.error(problem)
    dry_run = args.dry_run
    if not dry_run and not torch.cuda.is_available():
        _stderr("no CUDA device: running the CPU dry run (--dry-run); its numbers are not GPU's")
        dry_run = True
    results = run_gpu_bench(dry_run=dry_run, time_budget=args.time_budget)
    json_path, md_path = write_results(results, out)
    print(to_markdown(results), end="")
    failed = [c["name"] for c in results["checks"] if c["enforced"] and not c["passed"]]
    _stderr(f"wrote {json_path} and {md_path}")
    if failed:
        _stderr(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
