"""Data-parallel scaling: samples/s of N processes against N × one process, per optimizer.

Each measurement is a fresh ``looksam-bench run`` (the one training loop, warm-up excluded), the
N-process one launched under torchrun, so what is timed is exactly what users train with. One
process and N processes alternate, ``repeats`` times each, and the efficiency is the median of
the per-pair ratios: drift on a shared machine hits both sides of a pair alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from looksam.bench.distributed import check_global_batch, threads_per_rank
from looksam.bench.runner import RunResult
from looksam.optim import get_optimizer_info

#: Long enough that every workload runs its ``steps`` in one go (max_steps stops it).
_EPOCHS = 1_000_000


@dataclass(frozen=True)
class ScalingSpec:
    """What to measure: one workload, its optimizers, N processes against one."""

    workload: str = "synthetic-mlp"
    optimizers: tuple[str, ...] = ("sgd", "looksam")
    nproc: int = 2
    batch_size: int = 1024  # the global batch: each of N processes trains on 1/N of it
    steps: int = 200
    repeats: int = 3
    k: int = 5
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
    if optimizer in ("samk", "looksam", "layerlooksam"):
        command += ["--k", str(spec.k)]
    if spec.data_dir is not None:
        command += ["--data-dir", spec.data_dir]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    return command


def measure_scaling(
    spec: ScalingSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    launch: Launcher = _run_command,
) -> list[ScalingRow]:
    """Alternate one-process and N-process runs of each optimizer; one row per optimizer.

    The one-process run keeps every core's threads; the N ranks share them
    (``OMP_NUM_THREADS`` = cores ÷ N unless set), as ``run --nproc`` does.

    Raises:
        RuntimeError: a run failed (its last output line says why).
    """
    total = len(spec.optimizers) * spec.repeats * 2
    done = 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="looksam-scaling.") as folder:
        out = Path(folder) / "run.json"
        for optimizer in spec.optimizers:
            single: list[float] = []
            parallel: list[float] = []
            ranks: list[Sequence[float]] = []
            for _ in range(spec.repeats):
                for nproc in (1, spec.nproc):
                    env = dict(os.environ)
                    if nproc > 1:
                        env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
                    launch(run_command(spec, optimizer, nproc, out), env)
                    result = RunResult.from_dict(json.loads(out.read_text()))
                    out.unlink()
                    if nproc == 1:
                        single.append(result.samples_per_second)
                    else:
                        parallel.append(result.samples_per_second)
                        ranks.append(result.per_rank_samples_per_second)
                    done += 1
                    if progress is not None:
                        progress(done, total)
            per_rank = tuple(statistics.median(r[i] for r in ranks) for i in range(spec.nproc))
            rows.append(
                ScalingRow(optimizer, spec.nproc, tuple(single), tuple(parallel), per_rank)
            )
    return rows
