"""Sample ids: ``indexed_train_share`` yields (x, y, index), each example with its position in
the training set, and exactly the batches ``train_share`` yields from the same generator state.

Checked on the data paths the workloads use (tensors on the device, a DataLoader with and
without worker processes, the synthetic pool, CIFAR's on-device augmentation) and on rank
shares; a workload that gives no ids says so (``provides_sample_index``) and raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from looksam.train.workloads import (
    Batch,
    LoaderWorkload,
    TensorWorkload,
    Workload,
    create_workload,
    custom_workload,
    get_workload_info,
)
from looksam.train.workloads.cifar import Cifar10Workload
from looksam.train.workloads.digits import DigitsNoisy

CPU = torch.device("cpu")
SEED = 3
N_TRAIN = 45  # not a multiple of the batch: the last partial batch is dropped
BATCH = 6

_features = torch.randn(N_TRAIN, 4, generator=torch.Generator().manual_seed(0))
_labels = torch.arange(N_TRAIN) % 3


class Jittered(Dataset[tuple[Tensor, int]]):
    """Item i is ([features of i, a random draw], label of i): the draw stands in for
    augmentation, which the loader seeds per item, so it must follow the item and its id."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.cat([_features[i], torch.rand(1)]), int(_labels[i])


def loader_workload(num_workers: int) -> LoaderWorkload:
    workload = custom_workload(
        name="jittered",
        model=lambda: nn.Linear(5, 3),
        train=Jittered(N_TRAIN),
        test=Jittered(9),
        batch_size=BATCH,
        epochs=1,
        num_classes=3,
        num_workers=num_workers,
    )
    assert isinstance(workload, LoaderWorkload)
    workload.prepare(CPU)
    return workload


def digits() -> tuple[Workload, Tensor, Tensor]:
    workload = create_workload("digits-noisy")
    assert isinstance(workload, TensorWorkload)
    (x, y), _ = workload.host_tensors()
    workload.prepare(CPU)
    return workload, x, y


def indexed(
    workload: Workload, rank: int = 0, world: int = 1, batch: int = BATCH
) -> list[tuple[Tensor, Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(SEED)
    return list(workload.indexed_train_share(batch, generator, rank, world))


def plain(workload: Workload, rank: int = 0, world: int = 1, batch: int = BATCH) -> list[Batch]:
    generator = torch.Generator().manual_seed(SEED)
    return list(workload.train_share(batch, generator, rank, world))


def check_ids(batches: list[tuple[Tensor, Tensor, Tensor]], n: int, batch: int) -> None:
    """int64 ids, one per example, in range, none twice in the epoch, every full batch there."""
    assert len(batches) == n // batch
    for x, y, index in batches:
        assert index.dtype == torch.int64
        assert index.device == y.device
        assert index.shape == (len(y),) == (len(x),)
    ids = torch.cat([index for _, _, index in batches])
    assert len(ids) == len(set(ids.tolist())) == (n // batch) * batch
    assert int(ids.min()) >= 0
    assert int(ids.max()) < n


def check_same(batches: list[tuple[Tensor, Tensor, Tensor]], reference: list[Batch]) -> None:
    assert len(batches) == len(reference)
    for (x, y, _), (x_ref, y_ref) in zip(batches, reference, strict=True):
        assert torch.equal(x, x_ref)
        assert torch.equal(y, y_ref)


def check_ranks(workload: Workload, world: int, batch: int) -> None:
    """World ``world``'s shares, in rank order, are the batches (and ids) of one process."""
    whole = indexed(workload, batch=batch)
    shares = [indexed(workload, rank, world, batch=batch) for rank in range(world)]
    assert all(len(s) == len(whole) for s in shares)
    for step, full in enumerate(whole):
        for part in range(3):  # x, y and the ids are cut alike
            assert torch.equal(torch.cat([s[step][part] for s in shares]), full[part])
    for rank in range(world):  # and each share is that rank's train_share
        check_same(shares[rank], plain(workload, rank, world, batch=batch))


# --- tensors on the device ----------------------------------------------------------------------


def test_tensor_ids_are_positions_in_the_training_set() -> None:
    workload, train_x, train_y = digits()
    assert workload.provides_sample_index
    assert DigitsNoisy.provides_sample_index
    assert get_workload_info("digits-noisy").provides_sample_index
    batches = indexed(workload, batch=64)
    check_ids(batches, workload.num_train_examples, 64)
    for x, y, index in batches:
        assert torch.equal(x, train_x[index])
        assert torch.equal(y, train_y[index])
    check_same(batches, plain(workload, batch=64))
    # train_batches draws the very same epoch
    check_same(batches, list(workload.train_batches(64, torch.Generator().manual_seed(SEED))))


def test_tensor_rank_shares_cut_ids_with_the_examples() -> None:
    workload, _, _ = digits()
    check_ranks(workload, 3, 64)
    check_ranks(workload, 3, 7)  # shares of unequal size: 3, 2, 2


def test_tensor_ids_follow_the_generator_across_epochs() -> None:
    workload, train_x, _ = digits()
    generator = torch.Generator().manual_seed(SEED)
    first = [i for _, _, i in workload.indexed_train_share(64, generator, 0, 1)]
    second = [i for _, _, i in workload.indexed_train_share(64, generator, 0, 1)]
    assert not torch.equal(torch.cat(first), torch.cat(second))  # a fresh order each epoch
    again = torch.Generator().manual_seed(SEED)
    list(workload.train_share(64, again, 0, 1))  # an epoch without ids advances it alike
    for x, _, index in workload.indexed_train_share(64, again, 0, 1):
        assert torch.equal(x, train_x[index])
        assert torch.equal(index, second.pop(0))


# --- a DataLoader -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_ids_are_positions_in_the_training_set(num_workers: int) -> None:
    workload = loader_workload(num_workers)
    assert workload.provides_sample_index
    assert type(workload).provides_sample_index
    batches = indexed(workload)
    check_ids(batches, N_TRAIN, BATCH)
    for x, y, index in batches:
        assert torch.equal(x[:, :4], _features[index])
        assert torch.equal(y, _labels[index])
    # The same epoch without ids: the same items, and the same seeded draws for each.
    check_same(batches, plain(workload))


def test_loader_ids_with_workers_match_the_main_process() -> None:
    without, within = indexed(loader_workload(0)), indexed(loader_workload(2))
    for a, b in zip(without, within, strict=True):
        assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def test_loader_rank_shares_cut_ids_with_the_examples() -> None:
    workload = loader_workload(0)
    check_ranks(workload, 3, BATCH)
    check_ranks(workload, 3, 7)


# --- the other data paths -----------------------------------------------------------------------


def test_synthetic_ids_index_the_pool() -> None:
    workload = create_workload("synthetic-mlp")
    assert workload.provides_sample_index
    workload.prepare(CPU)
    n = workload.num_train_examples
    ((x_all, y_all, order),) = indexed(workload, batch=n)  # one batch: the whole pool
    assert sorted(order.tolist()) == list(range(n))
    pool_x, pool_y = torch.empty_like(x_all), torch.empty_like(y_all)
    pool_x[order], pool_y[order] = x_all, y_all  # the pool, in its own order
    batches = indexed(workload, batch=32)
    check_ids(batches, n, 32)
    for x, y, index in batches:
        assert torch.equal(x, pool_x[index])
        assert torch.equal(y, pool_y[index])
    check_same(batches, plain(workload, batch=32))
    # Larger than the pool: drawn with replacement, ids still name pool positions.
    ((x, y, index),) = indexed(workload, batch=n + 5)
    assert torch.equal(x, pool_x[index])
    assert torch.equal(y, pool_y[index])


class TinyCifar(Cifar10Workload):
    """CIFAR's on-device augmentation over 30 random uint8 images (no files)."""

    name = "tiny-cifar"

    def load_tensors(self) -> tuple[Batch, Batch]:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (36, 3, 32, 32), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (36,), generator=g)
        return (images[:30], labels[:30]), (images[30:], labels[30:])

    def build_model(self) -> nn.Module:
        return nn.Flatten()


@pytest.mark.parametrize("augment", [True, False])
def test_cifar_ids_follow_the_augmented_images(augment: bool) -> None:
    cls = type("TinyCifar", (TinyCifar,), {"augment": augment})
    workload = cls(Path("unused"))
    assert workload.provides_sample_index
    (train_x, train_y), _ = workload.host_tensors()
    workload.prepare(CPU)
    batches = indexed(workload, batch=8)
    check_ids(batches, 30, 8)
    check_same(batches, plain(workload, batch=8))
    for x, y, index in batches:
        assert torch.equal(y, train_y[index])
        if not augment:
            assert torch.equal(x, workload.normalize(train_x[index]))
    check_ranks(workload, 3, 8)


def test_every_builtin_entry_says_whether_it_gives_ids() -> None:
    from looksam.train.workloads import list_workloads

    for info in list_workloads():
        assert info.provides_sample_index is info.cls.provides_sample_index is True, info.name


# --- workloads without ids ----------------------------------------------------------------------


class Bare(Workload):
    """Only the abstract methods: no sample ids."""

    name = "bare"
    summary = "bare"

    def build_model(self) -> nn.Module:
        return nn.Linear(2, 2)

    def prepare(self, device: torch.device) -> None:
        pass

    @property
    def num_train_examples(self) -> int:
        return 8

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for _ in range(8 // batch_size):
            yield torch.zeros(batch_size, 2), torch.zeros(batch_size, dtype=torch.long)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        yield torch.zeros(batch_size, 2), torch.zeros(batch_size, dtype=torch.long)


def test_a_workload_without_ids_says_so_and_raises() -> None:
    assert Bare.provides_sample_index is False
    workload = Bare()
    assert workload.provides_sample_index is False
    assert Bare.info().provides_sample_index is False
    with pytest.raises(NotImplementedError, match="bare gives no sample ids") as raised:
        workload.indexed_train_share(4, torch.Generator(), 0, 1)
    assert "\n" not in str(raised.value)
    assert len(plain(workload, batch=4)) == 2  # the batches themselves still work


class Relabelled(DigitsNoisy):
    """Changes the training batches below the class that gives ids: those ids are stale."""

    name = "relabelled"

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for x, y in super().train_batches(batch_size, generator):
            yield x, (y + 1) % 10


def test_a_subclass_changing_the_batches_alone_gives_no_ids() -> None:
    assert Relabelled.provides_sample_index is False
    workload = Relabelled()
    workload.prepare(CPU)
    with pytest.raises(NotImplementedError, match="relabelled gives no sample ids"):
        workload.indexed_train_share(4, torch.Generator(), 0, 1)


def test_a_rank_outside_the_world_is_refused() -> None:
    workload, _, _ = digits()
    with pytest.raises(ValueError, match="rank"):
        workload.indexed_train_share(4, torch.Generator(), 3, 3)
    with pytest.raises(ValueError, match="without an example"):
        loader_workload(0).indexed_train_share(2, torch.Generator(), 0, 3)
