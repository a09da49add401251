"""Workloads read through a DataLoader: each rank decodes only its share, and workers persist.

Data-parallel ranks draw the whole global order from the run's generator, exactly as one process
would, and cut every global batch of B indices with ``rank_slice(B, rank, world_size)``: only that
share reaches this rank's DataLoader, so N ranks decode the data once between them, not N times.
Random augmentation must then not depend on which process or worker draws an item, so each
training item is drawn with torch's CPU generator, ``random`` and numpy seeded from its epoch's
seed and its index: N ranks on 1/N of every batch see the very inputs one process sees, whatever
``num_workers``. The loaders are built once and keep their workers across epochs; every epoch
still draws a fresh order (and seed) from the generator.

Every training item travels with its index in the training set, so ``indexed_train_share`` and
``train_share`` read the same loader and the ids cannot drift from the examples they name.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler, get_worker_info

from looksam.train.distributed import check_rank, rank_slice
from looksam.train.workloads._base import Batch, IndexedBatch, Workload, check_train_share

#: Item seeds are 32-bit: torch's CPU generator and numpy's legacy one use no more.
_SEED_SPACE = 2**32


class _Keys(Protocol):
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...


class RankShareSampler(Sampler[list[Any]]):
    """Groups ``keys`` into global batches of ``batch_size`` and yields this rank's contiguous
    share of each (``rank_slice``), so the DataLoader fetches nothing else.

    A last partial batch is dropped with ``drop_last`` (training, as ``steps_per_epoch``
    counts), else cut the same way; an empty share of it is skipped.
    """

    def __init__(
        self, keys: _Keys, batch_size: int, rank: int, world_size: int, *, drop_last: bool
    ) -> None:
        check_rank(rank, world_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be an integer >= 1, got {batch_size!r}")
        self.keys = keys
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last

    def _share(self, n: int) -> slice:
        return rank_slice(n, self.rank, self.world_size)

    def __iter__(self) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for key in self.keys:
            batch.append(key)
            if len(batch) == self.batch_size:
                yield batch[self._share(self.batch_size)]
                batch = []
        share = [] if self.drop_last else batch[self._share(len(batch))]
        if share:
            yield share

    def __len__(self) -> int:
        full, rest = divmod(len(self.keys), self.batch_size)
        part = self._share(rest)
        return full + int(not self.drop_last and part.stop > part.start)


class SeededOrder(Sampler[tuple[int, int]]):
    """One epoch's shuffled indices of ``size`` items, each with the seed its item is drawn with.

    Every pass draws a permutation and a 32-bit epoch seed from ``generator``; item ``i`` gets
    (epoch seed + i) mod 2**32, so its augmentation depends on the run's seed, the epoch and
    ``i`` alone, not on the rank or worker that happens to draw it.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size = size
        self.generator = generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        seed = int(torch.randint(_SEED_SPACE, (), generator=self.generator))
        for index in order:
            yield index, (seed + index) % _SEED_SPACE


class SeededItems(Dataset[Any]):
    """``(dataset[index], index)`` for a key (index, seed), the item drawn with the RNGs seeded
    by ``seed``; the DataLoader collates the indices into an int64 tensor beside the batch.

    In a worker process the RNGs serve these items alone; in the main process
    (``num_workers=0``) they also drive dropout and the run's own draws, so they are restored,
    once per batch share (numpy's state costs tens of microseconds to save and restore).
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style datasets have one

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[tuple[Any, int]]:
        """A batch share's items (the DataLoader's fetcher asks for them all at once)."""
        if get_worker_info() is not None:
            return [self._draw(index, seed) for index, seed in keys]
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        try:
            return [self._draw(index, seed) for index, seed in keys]
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])

    def _draw(self, index: int, seed: int) -> tuple[Any, int]:
        # The CPU generator only: torch.manual_seed would also reseed the GPUs' (dropout there).
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        return self.dataset[index], index


#: What a loader is made of: the dataset and the sampler of this rank's shares.
_Plan = tuple[Dataset[Any], RankShareSampler]


class LoaderWorkload(Workload):
    """A workload whose two datasets are read through DataLoaders, in ``num_workers`` processes.

    Subclasses give the datasets; batches, rank shares and loaders are handled here. Override
    :meth:`train_share` / :meth:`eval_share` (what the runner calls), not ``train_batches``; a
    subclass overriding ``train_share`` alone gives no sample ids (``provides_sample_index``).
    """

    def __init__(self, data_dir: Path | None = None, *, num_workers: int = 0) -> None:
        super().__init__(data_dir)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self.num_workers = num_workers
        self._device = torch.device("cpu")
        # The last loader built per split, with what it was built for: reused while that holds,
        # so persistent workers live as long as the run (one generator) does.
        self._loaders: dict[str, tuple[tuple[Any, ...], DataLoader[Any]]] = {}

    @abc.abstractmethod
    def train_dataset(self) -> Dataset[Any]:
        """The map-style training set of (input, label) items."""

    @abc.abstractmethod
    def eval_dataset(self) -> Dataset[Any]:
        """The map-style test set of (input, label) items."""

    def prepare(self, device: torch.device) -> None:
        self._device = device

    @property
    def num_train_examples(self) -> int:
        return len(self.train_dataset())  # type: ignore[arg-type]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        return self.train_share(batch_size, generator, 0, 1)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        return self.eval_share(batch_size, 0, 1)

    def indexed_train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[IndexedBatch]:
        return self.indexed_train_share(batch_size, generator, 0, 1)

    def train_share(
        self, batch_size: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[Batch]:
        return self._train_loader(batch_size, generator, rank, world_size, with_index=False)

    def indexed_train_share(
        self, batch_size: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[IndexedBatch]:
        """This rank's share with each item's index: the keys of ``SeededOrder``, which the
        training loader carries beside every item (in sampler order, whatever ``num_workers``).
        """
        if not self.provides_sample_index:
            raise self._no_sample_index()
        return self._train_loader(batch_size, generator, rank, world_size, with_index=True)

    def _train_loader(
        self,
        batch_size: int,
        generator: torch.Generator,
        rank: int,
        world_size: int,
        *,
        with_index: bool,
    ) -> Iterator[Any]:
        check_train_share(batch_size, rank, world_size)

        def build() -> _Plan:
            data = self.train_dataset()
            order = SeededOrder(len(data), generator)  # type: ignore[arg-type]
            sampler = RankShareSampler(order, batch_size, rank, world_size, drop_last=True)
            return SeededItems(data), sampler

        loader = self._loader("train", (batch_size, generator, rank, world_size), build)
        return self._indexed_to_device(loader, with_index)

    def eval_share(self, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        check_rank(rank, world_size)

        def build() -> _Plan:
            data = self.eval_dataset()
            keys = SequentialSampler(data)  # type: ignore[arg-type]
            return data, RankShareSampler(keys, batch_size, rank, world_size, drop_last=False)

        return self._to_device(self._loader("eval", (batch_size, rank, world_size), build))

    def _loader(
        self, split: str, purpose: tuple[Any, ...], build: Callable[[], _Plan]
    ) -> DataLoader[Any]:
        pin = self._device.type == "cuda"  # pinned host memory: asynchronous copies
        key = (*purpose, self.num_workers, pin)
        held = self._loaders.get(split)
        if held is None or held[0] != key:  # generators compare by identity
            dataset, sampler = build()
            loader: DataLoader[Any] = DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=pin,
                persistent_workers=self.num_workers > 0,
                # Worker seeds: training items are seeded one by one; a generator of its own
                # keeps the loader from drawing on the global RNG.
                generator=torch.Generator().manual_seed(0),
            )
            held = self._loaders[split] = (key, loader)
        return held[1]

    def _to_device(self, loader: DataLoader[Any]) -> Iterator[Batch]:
        device = self._device
        non_blocking = device.type == "cuda"
        for x, y in loader:
            yield x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)

    def _indexed_to_device(self, loader: DataLoader[Any], with_index: bool) -> Iterator[Any]:
        """(x, y, index) from the training loader's ((x, y), index); (x, y) without ids."""
        device = self._device
        non_blocking = device.type == "cuda"
        for (x, y), index in loader:
            x = x.to(device, non_blocking=non_blocking)
            y = y.to(device, non_blocking=non_blocking)
            if with_index:
                yield x, y, index.to(device, non_blocking=non_blocking)
            else:
                yield x, y
