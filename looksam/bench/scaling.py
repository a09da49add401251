"""Data-parallel scaling: samples/s of N processes against N × one process, per optimizer.

Every measurement is the one training loop (warm-up excluded), so what is timed is what users
train with. From a single process, both sides are fresh ``looksam-bench run`` processes, the
N-process one under torchrun; inside a torchrun launch, the launch itself is the N-process side
and rank 0 starts the one-process runs. One and N processes alternate, ``repeats`` times each,
and the efficiency is the median of the per-pair ratios: drift on a shared machine hits both
sides of a pair alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from looksam.optim import LINEUPS, get_optimizer_info, shared_hyperparameter
from looksam.train.distributed import (
    LAUNCH_VARIABLES,
    check_global_batch,
    init_distributed,
)
from looksam.train.runner import RunConfig, RunResult, resolve_device, run_training

#: Long enough that every workload runs its ``steps`` in one go (max_steps stops it).
_EPOCHS = 1_000_000


@dataclass(frozen=True)
class ScalingSpec:
    """What to measure: one workload, its optimizers, N processes against one."""

    workload: str = "synthetic-mlp"
    optimizers: tuple[str, ...] = LINEUPS["scaling"]
    nproc: int = 2
    batch_size: int = 1024  # the global batch: each of N processes trains on 1/N of it
    steps: int = 200
    repeats: int = 3
    k: int = field(default_factory=lambda: int(shared_hyperparameter("k").default))
    device: str = "auto"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for name in self.optimizers:
            get_optimizer_info(name)  # ValueError naming the known ones
        if self.nproc < 2:
            raise ValueError(f"--nproc must be at least 2 to measure scaling, got {self.nproc}")
        for name, value in (("steps", self.steps), ("repeats", self.repeats)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        check_global_batch(self.batch_size, self.nproc)


@dataclass(frozen=True)
class ScalingRow:
    """One optimizer: global samples/s with 1 and with N processes, and what each rank did."""

    optimizer: str
    nproc: int
    single: tuple[float, ...]  # samples/s of each one-process repeat
    parallel: tuple[float, ...]  # global samples/s of each N-process repeat
    per_rank: tuple[float, ...]  # each rank's own samples/s, median over repeats

    @property
    def efficiency(self) -> float:
        """Median over repeats of parallel / (N × single): 1.0 is perfect linear scaling."""
        return statistics.median(
            p / (self.nproc * s) for s, p in zip(self.single, self.parallel, strict=True)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, efficiency included."""
        return {**asdict(self), "efficiency": self.efficiency}


Launcher = Callable[[list[str], dict[str, str]], None]


def _run_command(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit code {done.returncode}")


def run_command(spec: ScalingSpec, optimizer: str, nproc: int, json_path: Path) -> list[str]:
    """The ``python -m looksam run`` command line of one measurement."""
    command = [
        sys.executable, "-m", "looksam", "run", "-w", spec.workload, "-o", optimizer,
        "-b", str(spec.batch_size), "--epochs", str(_EPOCHS), "--max-steps", str(spec.steps),
        "--device", spec.device, "--json", str(json_path),
    ]  # fmt: skip
    if get_optimizer_info(optimizer).takes_k:
        command += ["--k", str(spec.k)]
    if spec.data_dir is not None:
        command += ["--data-dir", spec.data_dir]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    return command


Measure = Callable[[str], RunResult | None]  # one run of an optimizer (None: not this rank's)


def _collect(
    spec: ScalingSpec,
    single: Measure,
    parallel: Measure,
    progress: Callable[[int, int], None] | None,
) -> list[ScalingRow]:
    """Alternate one-process and N-process runs, ``repeats`` pairs per optimizer."""
    total = len(spec.optimizers) * spec.repeats * 2
    done = 0
    rows = []
    for optimizer in spec.optimizers:
        pairs: list[tuple[RunResult, RunResult]] = []
        for _ in range(spec.repeats):
            one = single(optimizer)
            many = parallel(optimizer)
            if one is not None and many is not None:
                pairs.append((one, many))
            done += 2
            if progress is not None:
                progress(done, total)
        if not pairs:
            continue  # a rank other than 0: it took part, rank 0 reports
        per_rank = tuple(
            statistics.median(m.per_rank_samples_per_second[i] for _, m in pairs)
            for i in range(spec.nproc)
        )
        rows.append(
            ScalingRow(
                optimizer,
                spec.nproc,
                tuple(o.samples_per_second for o, _ in pairs),
                tuple(m.samples_per_second for _, m in pairs),
                per_rank,
            )
        )
    return rows


def _launched_run(spec: ScalingSpec, nproc: int, env: dict[str, str], launch: Launcher) -> Measure:
    def measure(optimizer: str) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="looksam-scaling.") as folder:
            out = Path(folder) / "run.json"
            launch(run_command(spec, optimizer, nproc, out), env)
            return RunResult.from_dict(json.loads(out.read_text()))

    return measure


def measure_scaling(
    spec: ScalingSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    launch: Launcher = _run_command,
) -> list[ScalingRow]:
    """From one process: alternate fresh one-process and N-process (torchrun) runs per optimizer.

    The one-process run keeps every core's threads; the N ranks share them
    (``OMP_NUM_THREADS`` = cores ÷ N unless set), as ``run --nproc`` does.

    Raises:
        RuntimeError: a run failed (its last output line says why).
    """
    env = dict(os.environ)  # `run --nproc` itself gives each rank its share of the threads
    return _collect(
        spec,
        _launched_run(spec, 1, env, launch),
        _launched_run(spec, spec.nproc, env, launch),
        progress,
    )


def _standalone_env() -> dict[str, str]:
    """This environment without torchrun's variables (and its one-thread default)."""
    prefixes = ("MASTER_", "TORCHELASTIC_", "GROUP_", "ROLE_")
    dropped = {*LAUNCH_VARIABLES, "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS"}
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith(prefixes)}


def measure_scaling_under_torchrun(
    spec: ScalingSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    launch: Launcher = _run_command,
) -> list[ScalingRow]:
    """Inside a torchrun launch of ``spec.nproc`` processes: this launch is the N-process side.

    Every rank trains the N-process runs together (DDP, as ``run`` under torchrun); for the
    one-process side rank 0 starts a fresh process outside the launch while the others wait.
    Rank 0 returns the rows; the other ranks return an empty list.
    """
    context = init_distributed(resolve_device(spec.device))
    if context is None or context.world_size != spec.nproc:
        raise ValueError(f"expected to run inside a torchrun launch of {spec.nproc} processes")
    single_run = _launched_run(spec, 1, _standalone_env(), launch)

    def single(optimizer: str) -> RunResult | None:
        result = single_run(optimizer) if context.is_main else None
        context.barrier()  # the other ranks sit idle until rank 0's lone run is over
        return result

    def parallel(optimizer: str) -> RunResult | None:
        result = run_training(parallel_config(spec, optimizer))
        return result if context.is_main else None

    try:
        return _collect(spec, single, parallel, progress)
    finally:
        context.teardown()


def parallel_config(spec: ScalingSpec, optimizer: str) -> RunConfig:
    """The configuration ``run_command`` describes, for a run inside this process."""
    k_step = get_optimizer_info(optimizer).takes_k
    return RunConfig(
        workload=spec.workload,
        optimizer=optimizer,
        hyperparameters={"k": spec.k} if k_step else {},
        batch_size=spec.batch_size,
        epochs=_EPOCHS,
        max_steps=spec.steps,
        device=spec.device,
        data_dir=spec.data_dir,
    )
