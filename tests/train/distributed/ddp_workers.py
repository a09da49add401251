"""What the spawned ranks run: scenarios through ``run_training`` and through DDP directly.

Kept out of the test modules so ``torch.multiprocessing.spawn`` can import it by name in the
child processes. Every scenario is a plain function of (rank, world size) that returns a dict of
tensors and numbers, so the parent can run the very same function in one process as reference.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from looksam.optim import create_optimizer
from looksam.train.runner import RunConfig, run_training
from looksam.train.workloads import LoaderWorkload, Workload, custom_workload
from looksam.train.workloads._base import Batch, IndexedBatch
from looksam.train.workloads.digits import DigitsNoisy

STEPS = 12
K = 3  # look steps 0, 3, 6, 9: several look and reuse steps in STEPS
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "sam": {"rho": 0.2},
    "samk": {"rho": 0.2, "k": K},
    "looksam": {"rho": 0.2, "k": K, "alpha": 0.7},
    "layerlooksam": {"rho": 0.05, "k": K, "alpha": 0.7},
    # the contract's loss term: every rank's EMA model and KL term, averaged as one batch's
    "mesa": {"start_epoch": 0, "decay": 0.9},
    # rank 0's coin seed is broadcast: every rank, and one process, flip the same coins
    "grst": {"rho": 0.2, "p_start": 0.5, "p_end": 0.5},
}
#: Methods whose pass draws on each rank's own data or noise (ESAM's and K-SAM's examples are
#: chosen from each rank's share, RWP's noise is each rank's): they cannot match one process,
#: but every rank must step identically, checked on every step by the replica check.
PER_RANK_DRAWS: dict[str, dict[str, Any]] = {
    "esam": {"rho": 0.2, "gamma": 0.5},
    "ksam": {"rho": 0.2, "fraction": 0.5},
    "rwp": {"gamma": 0.01},
}
#: SAF's bank needs a past epoch: 30 steps of 19 per epoch, the term on from step 19 (Ẽ = 1).
SAF_STEPS = 30
SAF = {"lag": 1, "start_epoch": 0}


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_env() -> dict[str, str]:
    """Keep gloo on the loopback interface (containers whose hostname does not resolve)."""
    return {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform.startswith("linux") else {}


class Digits64(DigitsNoisy):
    """digits-noisy in float64 (tight equivalence tolerances); remembers the model it built.

    ``bump_at`` (rank, batch) shifts one weight of that rank's replica before that batch: the
    deliberate divergence the replica check must catch.
    """

    def __init__(self, bump_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model: nn.Module | None = None
        self.bump_at = bump_at
        self.batches_drawn = 0

    def load_tensors(self) -> tuple[Batch, Batch]:
        (x_tr, y_tr), (x_te, y_te) = super().load_tensors()
        return (x_tr.double(), y_tr), (x_te.double(), y_te)

    def build_model(self) -> nn.Module:
        self.model = super().build_model().double()
        return self.model

    def indexed_train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[IndexedBatch]:
        # the batches with their sample ids (train_batches drops them): SAF can train on it
        for batch in super().indexed_train_batches(batch_size, generator):
            rank = dist.get_rank() if dist.is_initialized() else 0
            if self.bump_at == (rank, self.batches_drawn) and self.model is not None:
                first = next(self.model.parameters())
                first.data[0, 0] += 1e-3
            self.batches_drawn += 1
            yield batch


def digits_config(optimizer: str, workload: str = "digits-noisy", **overrides: Any) -> RunConfig:
    fields: dict[str, Any] = {
        "hyperparameters": {**HYPERPARAMETERS, **PER_RANK_DRAWS, "saf": SAF}[optimizer],
        "batch_size": 64,
        "max_steps": STEPS,
        "epochs": 1,
        "device": "cpu",
        "timing_warmup_steps": 2,
        "warmup_fraction": 0.0,
    }
    fields.update(overrides)
    return RunConfig(workload, optimizer, **fields)


def through_runner(config: RunConfig) -> dict[str, Any]:
    """Train with ``run_training``; the final weights and what the result says."""
    workload = Digits64()
    result = run_training(config, workload=workload)
    assert workload.model is not None
    return {
        "weights": {k: v.detach().clone() for k, v in workload.model.state_dict().items()},
        "status": result.status,
        "steps": result.steps,
        "passes": result.forward_backward_passes,
        "accuracy": result.final_accuracy,
        "train_loss": [h.train_loss for h in result.history],
        "world_size": result.world_size,
        "rank": result.rank,
        "is_main": result.is_main,
        "per_rank": list(result.per_rank_samples_per_second),
        "samples_per_second": result.samples_per_second,
        "backend": result.environment.backend,
    }


class NoisyItems(Dataset[tuple[Tensor, Tensor]]):
    """Examples read one at a time, with fresh noise on every read (a stand-in for augmentation);
    counts its reads, so a test can tell how much each rank decoded."""

    def __init__(self, x: Tensor, y: Tensor, noise: float) -> None:
        self.x, self.y, self.noise = x, y, noise
        self.reads = 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        self.reads += 1
        return self.x[i] + self.noise * torch.randn(self.x[i].shape, dtype=self.x.dtype), self.y[i]


#: The digits through a DataLoader (``custom_workload``): what the runner's config names.
LOADER_WORKLOAD = "ddp_workers:digits_from_a_loader"
LOADER_OPTIMIZERS = ("sgd", "looksam")


def digits_from_a_loader(built: list[nn.Module] | None = None) -> Workload:
    """digits-noisy in float64 read item by item through a DataLoader, noise drawn per read;
    ``built`` collects the models it makes (the caller reads the trained weights there)."""
    (x_tr, y_tr), (x_te, y_te) = Digits64().load_tensors()

    def model() -> nn.Module:
        net = DigitsNoisy().build_model().double()
        if built is not None:
            built.append(net)
        return net

    return custom_workload(
        name="digits-loader",
        model=model,
        train=NoisyItems(x_tr, y_tr, noise=0.1),
        test=NoisyItems(x_te, y_te, noise=0.0),
        batch_size=64,
        epochs=1,
        num_classes=10,
        lr=DigitsNoisy.default_lr,
    )


def through_loader(config: RunConfig) -> dict[str, Any]:
    """Train the DataLoader-fed digits; the final weights and how many examples were read."""
    built: list[nn.Module] = []
    workload = digits_from_a_loader(built)
    result = run_training(config, workload=workload)
    assert isinstance(workload, LoaderWorkload)
    train = workload.train_dataset()
    assert isinstance(train, NoisyItems)
    return {
        "weights": {k: v.detach().clone() for k, v in built[-1].state_dict().items()},
        "status": result.status,
        "steps": result.steps,
        "accuracy": result.final_accuracy,
        "reads": train.reads,
    }


def replica_check_catches_a_bump() -> dict[str, Any]:
    """Rank 1 nudges a weight before its 3rd batch; a check every 2 steps must raise."""
    config = digits_config("sgd", replica_check_every=2)
    try:
        run_training(config, workload=Digits64(bump_at=(1, 2)))
    except RuntimeError as error:
        return {"error": str(error)}
    return {"error": None}


def _mlp() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    return model.double()


def _regression_batch(t: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(100 + t)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    return x, torch.randn(16, 3, generator=gen, dtype=torch.float64)


def through_bucket_views(optimizer: str) -> dict[str, Any]:
    """DDP(gradient_as_bucket_view=True) by hand, each rank on its half of every batch."""
    model = _mlp()
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    forward: nn.Module = model
    if world > 1:
        forward = DistributedDataParallel(model, gradient_as_bucket_view=True)
    opt = create_optimizer(optimizer, model, lr=0.1, **HYPERPARAMETERS[optimizer])
    part = slice(rank * 16 // world, (rank + 1) * 16 // world)
    for t in range(STEPS):
        x, y = _regression_batch(t)

        def closure(x: Tensor = x[part], y: Tensor = y[part]) -> Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(forward(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return {"weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}


@dataclass(frozen=True)
class Scenario:
    """One named thing to run on every rank (and once more in one process, as reference)."""

    name: str
    run: Callable[..., dict[str, Any]]
    args: tuple[Any, ...] = field(default_factory=tuple)


def scenarios() -> list[Scenario]:
    """Everything the equivalence tests need, in one spawn (starting ranks costs seconds)."""
    found = [Scenario(f"global/{o}", through_runner, (digits_config(o),)) for o in HYPERPARAMETERS]
    found += [
        Scenario(f"per-rank/{o}", through_runner, (digits_config(o, perturbation="per-rank"),))
        for o in ("sam", "samk", "looksam", "layerlooksam")
    ]
    # Gradient accumulation: 4 micro-batches per rank (DDP syncs once, with the last), and on
    # the per-rank first pass none (g stays local); both must train as without micro-batches.
    found += [
        Scenario(f"micro/{o}", through_runner, (digits_config(o, micro_batches=4),))
        for o in ("sam", "looksam")
    ]
    found += [
        Scenario(
            "per-rank-micro/looksam",
            through_runner,
            (digits_config("looksam", perturbation="per-rank", micro_batches=4),),
        )
    ]
    found += [
        Scenario(f"replicas/{o}", through_runner, (digits_config(o, replica_check_every=1),))
        for o in PER_RANK_DRAWS
    ]
    # every rank writes every rank's rows into its bank, so each reads what one process would
    found += [
        Scenario(
            "bank/saf", through_runner, (digits_config("saf", max_steps=SAF_STEPS, epochs=2),)
        )
    ]
    found += [
        Scenario(f"bucket-view/{o}", through_bucket_views, (o,))
        for o in ("samk", "looksam", "layerlooksam")
    ]
    found += [
        Scenario(f"loader/{o}", through_loader, (digits_config(o, workload=LOADER_WORKLOAD),))
        for o in LOADER_OPTIMIZERS
    ]
    return found


def run_all(rank: int, world: int) -> dict[str, dict[str, Any]]:
    """Every scenario, then the replica check (last: it ends a run with an exception)."""
    results = {s.name: s.run(*s.args) for s in scenarios()}
    if world > 1:
        results["replica-check"] = replica_check_catches_a_bump()
    return results


def rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    """Entry point of one spawned rank: own process group, every scenario, results to disk."""
    os.environ.update(loopback_env())
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.save(run_all(rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
