"""The one training loop every optimizer is measured with.

It drives optimizers only through ``step(closure)`` (fp16 adds the documented GradScaler recipe)
and the registry, times only training (warm-up excluded, device synchronised before every clock
read, evaluation outside the clock), and turns every ending — finished, diverged, out of memory —
into a frozen :class:`RunResult`. What counts as diverged is :func:`divergence`.

Under torchrun (or inside an existing process group) the same loop trains data-parallel: the
model is wrapped in ``DistributedDataParallel``, every rank takes its contiguous slice of each
global batch (see :mod:`looksam.train.distributed`), evaluation is sharded across the ranks and
its counts summed, and rank 0's result carries the global throughput and every rank's own.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from looksam.optim import LookSAM, SharpnessAwareOptimizer, create_optimizer, frozen_bn_stats
from looksam.optim._contract import FORWARD_ONLY_PASS, LossTermMethod
from looksam.optim._registry import get_optimizer_info, resolve_base
from looksam.train.distributed import (
    DistContext,
    check_global_batch,
    fail_at_step,
    init_distributed,
)
from looksam.train.timing import spread_looks, synchronize
from looksam.train.workloads import (
    Workload,
    WorkloadInfo,
    create_workload,
    get_workload_info,
)

AMP_MODES = ("off", "bf16", "fp16")
#: Whose gradient a data-parallel look step perturbs with: the all-reduced one, or each rank's.
PERTURBATIONS = ("global", "per-rank")
#: ``torch.compile`` modes; those that capture CUDA graphs need fixed parameter addresses.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

#: The clock the runner reads; a module attribute so tests can drive it deterministically.
now: Callable[[], float] = time.perf_counter
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run (defaults come from the workload)."""

    workload: str
    optimizer: str
    base: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # rho, k, alpha, momentum…
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    max_steps: int | None = None  # stop early (benchmarks, tests)
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    compile: bool = False
    compile_mode: str = "default"  # torch.compile's mode, when compile is on
    channels_last: bool = False
    warmup_fraction: float = 0.05  # of all steps, linear LR warm-up before the cosine decay
    rho_warmup_fraction: float = 0.0  # of all steps, ρ ramped linearly from 0 (large batches)
    grad_clip: float | None = None
    timing_warmup_steps: int = 5
    data_dir: str | None = None
    perturbation: str = "global"  # data-parallel look steps: "global" or "per-rank" (m-sharpness)
    # Data-parallel debugging: all-gather a checksum of the weights every N steps and raise if
    # the replicas differ (0: never). The check runs inside the timed steps.
    replica_check_every: int = 0
    #: Gradient accumulation: each (per-rank) batch runs forward and backward as this many
    #: micro-batches inside the closure, so every pass of every optimizer sees the whole batch's
    #: gradient while only a micro-batch's activations are in memory at a time.
    micro_batches: int = 1


@dataclass(frozen=True)
class EpochRecord:
    """Metrics at the end of one epoch; ``train_seconds`` is cumulative and excludes eval."""

    epoch: int
    step: int
    train_loss: float
    test_accuracy: float | None
    train_seconds: float


@dataclass(frozen=True)
class Environment:
    """Where a result was measured, so numbers are never compared across machines blindly."""

    device: str
    device_name: str
    torch_version: str
    timm_version: str | None
    python_version: str
    cpu_threads: int
    platform: str
    git_commit: str | None
    backend: str | None = None  # torch.distributed backend of a data-parallel run (gloo, nccl)


@dataclass(frozen=True)
class RunResult:
    """One finished (or stopped) run; serialisable to JSON."""

    config: RunConfig
    status: str  # "ok" | "diverged" | "oom"
    message: str
    steps: int
    #: Forward-backward passes over the whole batch: a pass over a subset counts its share of
    #: the batch, a forward-only pass ``FORWARD_ONLY_PASS`` of that (ESAM, K-SAM, MESA).
    forward_backward_passes: float
    train_seconds: float  # every training step, evaluation excluded (AlgoPerf)
    warmup_seconds: float  # the part of it spent in the first ``timing_warmup_steps`` steps
    samples_per_second: float  # after the warm-up steps
    median_step_seconds: float  # median over chunks of TIMING_CHUNK steps, after warm-up
    final_accuracy: float | None
    best_accuracy: float | None
    time_to_target_seconds: float | None
    history: tuple[EpochRecord, ...]
    environment: Environment
    #: Step at whose epoch end the target was first reached (None: never, or no target).
    target_step: int | None = None
    #: Per-step wall-clock after warm-up, plain and look steps apart (see :class:`StepTimes`).
    step_times: dict[str, Any] = field(default_factory=dict)
    # Data-parallel runs (defaults describe one process, so older JSON still reads):
    world_size: int = 1  # processes the run was split across
    per_rank_samples_per_second: tuple[float, ...] = ()  # each rank's own slice, by rank
    rank: int = 0  # which process returned this result; only rank 0's is printed and written
    #: State the method keeps beyond the base optimizer, in bytes (SAF's bank, MESA's EMA model).
    method_memory: dict[str, int] = field(default_factory=dict)
    #: The part of it that grows with the training set, per training example (SAF's bank).
    method_bytes_per_example: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is the result to report (rank 0, or the only process)."""
        return self.rank == 0

    @property
    def passes_per_step(self) -> float | None:
        """Measured forward-backward passes per step (closure calls): what the run really paid."""
        return self.forward_backward_passes / self.steps if self.steps else None

    @property
    def second_pass_fraction(self) -> float | None:
        """Share of steps that took a second pass (SAM steps), e.g. AE-SAM's adaptive rate.

        None where passes are not whole steps' worth (a pass over part of the batch, a forward
        pass of its own: ESAM, K-SAM, MESA), so that the count says nothing about steps.
        """
        passes = self.passes_per_step
        if passes is None or not _whole_passes(self.config.optimizer):
            return None
        return passes - 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def write_json(self, path: Path) -> None:
        """Write the result as indented JSON, atomically: a reader never sees half a file."""
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["config"] = RunConfig(**fields["config"])
        fields["history"] = tuple(EpochRecord(**h) for h in fields["history"])
        fields["environment"] = Environment(**fields["environment"])
        if "per_rank_samples_per_second" in fields:
            fields["per_rank_samples_per_second"] = tuple(fields["per_rank_samples_per_second"])
        return cls(**fields)


def _whole_passes(optimizer: str) -> bool:
    """Whether ``optimizer``'s passes are whole passes over the batch (a drop-in wrapper); a
    name this process has not registered (a plugin's result read without it) is taken as one."""
    try:
        return get_optimizer_info(optimizer).drop_in
    except ValueError:
        return True


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist (ValueError)."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not mps:
        raise ValueError("--device mps was asked for but Apple's MPS backend is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(device: torch.device, backend: str | None = None) -> Environment:
    """Describe the machine and library versions for the result."""
    try:  # the installed version, without importing timm (most of a second)
        timm_version: str | None = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - timm is a dependency
        timm_version = None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    return Environment(
        device=str(device),
        device_name=device_name,
        torch_version=torch.__version__,
        timm_version=timm_version,
        python_version=platform.python_version(),
        cpu_threads=torch.get_num_threads(),
        platform=platform.platform(),
        git_commit=git_commit_of_project(),
        backend=backend,
    )


def git_commit_of_project() -> str | None:
    """The project's git commit, if it runs from a checkout (recorded with every result)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _compiled(module: nn.Module, mode: str) -> Callable[[Tensor], Tensor]:
    """``torch.compile(module)`` in ``mode`` (torch's own default for "default")."""
    return torch.compile(module, mode=None if mode == "default" else mode)  # type: ignore[return-value]


def validate_config(config: RunConfig, world_size: int = 1) -> None:
    """Raise ValueError for anything a user could have typed wrong, before any work starts.

    Args:
        config: the run.
        world_size: processes the run will be split across; the global batch must divide by it.
    """
    info = get_workload_info(config.workload)
    optimizer = get_optimizer_info(config.optimizer)
    if config.amp not in AMP_MODES:
        raise ValueError(f"unknown --amp {config.amp!r}; choose one of: {', '.join(AMP_MODES)}")
    if config.perturbation not in PERTURBATIONS:
        raise ValueError(
            f"unknown --perturbation {config.perturbation!r}; choose one of: "
            f"{', '.join(PERTURBATIONS)}"
        )
    if config.compile_mode not in COMPILE_MODES:
        raise ValueError(
            f"unknown --compile-mode {config.compile_mode!r}; choose one of: "
            f"{', '.join(COMPILE_MODES)}"
        )
    if config.compile and config.compile_mode in CUDA_GRAPH_MODES and not optimizer.cuda_graphs:
        raise ValueError(
            f"--compile-mode {config.compile_mode} captures CUDA graphs, which replay fixed "
            f"parameter addresses, but {config.optimizer} points the parameters at perturbed "
            "copies for a pass; use --compile-mode default or max-autotune-no-cudagraphs"
        )
    if config.perturbation == "per-rank" and not optimizer.per_rank_perturbation:
        raise ValueError(
            f"{config.optimizer} cannot perturb per rank (its rule needs the global gradient, "
            "or it takes no perturbation pass); use --perturbation global"
        )
    if config.amp == "fp16" and not optimizer.grad_scaler:
        raise ValueError(
            f"{config.optimizer} does not work under fp16's GradScaler (its rule reads gradient "
            "norms that the loss scale distorts); use --amp bf16 or --amp off"
        )
    if config.perturbation == "per-rank" and config.amp == "fp16":
        raise ValueError(
            "--perturbation per-rank cannot be combined with --amp fp16: each rank's GradScaler "
            "would see its own overflows in the unsynchronised first pass and the loss scales "
            "would drift apart; use --amp bf16 or --perturbation global"
        )
    _check_contract(config, info)
    if isinstance(config.replica_check_every, bool) or config.replica_check_every < 0:
        raise ValueError(
            f"replica check interval must be an integer >= 0 (0 never checks), "
            f"got {config.replica_check_every!r}"
        )
    for name, value in (
        ("batch size", config.batch_size),
        ("epochs", config.epochs),
        ("max steps", config.max_steps),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if config.lr is not None and not config.lr > 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise ValueError(f"grad clip must be > 0, got {config.grad_clip}")
    if not 0.0 <= config.warmup_fraction < 1.0:
        raise ValueError(f"warmup fraction must be in [0, 1), got {config.warmup_fraction}")
    if not 0.0 <= config.rho_warmup_fraction < 1.0:
        raise ValueError(
            f"rho warm-up fraction must be in [0, 1), got {config.rho_warmup_fraction}"
        )
    if config.timing_warmup_steps < 0:
        raise ValueError(f"timing warm-up steps must be >= 0, got {config.timing_warmup_steps}")
    _check_micro_batches(config, info.default_batch_size, world_size)
    if info.needs_data_dir and config.data_dir is None:
        create_workload(config.workload)  # raises WorkloadDataError with the data hint
    device = resolve_device(config.device)
    if world_size > 1:
        if device.type == "mps":
            raise ValueError("data-parallel runs need --device cpu or cuda (MPS has no backend)")
        check_global_batch(config.batch_size or info.default_batch_size, world_size)
    # Builds a throwaway optimizer on one tensor: checks names, ranges and the base.
    create_optimizer(
        config.optimizer,
        [torch.zeros(1, requires_grad=True)],
        base=config.base,
        total_steps=1,  # any valid length: the run's own is known once the data is loaded
        **_optimizer_kwargs(config, info.default_lr),
    )


def _check_contract(config: RunConfig, workload: WorkloadInfo) -> None:
    """What the method needs from the loop (``looksam.optim._contract``), the workload gives."""
    method = get_optimizer_info(config.optimizer)
    name = config.optimizer
    if method.needs_per_sample_loss and not workload.provides_per_sample_loss:
        raise ValueError(
            f"{name} needs each example's loss, which workload {config.workload} does not give "
            "(its loss is its own): give custom_workload a per_sample_loss= too, or override "
            "Workload.per_sample_loss"
        )
    if method.needs_sample_index and not workload.provides_sample_index:
        raise ValueError(
            f"{name} needs each example's position in the training set (sample ids), which "
            f"workload {config.workload} does not give: build it with custom_workload (datasets "
            "give ids) or implement Workload.indexed_train_batches"
        )


def _check_micro_batches(config: RunConfig, default_batch_size: int, world_size: int) -> None:
    """Every micro-batch must hold at least one example of each rank's share of the batch."""
    count = config.micro_batches
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"micro-batches must be an integer >= 1, got {count!r}")
    per_rank = (config.batch_size or default_batch_size) // max(1, world_size)
    if count > per_rank:
        raise ValueError(
            f"{count} micro-batches cannot split a batch of {per_rank} examples per process: "
            f"use at most {per_rank}"
        )


def _optimizer_kwargs(config: RunConfig, workload_lr: float) -> dict[str, Any]:
    kwargs = dict(config.hyperparameters)
    base = resolve_base(config.optimizer, config.base)
    if config.lr is not None:
        kwargs["lr"] = config.lr
    elif get_optimizer_info(base or config.optimizer).uses_workload_lr and "lr" not in kwargs:
        kwargs["lr"] = workload_lr  # the workload's tuned SGD rate; others use registry defaults
    return kwargs


class TrainingSession:
    """Model, optimizer, data and the step function for one configuration.

    Shared by :func:`run_training` and the ``bench`` command, so the step that is timed for speed
    is the very step that is trained for accuracy.

    With ``dist`` the session is one rank of a data-parallel run: the model is wrapped in
    ``DistributedDataParallel`` (buffers broadcast from rank 0 at every forward, no search for
    unused parameters), ``batch_size`` stays the *global* batch and :meth:`batches` yields this
    rank's contiguous slice of each. Every rank seeds identically, so all draw the same global
    batches; the global RNG is then re-seeded per rank so dropout masks differ between slices.
    """

    def __init__(
        self,
        config: RunConfig,
        workload: Workload | None = None,
        dist: DistContext | None = None,
    ) -> None:
        validate_config(config, 1 if dist is None else dist.world_size)
        self.config = config
        self.dist = dist
        self.device = resolve_device(config.device) if dist is None else dist.device
        data_dir = Path(config.data_dir) if config.data_dir else None
        self.workload = workload or create_workload(config.workload, data_dir=data_dir)
        info = self.workload.info()
        self.batch_size = config.batch_size or info.default_batch_size
        self.local_batch_size = check_global_batch(
            self.batch_size, 1 if dist is None else dist.world_size
        )
        self.epochs = config.epochs or info.default_epochs
        seed_everything(config.seed)
        self.workload.prepare(self.device)
        self.workload.check_batch_size(self.batch_size)
        model = self.workload.build_model().to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module = model
        self.ddp: DistributedDataParallel | None = None
        trained: nn.Module = model
        if dist is not None:
            # DDP broadcasts rank 0's weights here and its buffers before every forward (the
            # default); the default gradient_as_bucket_view=False gives every p.grad storage of
            # its own. Every parameter gets a gradient: no search for unused ones.
            self.ddp = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
            trained = self.ddp
            if dist.rank:  # rank 0 carries on with the single-process stream
                seed_everything(config.seed + _RANK_SEED_STRIDE * dist.rank)
        self.forward: Callable[[Tensor], Tensor] = (
            _compiled(trained, config.compile_mode) if config.compile else trained
        )
        self.steps_per_epoch = self.workload.steps_per_epoch(self.batch_size)
        total = self.steps_per_epoch * self.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.optimizer = create_optimizer(
            config.optimizer,
            model,
            base=config.base,
            total_steps=self.total_steps,  # for schedules over the run (AE-SAM, late-phase SAM)
            **_optimizer_kwargs(config, info.default_lr),
        )
        self.sam = self.optimizer if isinstance(self.optimizer, SharpnessAwareOptimizer) else None
        #: A method with a loss term of its own (SAF, MESA): added to the loss on every pass.
        self.loss_term = self.optimizer if isinstance(self.optimizer, LossTermMethod) else None
        wrapper = self.sam or self.loss_term
        self.base_optimizer = wrapper.base if wrapper is not None else self.optimizer
        method = get_optimizer_info(config.optimizer)
        #: The passes run through a BatchClosure (per-example losses, subsets) for ESAM, K-SAM.
        self.per_example = method.needs_per_sample_loss
        #: Batches carry each example's position in the training set (SAF's bank).
        self.with_index = method.needs_sample_index
        if self.loss_term is not None:
            if dist is not None:
                self.loss_term.gather = dist.concat  # per-example state: every rank's rows
            self.loss_term.attach(
                model,
                num_examples=self.workload.num_train_examples,
                steps_per_epoch=self.steps_per_epoch,
            )
        #: Per-rank perturbation: the first pass of a look step skips DDP's all-reduce.
        self.local_first_pass = (
            dist is not None and self.sam is not None and config.perturbation == "per-rank"
        )
        if self.local_first_pass and isinstance(self.optimizer, LookSAM):
            assert dist is not None
            self.optimizer.sync_gv = dist.average_  # g_v from a local g: average it
        self.passes = 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _warmup_cosine(self.total_steps, config.warmup_fraction)
        )
        # Large-batch recipe: ρ grows linearly from 0 so early, large steps are not perturbed
        # at full radius; the optimizer reads ``rho`` on every look step.
        self.rho_target = self.sam.rho if self.sam is not None else 0.0
        self.rho_warmup_steps = int(self.total_steps * config.rho_warmup_fraction)
        self.micro_batches = config.micro_batches
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        if config.grad_clip is not None:
            clip = config.grad_clip
            params = [p for p in model.parameters() if p.requires_grad]

            # Clipping right before the base step clips the gradient it actually applies
            # (g_s or the LookSAM gradient), after any GradScaler unscaling.
            def clip_before_step(*_: Any) -> None:
                nn.utils.clip_grad_norm_(params, clip)

            self.base_optimizer.register_step_pre_hook(clip_before_step)
        self.generator = torch.Generator().manual_seed(config.seed)

    def replay_second_passes(self, share: float | None, period: int) -> None:
        """Timing only: give an optimizer without a fixed schedule (AE-SAM, late-phase SAM) a
        second pass on ``share`` of every ``period`` steps, the mix a whole run has, instead of
        whatever its rule does in a short window at the start. ``share`` None: the registry's
        expectation. Optimizers with a fixed schedule are left alone."""
        info = get_optimizer_info(self.config.optimizer)
        wrapper = self.sam or self.loss_term
        if wrapper is None or info.fixed_schedule:
            return
        if share is None:
            share = info.second_pass_share(self.config.hyperparameters)
        wrapper.replay_look_schedule(spread_looks(share, period))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _prepare_input(self, x: Tensor) -> Tensor:
        if self.config.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(
        self,
        x: Tensor,
        y: Tensor,
        index: Tensor | None = None,
        *,
        after_backward: Callable[[], None] | None = None,
    ) -> Tensor:
        """One optimizer step on one batch; returns the first pass's loss (detached).

        ``index``: each example's position in the training set, for a method that needs it
        (:meth:`batches` yields it then). ``after_backward`` runs after every backward pass (g,
        then g_s on a look step), when the parameters' ``.grad`` hold that pass's gradient:
        measurements such as ``diagnose`` read them there instead of re-implementing the step.
        """
        x = self._prepare_input(x)
        sam = self.sam
        if sam is not None and self.rho_warmup_steps:
            sam.rho = self.rho_target * min(1.0, (sam.steps_done + 1) / self.rho_warmup_steps)
        batch = len(y)

        def run_pass(rows: Tensor | None, backward: bool) -> Tensor:
            """Forward (and backward) on the examples ``rows`` of the batch (None: all of it), as
            a batch of their own, split into micro-batches; the detached losses, one per example
            (per-example methods) or their mean."""
            xs, ys, ids = (x, y, index) if rows is None else (x[rows], y[rows], _take(index, rows))
            if backward:
                self.optimizer.zero_grad(set_to_none=True)
            perturbed = sam is not None and sam.in_second_pass
            # Per-rank perturbation: the first pass of a look step keeps g local to this rank.
            local = self.local_first_pass and sam is not None and sam.is_look_step
            local = backward and local and not perturbed
            losses: list[Tensor] = []
            parts = _micro_batches(len(ys), self.micro_batches)
            for number, part in enumerate(parts):
                last = number == len(parts) - 1
                with contextlib.ExitStack() as stack:
                    # forward *and* backward under no_sync, or DDP syncs: kept local on the
                    # per-rank first pass, and synced once, with the last micro-batch, otherwise
                    if self.ddp is not None and backward and (local or not last):
                        stack.enter_context(self.ddp.no_sync())
                    if not backward:
                        stack.enter_context(torch.no_grad())
                    # BatchNorm's running statistics learn from the training pass at w only
                    frozen = perturbed or not backward
                    with frozen_bn_stats(self.model, enabled=frozen), self._autocast():
                        loss, per_example = self._loss(xs[part], ys[part], _take(ids, part))
                    if len(parts) > 1:  # the batch's mean: each micro-batch weighted by its size
                        loss = loss * (len(ys[part]) / len(ys))
                    if backward:
                        scaled = loss if self.scaler is None else self.scaler.scale(loss)
                        scaled.backward()
                losses.append((loss if per_example is None else per_example).detach())
            self.passes += len(ys) / batch * (1.0 if backward else FORWARD_ONLY_PASS)
            if self.loss_term is not None:  # a forward pass of its own (MESA's EMA model)
                self.passes += self.loss_term.take_forward_examples() / batch * FORWARD_ONLY_PASS
            if backward and after_backward is not None:
                after_backward()
            if self.per_example:
                return torch.cat(losses)
            return losses[0] if len(losses) == 1 else torch.stack(losses).sum()

        def closure() -> Tensor:
            return run_pass(None, True)

        def batch_closure(subset: Tensor | None = None, *, backward: bool = True) -> Tensor:
            return run_pass(subset, backward)

        step_closure = batch_closure if self.per_example else closure
        if self.scaler is None:
            loss: Tensor = self.optimizer.step(step_closure)  # type: ignore[arg-type,assignment]
        else:
            loss = self._fp16_step(step_closure)
        self.scheduler.step()
        return loss

    def _loss(self, x: Tensor, y: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The mean loss of one micro-batch (with the method's own term), and the per-example
        losses when the method asked for them."""
        logits = self.forward(x)
        per_example = None
        if self.per_example:
            per_example = self.workload.per_sample_loss(logits, y)
            loss = per_example.mean()
        else:
            loss = self.workload.loss(logits, y)
        if self.loss_term is not None:
            loss = loss + self.loss_term.loss_term(x, logits, index)
        return loss, per_example

    def _fp16_step(self, closure: Callable[..., Tensor]) -> Tensor:
        scaler = self.scaler
        assert scaler is not None
        if self.sam is None:
            with torch.enable_grad():
                loss = closure()
            scaler.step(self.optimizer)
        else:
            sam = self.sam
            # The optimizer runs its own passes; GradScaler unscales g before a perturbation is
            # formed from it and unscales (and on overflow skips) the base step.
            loss = sam.step(
                closure,
                base_step=lambda: scaler.step(sam.base),
                unscale=lambda: scaler.unscale_(sam),
            )
        scaler.update()
        return loss

    @torch.no_grad()
    def evaluate(self) -> float:
        """Test accuracy of the current weights (train mode restored afterwards).

        Data-parallel: every rank must call it. Each evaluates its contiguous slice of every test
        batch (``Workload.eval_share``) with rank 0's buffers, through the bare module (no DDP
        collectives), and the (correct, total) counts are summed, so the accuracy is exact and
        the same on all ranks.
        """
        dist = self.dist
        forward = self.forward if dist is None else self.model
        if dist is not None:
            dist.broadcast_buffers_(self.model)
        self.model.eval()
        counts = torch.zeros(2, dtype=torch.int64, device=self.device)
        rank, world = self._place()
        try:
            for x, y in self.workload.eval_share(max(self.batch_size, 256), rank, world):
                with self._autocast():
                    logits = forward(self._prepare_input(x))
                counts[0] += (logits.argmax(dim=1) == y).sum()
                counts[1] += len(y)
        finally:
            self.model.train()
        if dist is not None:
            dist.sum_(counts)
        correct, total = counts.tolist()
        return correct / max(total, 1)

    def _place(self) -> tuple[int, int]:
        """(rank, world size) of this process: (0, 1) outside a data-parallel run."""
        return (0, 1) if self.dist is None else (self.dist.rank, self.dist.world_size)

    def batches(self) -> Iterator[tuple[Tensor, ...]]:
        """Training batches, epoch after epoch; the caller decides when to stop.

        Each is ``(x, y)``, or ``(x, y, index)`` for a method that needs each example's position
        in the training set: ``train_step(*batch)`` takes either.
        Data-parallel: this rank's contiguous slice of every global batch, so the ranks' slices
        together are exactly the batch one process would train on. The workload produces the
        slice (``Workload.train_share``): a DataLoader-fed one decodes nothing else.
        """
        rank, world = self._place()
        share = self.workload.indexed_train_share if self.with_index else self.workload.train_share
        while True:
            empty = True
            for batch in share(self.batch_size, self.generator, rank, world):
                empty = False
                yield batch
            if empty:  # a workload that cannot fill one batch would otherwise spin forever
                raise RuntimeError(f"{self.workload.name} produced an epoch without a batch")


#: Offset between ranks' seeds for randomness inside the forward pass (dropout, drop-path).
_RANK_SEED_STRIDE = 1_000_003


def _take(tensor: Tensor | None, rows: Tensor | slice) -> Tensor | None:
    return None if tensor is None else tensor[rows]


def _micro_batches(size: int, count: int) -> list[slice]:
    """``count`` contiguous, near-equal slices of ``size`` examples (fewer if it is smaller):
    gradient accumulation's micro-batches, as ``tensor_split`` would cut them."""
    count = max(1, min(count, size))
    base, extra = divmod(size, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class StepTimes:
    """Every timed step's duration, plain steps (one pass) and look steps (two) apart.

    A sweep compares these with the paired expectation to tell a trial slowed by a busy machine
    (much slower than expected, or drifting during the run) from one that is simply costly. On
    the CPU a step's time is two clock reads; on CUDA it is a pair of events resolved when the
    runner synchronises anyway, so no step waits for the device.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._pending: list[tuple[Any, Any, bool]] = []
        self.seconds: list[float] = []
        self.look: list[bool] = []
        self._start: Any = None

    def begin(self) -> None:
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = now()

    def end(self, look: bool) -> None:
        if self._cuda:
            stop = torch.cuda.Event(enable_timing=True)
            stop.record()
            self._pending.append((self._start, stop, look))
        else:
            self.seconds.append(now() - self._start)
            self.look.append(look)

    def resolve(self) -> None:
        """Read the queued CUDA events (call after the device was synchronised)."""
        for start, stop, look in self._pending:
            self.seconds.append(start.elapsed_time(stop) / 1000.0)
            self.look.append(look)
        self._pending.clear()

    def summary(self) -> dict[str, Any]:
        """Per kind of step: count, median, p90, and the median of each quarter of the run.

        Plain and look steps are kept apart everywhere, quarters too: with k = 2 a quarter
        that happens to hold more plain steps is not the machine slowing down.
        """
        self.resolve()
        out: dict[str, Any] = {}
        for kind, wanted in (("plain", False), ("look", True)):
            values = [s for s, lk in zip(self.seconds, self.look, strict=True) if lk == wanted]
            if not values:
                continue
            out[kind] = {"n": len(values), "median": statistics.median(values)}
            out[kind]["p90"] = _quantile(values, 0.9)
            n = len(values)
            if n >= 8:
                quarters = [values[i * n // 4 : (i + 1) * n // 4] for i in range(4)]
                out[kind]["quarter_medians"] = [statistics.median(q) for q in quarters]
        return out


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class _Clock:
    """Training time with the device synchronised at every read; evaluation is paused out."""

    device: torch.device
    total: float = 0.0
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (seconds, steps)
    pending: int = 0  # steps since the last start()
    _start: float = 0.0
    steps: StepTimes | None = None  # per-step times of the timed (post-warm-up) steps

    def start(self) -> None:
        synchronize(self.device)
        self._start = now()
        self.pending = 0

    def tick(self) -> None:
        self.pending += 1

    def stop(self) -> None:
        synchronize(self.device)
        elapsed = now() - self._start
        if self.steps is not None:
            self.steps.resolve()
        self.total += elapsed
        if self.pending:
            self.chunks.append((elapsed, self.pending))
        self.pending = 0


ProgressCallback = Callable[[int, int, EpochRecord | None], None]

#: An epoch whose mean training loss exceeds this many times the loss of a uniform guess over the
#: classes has diverged, even though every loss was finite. Training starts near the uniform loss
#: and a run that learns goes below it; a learning rate far too large sends the loss orders of
#: magnitude above it while accuracy sits at chance (digits-noisy, SGD at lr 37: ~6,600× in the
#: first epoch of a 3-epoch run), and such a run used to end "ok". 10× leaves room for a brief
#: climb a few times above the uniform loss that training recovers from.
DIVERGENCE_LOSS_FACTOR = 10.0


def divergence(mean_loss: float, num_classes: int, *, epoch_end: bool) -> str | None:
    """Which divergence rule ``mean_loss`` breaks, or None when the run may go on.

    Two rules, so a run at chance accuracy with an exploding loss ends "diverged" instead of
    finishing as if it had trained (a third, :func:`stuck_at_chance`, judges the run's end):

    1. *non-finite*: the loss is NaN or ±inf (checked every time the runner reads the clock).
    2. *exploding*: at the end of an epoch (or of a run stopped mid-epoch by ``max_steps``),
       its mean training loss exceeds :data:`DIVERGENCE_LOSS_FACTOR` × ln(``num_classes``), the
       cross-entropy of a uniform guess (a loss exactly at that limit is not divergence). The
       reference assumes the workload's loss is the mean cross-entropy (``Workload.loss``).

    Args:
        mean_loss: the mean training loss of the epoch so far (of the whole epoch at its end).
        num_classes: the workload's number of classes (``Workload.num_classes``).
        epoch_end: whether ``mean_loss`` covers a whole epoch; rule 2 only judges whole epochs.

    Returns:
        The rule that fired, worded for ``RunResult.message``, or None.
    """
    if not math.isfinite(mean_loss):
        return "non-finite training loss"
    if not epoch_end:
        return None
    limit = DIVERGENCE_LOSS_FACTOR * math.log(num_classes)
    if mean_loss > limit:
        return (
            f"exploding training loss: epoch mean {mean_loss:.4g} > "
            f"{DIVERGENCE_LOSS_FACTOR:g} × ln({num_classes} classes) = {limit:.4g}"
        )
    return None


#: A run that ends within this many times chance accuracy (1 / classes) ...
CHANCE_FACTOR = 1.5
#: ... after at least this many evaluated epochs, with a loss no better than a uniform guess,
#: learned nothing: it ends "diverged" too (rule 3), since its hyperparameters killed it.
CHANCE_MIN_EPOCHS = 2


def stuck_at_chance(history: Sequence[EpochRecord], num_classes: int) -> str | None:
    """Rule 3 of divergence: the run trained, yet ends at chance with a uniform-guess loss.

    A learning rate that kills the network without making the loss explode (SGD at lr 7 on
    digits-noisy) leaves the loss near ln(classes) and the accuracy at chance; such a run would
    otherwise finish "ok" and be ranked as if it had trained. Judged on the last epoch, once at
    least :data:`CHANCE_MIN_EPOCHS` were evaluated; both limits are inclusive.
    """
    last = history[-1] if len(history) >= CHANCE_MIN_EPOCHS else None
    accuracy = None if last is None else last.test_accuracy
    if last is None or accuracy is None:
        return None
    if accuracy <= CHANCE_FACTOR / num_classes and last.train_loss >= math.log(num_classes):
        return (
            f"stuck at chance: final accuracy {accuracy:.3f} <= "
            f"{CHANCE_FACTOR:g} / {num_classes} classes with training loss "
            f"{last.train_loss:.3f} >= ln({num_classes})"
        )
    return None


#: Steps between clock reads (each read synchronises the device; the median is over chunks).
TIMING_CHUNK = 10


def _start_together(clock: _Clock, dist: DistContext | None) -> None:
    """Start the clock; data-parallel ranks first wait for each other outside it, so no rank's
    time includes another's evaluation or progress printing."""
    if dist is not None:
        dist.barrier()
    clock.start()


def _is_oom(error: BaseException) -> bool:
    oom_types = tuple(
        t for t in (getattr(torch, "OutOfMemoryError", None),) if isinstance(t, type)
    )
    return isinstance(error, oom_types) or "out of memory" in str(error).lower()


def run_training(
    config: RunConfig,
    *,
    progress: ProgressCallback | None = None,
    workload: Workload | None = None,
) -> RunResult:
    """Train one configuration to the end (or until it diverges / runs out of memory).

    Under torchrun, or inside an already initialised process group, this process trains one rank
    of a data-parallel run (a group it creates is destroyed at the end). Every rank returns a
    result; only rank 0's (``result.is_main``) is meant to be reported, and only rank 0 calls
    ``progress``. A rank that runs out of memory raises instead of returning: the other ranks
    cannot learn of it without the collective they are waiting in, and the launcher ends them.

    Args:
        config: the run; validated first (ValueError / WorkloadDataError for bad input).
        progress: called as ``progress(step, total_steps, epoch_record_or_None)``.
        workload: an already-prepared workload to reuse (sweeps); created from the config if None.
    """
    dist = init_distributed(resolve_device(config.device))
    try:
        return _train(TrainingSession(config, workload, dist), progress)
    finally:
        if dist is not None:
            dist.teardown()


def _train(session: TrainingSession, progress: ProgressCallback | None) -> RunResult:
    config = session.config
    dist = session.dist
    device = session.device
    if dist is not None and not dist.is_main:
        progress = None
    fail_step = fail_at_step(dist.rank) if dist is not None else None
    check_every = config.replica_check_every if dist is not None else 0
    named_parameters = list(session.model.named_parameters())
    measures = session.workload.measures_accuracy
    num_classes = session.workload.num_classes
    target = session.workload.target_accuracy
    warmup_clock = _Clock(device)
    clock = _Clock(device, steps=StepTimes(device))
    history: list[EpochRecord] = []
    status, message = "ok", ""
    step = 0
    time_to_target: float | None = None
    target_step: int | None = None
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    batches = session.batches()
    warmup_steps = min(config.timing_warmup_steps, session.total_steps)
    active = warmup_clock if warmup_steps > 0 else clock
    _start_together(active, dist)
    try:
        while step < session.total_steps:
            if step == fail_step:
                os._exit(1)  # the FAIL_AT test hook: die as a crashed rank would
            batch = next(batches)
            timed = active.steps
            if timed is not None:
                passes_before = session.passes
                timed.begin()
            loss_sum += session.train_step(*batch).float()
            if timed is not None:
                timed.end(look=session.passes - passes_before > 1)
            loss_count += 1
            step += 1
            active.tick()
            if check_every and step % check_every == 0:
                assert dist is not None
                dist.check_replicas(named_parameters, step)
            warmup_done = active is warmup_clock and step == warmup_steps
            epoch_end = step % session.steps_per_epoch == 0 or step == session.total_steps
            if not (warmup_done or epoch_end or active.pending >= TIMING_CHUNK):
                continue
            active.stop()
            # Data-parallel: the mean over ranks, so every rank takes the same decision.
            epoch_loss = float((loss_sum if dist is None else dist.mean(loss_sum)).item())
            # Checked per chunk (one sync); the exploding-loss rule only at an epoch's end.
            why = divergence(epoch_loss / max(loss_count, 1), num_classes, epoch_end=epoch_end)
            if why is not None:
                status, message = "diverged", f"{why} by step {step}"
                break
            if epoch_end:
                record = EpochRecord(
                    epoch=math.ceil(step / session.steps_per_epoch),
                    step=step,
                    train_loss=epoch_loss / max(loss_count, 1),
                    test_accuracy=session.evaluate() if measures else None,
                    train_seconds=warmup_clock.total + clock.total,
                )
                loss_sum.zero_()
                loss_count = 0
                history.append(record)
                acc = record.test_accuracy
                reached = target is not None and acc is not None and acc >= target
                if time_to_target is None and reached:
                    time_to_target = record.train_seconds
                    target_step = step
            if progress is not None:
                progress(step, session.total_steps, history[-1] if epoch_end else None)
            if warmup_done:
                active = clock
            _start_together(active, dist)
    except (RuntimeError, MemoryError) as error:
        if dist is not None or not _is_oom(error):
            raise
        status, message = "oom", f"out of memory at step {step + 1}: {str(error).splitlines()[0]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if active.pending:
        active.stop()
    if status == "ok":
        why = stuck_at_chance(history, num_classes)
        if why is not None:
            status, message = "diverged", why
    timed_steps = sum(n for _, n in clock.chunks)
    accuracies = [h.test_accuracy for h in history if h.test_accuracy is not None]
    samples_per_second = timed_steps * session.batch_size / clock.total if clock.total else 0.0
    per_rank: tuple[float, ...] = ()
    term = session.loss_term
    if dist is not None:
        local = timed_steps * session.local_batch_size / clock.total if clock.total else 0.0
        per_rank = tuple(row[0] for row in dist.gather_floats([local]))
    return RunResult(
        config=config,
        status=status,
        message=message,
        steps=step,
        forward_backward_passes=session.passes,
        train_seconds=warmup_clock.total + clock.total,
        warmup_seconds=warmup_clock.total,
        samples_per_second=samples_per_second,
        median_step_seconds=(
            statistics.median(s / n for s, n in clock.chunks) if clock.chunks else 0.0
        ),
        final_accuracy=accuracies[-1] if accuracies and status == "ok" else None,
        best_accuracy=max(accuracies) if accuracies else None,
        time_to_target_seconds=time_to_target,
        target_step=target_step,
        step_times=clock.steps.summary() if clock.steps is not None else {},
        history=tuple(history),
        environment=environment(device, None if dist is None else dist.backend),
        world_size=1 if dist is None else dist.world_size,
        per_rank_samples_per_second=per_rank,
        rank=0 if dist is None else dist.rank,
        method_memory=term.memory_bytes() if term is not None else {},
        method_bytes_per_example=term.bytes_per_example() if term is not None else 0,
    )
