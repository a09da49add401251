"""Data-parallel training under torchrun: launch detection, the process group, per-rank data,
and local launches (``run --nproc N``, or a notebook calling :func:`launch_locally`).

One run is split across ``WORLD_SIZE`` processes that each hold a full replica of the model and
train on their own contiguous slice of every *global* batch (the configured batch size). Every
rank seeds identically and draws the same global batches from the same generator, so the union of
the ranks' slices is exactly the batch one process would have used, and with a mean loss "N
ranks × 1/N of the batch" follows the single-process run up to rounding.

Nothing here knows about optimizers: the runner wraps the model in ``DistributedDataParallel``
and hands :meth:`DistContext.average_` to LookSAM as its g_v hook in per-rank perturbation mode.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

#: What torchrun (``torch.distributed.run``) sets in every worker's environment.
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")

#: Test hook: ``"RANK:STEP"`` makes that rank exit abruptly (``os._exit(1)``) before that step,
#: so the tests can check what a dead rank does to the launcher and to the written results.
FAIL_AT_VARIABLE = "LOOKSAM_FAIL_AT"

#: How long a collective may wait for a peer: long enough for a slow evaluation, short enough
#: that a wedged job ends (a rank that *dies* is noticed by the launcher at once).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch, read from its environment."""

    rank: int
    local_rank: int
    world_size: int


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The torchrun launch this process belongs to, or None when it was started on its own.

    Raises:
        ValueError: the variables are present but inconsistent (a hand-made launch gone wrong).
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    missing = [name for name in LAUNCH_VARIABLES if name not in env]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun "
            "(python -m torch.distributed.run), which sets all of "
            f"{', '.join(LAUNCH_VARIABLES)}"
        )
    try:
        rank, local_rank, world = (int(env[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    except ValueError:
        values = ", ".join(f"{name}={env[name]!r}" for name in LAUNCH_VARIABLES)
        raise ValueError(f"torchrun variables must be integers, got {values}") from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise ValueError(
            f"inconsistent torchrun variables: RANK={rank}, LOCAL_RANK={local_rank}, "
            f"WORLD_SIZE={world}"
        )
    return Launch(rank, local_rank, world)


def launched_world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of processes this run is split across (1 outside torchrun)."""
    launch = launch_from_env(environ)
    return 1 if launch is None else launch.world_size


def check_global_batch(batch_size: int, world_size: int) -> int:
    """The per-rank batch: ``batch_size`` split evenly, or ValueError saying what would fit."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        options = f"{lower} or {lower + world_size}" if lower else f"{world_size}"
        raise ValueError(
            f"batch size {batch_size} (the global batch) does not divide by the {world_size} "
            f"processes; use a multiple of {world_size}, e.g. {options}"
        )
    return batch_size // world_size


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous part of ``n`` items (sizes differ by at most one)."""
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


def check_rank(rank: int, world_size: int) -> None:
    """ValueError unless ``rank`` is one of ``world_size`` >= 1 processes.

    Called where a rank picks its share of the data: a wrong rank would train silently on
    someone else's examples.
    """
    for what, value in (("rank", rank), ("world size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be an integer, got {value!r}")
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")


def fail_at_step(rank: int, environ: Mapping[str, str] | None = None) -> int | None:
    """The step before which the :data:`FAIL_AT_VARIABLE` test hook kills this rank, if any."""
    value = (os.environ if environ is None else environ).get(FAIL_AT_VARIABLE, "")
    if not value:
        return None
    try:
        target, step = (int(part) for part in value.split(":"))
    except ValueError:
        raise ValueError(f"{FAIL_AT_VARIABLE} must be RANK:STEP, got {value!r}") from None
    return step if target == rank else None


@dataclass
class DistContext:
    """This process's place in a data-parallel run, and the few collectives the runner needs.

    ``owns_group`` is True when :func:`init_distributed` created the process group, so
    :meth:`teardown` destroys only what it created (tests and notebooks bring their own).
    """

    rank: int
    world_size: int
    backend: str
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 prints progress and returns the result that is written."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def sum_(self, tensor: Tensor) -> Tensor:
        """All-reduce ``tensor`` in place as the sum over ranks (and return it)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def mean(self, value: Tensor) -> Tensor:
        """The mean over ranks of a tensor, as a new tensor (the input is left alone)."""
        total = value.detach().clone()
        self.sum_(total)
        return total.div_(self.world_size)

    def gather_floats(self, values: Sequence[float]) -> list[list[float]]:
        """Every rank's ``values`` (same length everywhere), indexed by rank."""
        mine = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        return [t.tolist() for t in everyone]

    def concat(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` (the same shape everywhere) stacked along dim 0, in rank
        order: SAF's bank writes every rank's rows, so each rank's copy stays whole."""
        everyone = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(everyone, tensor.contiguous())
        return torch.cat(everyone)

    def average_(self, tensors: list[Tensor]) -> None:
        """Replace every tensor by its mean over ranks, in one all-reduce.

        The tensors must share device and dtype (one optimizer bucket); they are flattened into
        one buffer so the whole list costs a single collective. This is LookSAM's g_v hook in
        per-rank perturbation mode.
        """
        if not tensors:
            return
        flat = _flatten_dense_tensors(tensors)
        # Sum then divide: gloo has no AVG reduction, and SUM gives every rank the same bits.
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        torch._foreach_copy_(tensors, list(_unflatten_dense_tensors(flat, tensors)))

    @torch.no_grad()
    def broadcast_buffers_(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), as DDP's next forward would.

        Each rank updates its running statistics from its own slice, so they drift apart between
        DDP's per-forward broadcasts; evaluation must use one set.
        """
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    @torch.no_grad()
    def check_replicas(self, named_parameters: Sequence[tuple[str, Tensor]], step: int) -> None:
        """Raise RuntimeError if any rank's parameters differ (bitwise) from rank 0's.

        Each rank reduces every parameter to (sum, sum of squares) in float64 and the vectors
        are all-gathered: replicas fed identical averaged gradients stay bitwise identical, so
        any difference at all means a rank went its own way (a missed all-reduce, a per-rank
        buffer, nondeterminism).
        """
        rows = [p.detach().to(torch.float64) for _, p in named_parameters]
        sums = (
            torch.stack([r.sum() for r in rows]) if rows else torch.zeros(0, dtype=torch.float64)
        )
        squares = (
            torch.stack([r.square().sum() for r in rows])
            if rows
            else torch.zeros(0, dtype=torch.float64)
        )
        mine = torch.cat([sums, squares]).to(self.device)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        reference = everyone[0]
        bad = [r for r, other in enumerate(everyone) if not torch.equal(other, reference)]
        if not bad:
            return
        n = len(rows)
        differs = (everyone[bad[0]] != reference).nonzero().flatten().tolist()
        names = sorted({named_parameters[i % n][0] for i in differs})
        raise RuntimeError(
            f"replica check failed after step {step}: parameters of rank(s) "
            f"{', '.join(map(str, bad))} differ from rank 0 "
            f"(in {', '.join(names[:5])}{' …' if len(names) > 5 else ''})"
        )

    def teardown(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for everything on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> DistContext | None:
    """Join the data-parallel run this process belongs to; None when there is none.

    An existing process group is used as it is (and left alone by :meth:`DistContext.teardown`);
    otherwise a torchrun launch with more than one process creates one from the environment
    (``env://``). A launch of one process is an ordinary run. On CUDA each rank takes the GPU
    ``cuda:LOCAL_RANK``.

    Args:
        device: the resolved training device; its type picks the backend.

    Raises:
        ValueError: an unusable combination (Apple MPS has no collective backend).
    """
    launch = launch_from_env()
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world == 1:
            return None
        local_rank = launch.local_rank if launch is not None else dist.get_rank()
        return DistContext(
            rank=dist.get_rank(),
            world_size=world,
            backend=str(dist.get_backend()),
            device=_rank_device(device, local_rank),
        )
    if launch is None or launch.world_size == 1:
        return None
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed: cannot train in parallel")
    if device.type == "mps":
        raise ValueError("distributed training needs --device cpu or cuda (MPS has no backend)")
    rank_device = _rank_device(device, launch.local_rank)
    backend = backend_for(rank_device)
    if backend == "nccl":
        torch.cuda.set_device(rank_device)
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, device_id=rank_device)
    else:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(
        rank=launch.rank,
        world_size=launch.world_size,
        backend=backend,
        device=rank_device,
        owns_group=True,
    )


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:  # a crash, not a usage error: rank 0 alone would not see it
        raise RuntimeError(
            f"local rank {local_rank} needs cuda:{local_rank} but this node has {count} GPU(s); "
            "start at most one process per GPU (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def check_local_devices(device: torch.device, nproc: int) -> None:
    """ValueError if ``nproc`` local ranks cannot each have a GPU of their own."""
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(
            f"--nproc {nproc} on CUDA needs {nproc} GPUs (one per process); this machine has "
            f"{torch.cuda.device_count()}"
        )


# ---------------------------------------------------------------------- local launches

#: Set by ``looksam-bench run --nproc N`` for the processes it starts: where rank 0 writes the
#: result (the parent moves it into place only if every rank exited cleanly).
RESULT_FILE_VARIABLE = "LOOKSAM_RESULT_FILE"


def local_launch_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run`` starting ``python -m looksam ARGS`` on N local ranks.

    ``--standalone`` gives a private rendezvous on a free local port, so several launches on one
    machine never collide.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "looksam",
        *module_args,
    ]


def threads_per_rank(nproc: int, cpus: int | None = None) -> int:
    """Intra-op threads for each of ``nproc`` local ranks: the cores shared out, at least 1."""
    total = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, total // max(1, nproc))


_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)", re.MULTILINE)
_EXIT_CODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)", re.MULTILINE)
_USER_ERROR = re.compile(r"^(?:\[rank\d+\]:\s*)?error: (.+)$")


def launcher_failure(stderr: str, returncode: int) -> tuple[str, bool]:
    """One line saying why a local launch failed, and whether it was the user's input.

    Reads the launcher's stderr: a rank's own ``error: …`` line (bad input found only inside the
    ranks, e.g. missing data) wins; otherwise the rank torchrun names as the root cause, how it
    ended, and the last exception line that rank printed (the other ranks' errors are only the
    echo of losing a peer).
    """
    lines = [line.strip() for line in stderr.splitlines()]
    for line in lines:
        match = _USER_ERROR.match(line)
        if match:
            return match.group(1), True
    root = stderr.split("Root Cause", 1)[-1]
    rank = _FAILED_RANK.search(root)
    code = _EXIT_CODE.search(root)
    who = f"rank {rank.group(1)}" if rank else "a rank"
    if code is None:
        how = f"failed (launcher exit code {returncode})"
    elif code.group(1).startswith("-"):
        how = f"was killed by signal {code.group(1)[1:]}"
    else:
        how = f"exited with code {code.group(1)}"
    cause = ""
    if rank:
        exception = re.compile(
            rf"^\[rank{rank.group(1)}\]:\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*"
            r"(?:Error|Exception|Interrupt)\b.*)$"
        )
        found = [m.group(1) for m in map(exception.match, lines) if m]
        cause = f" ({found[-1]})" if found else ""
    return f"distributed run failed: {who} {how}{cause}; no result was written", False


class LaunchError(Exception):
    """A local launch ended without a result; ``message`` is one line saying why.

    ``users_fault`` is True when a rank rejected the input (bad option, missing data): the
    caller's exit status 2, as the same mistake made without ``--nproc`` would give.
    """

    def __init__(self, message: str, users_fault: bool) -> None:
        super().__init__(message)
        self.message = message
        self.users_fault = users_fault


def launch_locally(module_args: Sequence[str], nproc: int, json_path: Path | None) -> str:
    """Run ``python -m looksam ARGS`` on ``nproc`` local ranks under torchrun; the run's status.

    Rank 0 prints straight to our stdout and writes its result to a private file (named by
    :data:`RESULT_FILE_VARIABLE`); only if every rank exits cleanly is that file moved to
    ``json_path``, so a JSON there always means a run every rank finished. The launcher's stderr
    is kept: on failure it holds torchrun's traceback, which becomes :class:`LaunchError`'s one
    line; on success it is passed on (the ranks' warnings, if any).

    Args:
        module_args: the command line for ``python -m looksam`` (e.g. ``["run", "-w", ...]``).
        nproc: local processes to start.
        json_path: where the result goes (None: nowhere); its folder holds the partial file.

    Returns:
        The ``status`` of rank 0's result ("ok", "diverged", ...).

    Raises:
        LaunchError: a rank failed, or none wrote a result.
        KeyboardInterrupt: after the launcher has stopped its ranks; no result was written.
    """
    command = local_launch_command(nproc, module_args)
    folder = json_path.parent if json_path is not None else None
    handle, partial_name = tempfile.mkstemp(prefix=".looksam-run.", suffix=".partial", dir=folder)
    os.close(handle)
    partial = Path(partial_name)
    partial.unlink()  # rank 0 creates it only once training has finished
    env = dict(os.environ)
    env[RESULT_FILE_VARIABLE] = str(partial)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    try:
        launcher = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = launcher.communicate()
        except KeyboardInterrupt:  # torchrun stops its ranks on SIGINT too; wait for that
            launcher.send_signal(signal.SIGINT)
            launcher.communicate()
            raise
        if launcher.returncode != 0 or not partial.exists():
            message, users_fault = launcher_failure(stderr, launcher.returncode)
            raise LaunchError(message, users_fault)
        sys.stderr.write(stderr)  # the ranks' warnings, if any: nothing failed
        status = str(json.loads(partial.read_text())["status"])
        if json_path is not None:
            os.replace(partial, json_path)
        return status
    finally:
        partial.unlink(missing_ok=True)
