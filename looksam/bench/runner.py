"""The one training loop every optimizer is measured with.

It drives optimizers only through ``step(closure)`` (fp16 adds the documented GradScaler recipe)
and the registry, times only training (warm-up excluded, device synchronised before every clock
read, evaluation outside the clock), and turns every ending — finished, diverged, out of memory —
into a frozen :class:`RunResult`.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from looksam.bench.timing import synchronize
from looksam.bench.workloads import Workload, create_workload, get_workload_info
from looksam.optim import SharpnessAwareOptimizer, create_optimizer, frozen_bn_stats
from looksam.optim._registry import get_optimizer_info

AMP_MODES = ("off", "bf16", "fp16")

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
    channels_last: bool = False
    warmup_fraction: float = 0.05  # of all steps, linear LR warm-up before the cosine decay
    grad_clip: float | None = None
    timing_warmup_steps: int = 5
    data_dir: str | None = None


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


@dataclass(frozen=True)
class RunResult:
    """One finished (or stopped) run; serialisable to JSON."""

    config: RunConfig
    status: str  # "ok" | "diverged" | "oom"
    message: str
    steps: int
    forward_backward_passes: int
    train_seconds: float  # every training step, evaluation excluded (AlgoPerf)
    warmup_seconds: float  # the part of it spent in the first ``timing_warmup_steps`` steps
    samples_per_second: float  # after the warm-up steps
    median_step_seconds: float  # median over chunks of TIMING_CHUNK steps, after warm-up
    final_accuracy: float | None
    best_accuracy: float | None
    time_to_target_seconds: float | None
    history: tuple[EpochRecord, ...]
    environment: Environment

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def write_json(self, path: Path) -> None:
        """Write the result as indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["config"] = RunConfig(**fields["config"])
        fields["history"] = tuple(EpochRecord(**h) for h in fields["history"])
        fields["environment"] = Environment(**fields["environment"])
        return cls(**fields)


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


def environment(device: torch.device) -> Environment:
    """Describe the machine and library versions for the result."""
    try:
        import timm

        timm_version: str | None = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
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


def validate_config(config: RunConfig) -> None:
    """Raise ValueError for anything a user could have typed wrong, before any work starts."""
    info = get_workload_info(config.workload)
    get_optimizer_info(config.optimizer)
    if config.amp not in AMP_MODES:
        raise ValueError(f"unknown --amp {config.amp!r}; choose one of: {', '.join(AMP_MODES)}")
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
    if config.timing_warmup_steps < 0:
        raise ValueError(f"timing warm-up steps must be >= 0, got {config.timing_warmup_steps}")
    if info.needs_data_dir and config.data_dir is None:
        create_workload(config.workload)  # raises WorkloadDataError with the data hint
    resolve_device(config.device)
    # Builds a throwaway optimizer on one tensor: checks names, ranges and the base.
    create_optimizer(
        config.optimizer,
        [torch.zeros(1, requires_grad=True)],
        **({"base": config.base} if config.base is not None else {}),
        **_optimizer_kwargs(config, info.default_lr),
    )


def _optimizer_kwargs(config: RunConfig, workload_lr: float) -> dict[str, Any]:
    kwargs = dict(config.hyperparameters)
    base = config.base or ("sgd" if get_optimizer_info(config.optimizer).wraps_base else None)
    if config.lr is not None:
        kwargs["lr"] = config.lr
    elif (base or config.optimizer) == "sgd" and "lr" not in kwargs:
        kwargs["lr"] = workload_lr  # the workload's tuned SGD rate; others use registry defaults
    return kwargs


class TrainingSession:
    """Model, optimizer, data and the step function for one configuration.

    Shared by :func:`run_training` and the ``bench`` command, so the step that is timed for speed
    is the very step that is trained for accuracy.
    """

    def __init__(self, config: RunConfig, workload: Workload | None = None) -> None:
        validate_config(config)
        self.config = config
        self.device = resolve_device(config.device)
        data_dir = Path(config.data_dir) if config.data_dir else None
        self.workload = workload or create_workload(config.workload, data_dir=data_dir)
        info = self.workload.info()
        self.batch_size = config.batch_size or info.default_batch_size
        self.epochs = config.epochs or info.default_epochs
        seed_everything(config.seed)
        self.workload.prepare(self.device)
        self.workload.check_batch_size(self.batch_size)
        model = self.workload.build_model().to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module = model
        self.forward: Callable[[Tensor], Tensor] = (
            torch.compile(model) if config.compile else model  # type: ignore[assignment]
        )
        kwargs = _optimizer_kwargs(config, info.default_lr)
        if config.base is not None:
            kwargs["base"] = config.base
        self.optimizer = create_optimizer(config.optimizer, model, **kwargs)
        self.sam = self.optimizer if isinstance(self.optimizer, SharpnessAwareOptimizer) else None
        self.base_optimizer = self.sam.base if self.sam is not None else self.optimizer
        self.passes = 0
        self.steps_per_epoch = self.workload.steps_per_epoch(self.batch_size)
        total = self.steps_per_epoch * self.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _warmup_cosine(self.total_steps, config.warmup_fraction)
        )
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

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _prepare_input(self, x: Tensor) -> Tensor:
        if self.config.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on one batch; returns the first pass's loss (detached)."""
        x = self._prepare_input(x)
        sam = self.sam

        def closure() -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            perturbed = sam is not None and sam.in_second_pass
            with frozen_bn_stats(self.model, enabled=perturbed), self._autocast():
                loss = self.workload.loss(self.forward(x), y)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            self.passes += 1
            return loss.detach()

        if self.scaler is None:
            loss: Tensor = self.optimizer.step(closure)  # type: ignore[arg-type,assignment]
        else:
            loss = self._fp16_step(closure)
        self.scheduler.step()
        return loss

    def _fp16_step(self, closure: Callable[[], Tensor]) -> Tensor:
        scaler = self.scaler
        assert scaler is not None
        with torch.enable_grad():
            loss = closure()
        if self.sam is None:
            scaler.step(self.optimizer)
        else:
            sam = self.sam
            if sam.is_look_step:
                scaler.unscale_(sam)  # g unscaled before the perturbation is computed
                sam.first_step()
                try:
                    with torch.enable_grad():
                        closure()
                except BaseException:
                    sam.abandon_look_step()
                    raise
            sam.step(base_step=lambda: scaler.step(sam.base))  # step(): the LR scheduler sees it
        scaler.update()
        return loss

    @torch.no_grad()
    def evaluate(self) -> float:
        """Test accuracy of the current weights (train mode restored afterwards)."""
        self.model.eval()
        correct = 0
        total = 0
        try:
            for x, y in self.workload.eval_batches(max(self.batch_size, 256)):
                with self._autocast():
                    logits = self.forward(self._prepare_input(x))
                correct += int((logits.argmax(dim=1) == y).sum().item())
                total += len(y)
        finally:
            self.model.train()
        return correct / max(total, 1)

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Training batches, epoch after epoch; the caller decides when to stop."""
        while True:
            empty = True
            for batch in self.workload.train_batches(self.batch_size, self.generator):
                empty = False
                yield batch
            if empty:  # a workload that cannot fill one batch would otherwise spin forever
                raise RuntimeError(f"{self.workload.name} produced an epoch without a batch")


def _warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class _Clock:
    """Training time with the device synchronised at every read; evaluation is paused out."""

    device: torch.device
    total: float = 0.0
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (seconds, steps)
    pending: int = 0  # steps since the last start()
    _start: float = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._start = now()
        self.pending = 0

    def tick(self) -> None:
        self.pending += 1

    def stop(self) -> None:
        synchronize(self.device)
        elapsed = now() - self._start
        self.total += elapsed
        if self.pending:
            self.chunks.append((elapsed, self.pending))
        self.pending = 0


ProgressCallback = Callable[[int, int, EpochRecord | None], None]

#: Steps between clock reads (each read synchronises the device; the median is over chunks).
TIMING_CHUNK = 10


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

    Args:
        config: the run; validated first (ValueError / WorkloadDataError for bad input).
        progress: called as ``progress(step, total_steps, epoch_record_or_None)``.
        workload: an already-prepared workload to reuse (sweeps); created from the config if None.
    """
    session = TrainingSession(config, workload)
    device = session.device
    measures = session.workload.measures_accuracy
    target = session.workload.target_accuracy
    warmup_clock = _Clock(device)
    clock = _Clock(device)
    history: list[EpochRecord] = []
    status, message = "ok", ""
    step = 0
    time_to_target: float | None = None
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    batches = session.batches()
    warmup_steps = min(config.timing_warmup_steps, session.total_steps)
    active = warmup_clock if warmup_steps > 0 else clock
    active.start()
    try:
        while step < session.total_steps:
            x, y = next(batches)
            loss_sum += session.train_step(x, y).float()
            loss_count += 1
            step += 1
            active.tick()
            warmup_done = active is warmup_clock and step == warmup_steps
            epoch_end = step % session.steps_per_epoch == 0 or step == session.total_steps
            if not (warmup_done or epoch_end or active.pending >= TIMING_CHUNK):
                continue
            active.stop()
            if not math.isfinite(float(loss_sum.item())):  # checked per chunk: one sync
                status, message = "diverged", f"non-finite training loss by step {step}"
                break
            if epoch_end:
                record = EpochRecord(
                    epoch=math.ceil(step / session.steps_per_epoch),
                    step=step,
                    train_loss=float(loss_sum.item()) / max(loss_count, 1),
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
            if progress is not None:
                progress(step, session.total_steps, history[-1] if epoch_end else None)
            if warmup_done:
                active = clock
            active.start()
    except (RuntimeError, MemoryError) as error:
        if not _is_oom(error):
            raise
        status, message = "oom", f"out of memory at step {step + 1}: {str(error).splitlines()[0]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if active.pending:
        active.stop()
    timed_steps = sum(n for _, n in clock.chunks)
    accuracies = [h.test_accuracy for h in history if h.test_accuracy is not None]
    return RunResult(
        config=config,
        status=status,
        message=message,
        steps=step,
        forward_backward_passes=session.passes,
        train_seconds=warmup_clock.total + clock.total,
        warmup_seconds=warmup_clock.total,
        samples_per_second=(timed_steps * session.batch_size / clock.total)
        if clock.total
        else 0.0,
        median_step_seconds=(
            statistics.median(s / n for s, n in clock.chunks) if clock.chunks else 0.0
        ),
        final_accuracy=accuracies[-1] if accuracies and status == "ok" else None,
        best_accuracy=max(accuracies) if accuracies else None,
        time_to_target_seconds=time_to_target,
        history=tuple(history),
        environment=environment(device),
    )
