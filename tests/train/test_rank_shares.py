"""Data-parallel loading: each rank reads only its share of every global batch, and the shares,
in rank order, are exactly the batches of one process; DataLoader workers live across epochs.

No process group is needed: a rank's share is a pure function of (rank, world size) and the
seeded generator, so every "rank" here is a fresh workload asked for its share.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, SequentialSampler, TensorDataset

from looksam.train.distributed import rank_slice
from looksam.train.workloads import LoaderWorkload, Workload, custom_workload
from looksam.train.workloads._loader import RankShareSampler

CPU = torch.device("cpu")
SEED = 7
EPOCHS = 2
Batches = list[tuple[Tensor, Tensor]]


class Probe(Dataset[tuple[Tensor, int]]):
    """Item i is ([a random draw, the pid that read it], i): the draw stands in for augmentation.

    ``reads`` lists the indices read in this process (workers read their own copy).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        self.reads.append(i)
        draw = torch.rand((), dtype=torch.float64).item()
        return torch.tensor([draw, float(os.getpid())], dtype=torch.float64), i


def loader_workload(n: int = 40, test: int = 12, num_workers: int = 0) -> LoaderWorkload:
    workload = custom_workload(
        name="probe",
        model=lambda: nn.Linear(2, 3),
        train=Probe(n),
        test=Probe(test),
        batch_size=6,
        epochs=EPOCHS,
        num_classes=3,
        num_workers=num_workers,
    )
    assert isinstance(workload, LoaderWorkload)
    workload.prepare(CPU)
    return workload


def reads(workload: LoaderWorkload, split: str) -> list[int]:
    data = workload.train_dataset() if split == "train" else workload.eval_dataset()
    assert isinstance(data, Probe)
    return data.reads


def epochs(workload: Workload, batch_size: int, rank: int, world: int) -> Batches:
    """What the runner draws: EPOCHS passes over one generator, rank ``rank`` of ``world``."""
    generator = torch.Generator().manual_seed(SEED)
    return [
        batch
        for _ in range(EPOCHS)
        for batch in workload.train_share(batch_size, generator, rank, world)
    ]


@pytest.mark.parametrize(("world", "batch_size"), [(1, 6), (2, 6), (3, 6), (3, 7)])
def test_rank_shares_rebuild_the_global_batches_and_each_rank_reads_only_its_own(
    world: int, batch_size: int
) -> None:
    single = epochs(loader_workload(), batch_size, 0, 1)
    steps = 40 // batch_size
    assert len(single) == EPOCHS * steps
    per_epoch = [single[e * steps : (e + 1) * steps] for e in range(EPOCHS)]
    first, second = (torch.cat([y for _, y in batches]) for batches in per_epoch)
    assert len(set(first.tolist())) == len(first)  # an epoch visits each example at most once
    assert not torch.equal(first, second)  # every epoch draws a fresh order
    draws = [
        {int(i): d for x, y in batches for i, d in zip(y, x[:, 0].tolist(), strict=True)}
        for batches in per_epoch
    ]
    both = draws[0].keys() & draws[1].keys()
    assert all(draws[0][i] != draws[1][i] for i in both)  # and fresh augmentation
    shares: list[Batches] = []
    for rank in range(world):
        workload = loader_workload()
        mine = epochs(workload, batch_size, rank, world)
        assert len(mine) == len(single)
        assert reads(workload, "train") == torch.cat([y for _, y in mine]).tolist()
        shares.append(mine)
    for step, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([share[step][1] for share in shares]), y)
        # the random draws too: each item is seeded by its epoch and index, not by who reads it
        assert torch.equal(torch.cat([share[step][0][:, 0] for share in shares]), x[:, 0])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_shares_cover_the_test_set_once(world: int) -> None:
    whole = list(loader_workload().eval_batches(5))
    assert [len(y) for _, y in whole] == [5, 5, 2]
    for rank in range(world):
        workload = loader_workload()
        got = [y.tolist() for _, y in workload.eval_share(5, rank, world)]
        cut = [y[rank_slice(len(y), rank, world)].tolist() for _, y in whole]
        assert got == [share for share in cut if share]  # empty shares are skipped
        assert reads(workload, "eval") == [i for share in got for i in share]


def test_in_memory_workloads_slice_the_same_global_batches() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    made = custom_workload(
        name="tensors",
        model=lambda: nn.Linear(2, 3),
        train=TensorDataset(x, torch.arange(40) % 3),
        test=TensorDataset(x[:12], torch.arange(12) % 3),
        batch_size=6,
        epochs=EPOCHS,
    )
    assert not isinstance(made, LoaderWorkload)  # the default train_share: load, then slice
    made.prepare(CPU)
    single = epochs(made, 6, 0, 1)
    shares = [epochs(made, 6, rank, 2) for rank in range(2)]
    for step, (xs, _) in enumerate(single):
        assert torch.equal(torch.cat([share[step][0] for share in shares]), xs)
    assert sum(len(y) for r in range(3) for _, y in made.eval_share(5, r, 3)) == 12


def test_workers_persist_across_epochs_and_draw_what_the_main_process_draws() -> None:
    in_process = epochs(loader_workload(), 6, 0, 1)
    workload = loader_workload(num_workers=1)
    with_worker = epochs(workload, 6, 0, 1)
    pids = {int(pid) for x, _ in with_worker for pid in x[:, 1].tolist()}
    assert len(pids) == 1  # one worker served both epochs
    assert pids != {os.getpid()}
    for (x, y), (x0, y0) in zip(with_worker, in_process, strict=True):
        assert torch.equal(y, y0)
        assert torch.equal(x[:, 0], x0[:, 0])  # the same draws, in a worker or not
    evaluated = [
        int(pid) for _ in range(2) for x, _ in workload.eval_share(5, 0, 1) for pid in x[:, 1]
    ]
    assert len(set(evaluated)) == 1  # evaluation keeps its worker too


def test_reading_in_the_main_process_leaves_the_global_rngs_alone() -> None:
    workload = loader_workload()
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()
    epochs(workload, 6, 0, 1)
    assert torch.equal(torch.get_rng_state(), before[0])  # dropout's stream is untouched
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2][1])


@pytest.mark.parametrize(
    ("rank", "world", "batch_size", "message"),
    [
        (2, 2, 6, r"rank must be in \[0, 2\), got 2"),
        (-1, 2, 6, r"rank must be in \[0, 2\), got -1"),
        (0, 0, 6, "world size must be >= 1, got 0"),
        (0, 4, 3, "batch size 3 leaves some of the 4 ranks without an example"),
    ],
)
@pytest.mark.parametrize("kind", ["loader", "tensors"])
def test_a_share_outside_the_world_is_refused(
    rank: int, world: int, batch_size: int, message: str, kind: str
) -> None:
    workload: Workload = loader_workload()
    if kind == "tensors":
        workload = custom_workload(
            name="tensors",
            model=lambda: nn.Linear(2, 3),
            train=TensorDataset(torch.zeros(8, 2), torch.arange(8) % 3),
            test=TensorDataset(torch.zeros(4, 2), torch.arange(4) % 3),
            batch_size=4,
            epochs=1,
        )
    with pytest.raises(ValueError, match=message):
        workload.train_share(batch_size, torch.Generator(), rank, world)
    if "batch size" not in message:
        with pytest.raises(ValueError, match=message):
            workload.eval_share(batch_size, rank, world)
    with pytest.raises(ValueError, match="batch size must be an integer >= 1, got 0"):
        RankShareSampler(SequentialSampler(range(4)), 0, 0, 1, drop_last=True)
