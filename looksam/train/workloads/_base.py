"""What a workload is: model, data, loss, metric and target. The runner owns the loop.

Modelled on MLCommons AlgoPerf's ``Workload``: everything that defines the *problem* lives here,
nothing about *how to train* does, so every optimizer is measured on exactly the same problem.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from looksam.train.distributed import check_rank, rank_slice

Batch = tuple[Tensor, Tensor]
#: A training batch with each example's position in the training set: (x, y, index), where
#: ``index`` is int64, on ``y``'s device, in 0 … ``num_train_examples`` - 1.
IndexedBatch = tuple[Tensor, Tensor, Tensor]

#: The methods that make a workload's training data (train_batches/train_share) and those that
#: make it with sample ids (indexed_*): see :attr:`Workload.provides_sample_index`.
_DATA_METHODS = ("train_batches", "train_share")
_INDEX_METHODS = ("indexed_train_batches", "indexed_train_share")


class WorkloadDataError(RuntimeError):
    """The workload's data is missing or malformed; the message says where to put it."""


@dataclass(frozen=True)
class WorkloadInfo:
    """Registry entry: enough to list, validate and create a workload without loading data."""

    name: str
    summary: str
    cls: type[Workload]
    measures_accuracy: bool
    needs_data_dir: bool
    target_accuracy: float | None
    default_epochs: int
    default_batch_size: int
    default_lr: float
    #: ``indexed_train_share`` gives each example's position (SAF's per-sample bank needs it).
    provides_sample_index: bool = False
    #: ``per_sample_loss`` gives the unreduced loss whose mean is ``loss`` (ESAM, K-SAM).
    provides_per_sample_loss: bool = False


def _owner(cls: type, names: tuple[str, ...]) -> int:
    """Position in ``cls``'s MRO of the most derived class that defines one of ``names``."""
    return next(i for i, c in enumerate(cls.__mro__) if any(n in vars(c) for n in names))


class _Capability:
    """A bool that reads the same on a workload class and on its instances (``Cls.flag``,
    ``workload.flag``): what the classmethod ``hook`` of the class says (given the instance,
    or None when read on the class)."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def __get__(self, instance: Workload | None, owner: type[Workload]) -> bool:
        return bool(getattr(owner, self.hook)(instance))


class Workload(abc.ABC):
    """Base class: subclasses set the class attributes and build model and data.

    Variants are subclasses that change one property (a different model, noise level…).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: Test accuracy that counts as "reached" for time-to-target (None: no target).
    target_accuracy: ClassVar[float | None] = None
    #: False for throughput workloads on random data: the runner refuses to report accuracy.
    measures_accuracy: ClassVar[bool] = True
    needs_data_dir: ClassVar[bool] = False
    default_epochs: ClassVar[int] = 10
    default_batch_size: ClassVar[int] = 128
    default_lr: ClassVar[float] = 0.05  # for the SGD base; AdamW/LAMB use their registry defaults
    num_classes: ClassVar[int] = 10

    #: Whether :meth:`indexed_train_share` gives sample ids: True where a class implements it
    #: (``indexed_train_share`` or ``indexed_train_batches``) and no subclass below it changes
    #: the training data (``train_batches``/``train_share``) without changing the ids too.
    #: Read it on the class (before any data is loaded) or on an instance.
    provides_sample_index = _Capability("_provides_sample_index")
    #: Whether :meth:`per_sample_loss` matches :meth:`loss`: True where the class keeps the
    #: default cross-entropy ``loss``, or overrides ``per_sample_loss`` wherever it overrides
    #: ``loss`` (a subclass changing ``loss`` alone turns it off).
    provides_per_sample_loss = _Capability("_provides_per_sample_loss")

    def __init__(self, data_dir: Path | None = None) -> None:
        if self.needs_data_dir and data_dir is None:
            raise WorkloadDataError(
                f"{self.name} reads its data from disk: pass --data-dir DIR ({self.data_hint()})"
            )
        self.data_dir = data_dir

    def data_hint(self) -> str:
        """One line telling the user what the data directory must contain."""
        return "no data needed"

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the caller seeds torch first)."""

    @abc.abstractmethod
    def prepare(self, device: torch.device) -> None:
        """Load (or generate) the data onto ``device``; raise WorkloadDataError if missing."""

    @property
    @abc.abstractmethod
    def num_train_examples(self) -> int:
        """Examples in one training epoch."""

    @abc.abstractmethod
    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of shuffled training batches on the device (order fixed by ``generator``)."""

    @abc.abstractmethod
    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole test set, in batches, on the device."""

    def train_share(
        self, batch_size: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[Batch]:
        """One epoch of this rank's contiguous share (``rank_slice``) of every global batch.

        Every rank draws the same global batches from an identically seeded generator, so the
        ranks' shares, in rank order, are exactly the batches of one process. This default loads
        each whole batch and slices it, which costs nothing for tensors already on the device;
        workloads that decode their data (``LoaderWorkload``) load only the share instead.

        Raises:
            ValueError: a rank outside the world, or fewer examples per batch than ranks.
        """
        check_train_share(batch_size, rank, world_size)
        batches = self.train_batches(batch_size, generator)
        return batches if world_size == 1 else _sliced(batches, rank, world_size)

    def indexed_train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[IndexedBatch]:
        """``train_batches`` with each example's position in the training set (int64, on
        ``y``'s device): for the same generator state, the very batches ``train_batches`` yields.

        Raises:
            NotImplementedError: the workload gives no sample ids (``provides_sample_index``).
        """
        raise self._no_sample_index()

    def _no_sample_index(self) -> NotImplementedError:
        """The one-line error of a workload without sample ids (``provides_sample_index``)."""
        return NotImplementedError(
            f"workload {self.name} gives no sample ids (indexed_train_share): its class does "
            "not implement them, or a subclass changes its training batches without them"
        )

    def indexed_train_share(
        self, batch_size: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[IndexedBatch]:
        """``train_share`` with sample ids: (x, y, index), ``index`` (int64, on ``y``'s device)
        each example's position in the training set, 0 … ``num_train_examples`` - 1.

        For the same generator state it yields exactly the batches ``train_share`` yields, in
        the same order, so a run that asks for ids trains on the same data; a rank's ids are
        sliced as its examples are. Check :attr:`provides_sample_index` before training.

        Raises:
            NotImplementedError: the workload gives no sample ids (one line saying so).
            ValueError: a rank outside the world, or fewer examples per batch than ranks.
        """
        if not self.provides_sample_index:
            raise self._no_sample_index()
        check_train_share(batch_size, rank, world_size)
        batches = self.indexed_train_batches(batch_size, generator)
        return batches if world_size == 1 else _sliced(batches, rank, world_size)

    def eval_share(self, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        """This rank's contiguous share of every test batch; a rank whose share of the last,
        partial batch is empty skips it (evaluation only sums counts, so shares may differ)."""
        check_rank(rank, world_size)
        batches = self.eval_batches(batch_size)
        return batches if world_size == 1 else _sliced(batches, rank, world_size)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy; override for other objectives (and :meth:`per_sample_loss` with
        it, or ``provides_per_sample_loss`` turns False)."""
        return nn.functional.cross_entropy(logits, targets)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Each example's loss, unreduced (shape [n]), whose mean is :meth:`loss`: here
        cross-entropy with ``reduction="none"``.

        Raises:
            NotImplementedError: the class overrides ``loss`` but not this
                (``provides_per_sample_loss`` is False).
        """
        if not self.provides_per_sample_loss:
            raise NotImplementedError(
                f"workload {self.name} gives no per-sample loss: it overrides loss() without "
                "per_sample_loss()"
            )
        return nn.functional.cross_entropy(logits, targets, reduction="none")

    @classmethod
    def _provides_sample_index(cls, instance: Workload | None) -> bool:
        """See :attr:`provides_sample_index`; overridable where the answer is not structural."""
        ids = _owner(cls, _INDEX_METHODS)
        return cls.__mro__[ids] is not Workload and ids <= _owner(cls, _DATA_METHODS)

    @classmethod
    def _provides_per_sample_loss(cls, instance: Workload | None) -> bool:
        """See :attr:`provides_per_sample_loss`; overridable where the answer is not structural."""
        return _owner(cls, ("per_sample_loss",)) <= _owner(cls, ("loss",))

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a batch that one epoch cannot fill (it would yield no step at all)."""
        if batch_size > self.num_train_examples:
            raise ValueError(
                f"batch size {batch_size} exceeds the {self.num_train_examples} training "
                f"examples of {self.name}"
            )

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch (the last, partial batch is dropped)."""
        return max(1, self.num_train_examples // batch_size)

    @classmethod
    def info(cls) -> WorkloadInfo:
        """This workload's registry entry."""
        return WorkloadInfo(
            name=cls.name,
            summary=cls.summary,
            cls=cls,
            measures_accuracy=cls.measures_accuracy,
            needs_data_dir=cls.needs_data_dir,
            target_accuracy=cls.target_accuracy,
            default_epochs=cls.default_epochs,
            default_batch_size=cls.default_batch_size,
            default_lr=cls.default_lr,
            provides_sample_index=cls.provides_sample_index,
            provides_per_sample_loss=cls.provides_per_sample_loss,
        )


class TensorWorkload(Workload):
    """A workload whose whole data set fits on the device as four tensors (fast: no loader)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__(data_dir)
        self._host: tuple[Batch, Batch] | None = None
        self._train: Batch | None = None
        self._test: Batch | None = None

    @abc.abstractmethod
    def load_tensors(self) -> tuple[Batch, Batch]:
        """(x_train, y_train), (x_test, y_test) on the CPU; called at most once per instance."""

    def host_tensors(self) -> tuple[Batch, Batch]:
        """The CPU tensors, loaded once and kept until ``prepare`` moves them to the device."""
        if self._host is None:
            self._host = self.load_tensors()
        return self._host

    def prepare(self, device: torch.device) -> None:
        (x_tr, y_tr), (x_te, y_te) = self.host_tensors()
        self._train = (x_tr.to(device), y_tr.to(device))
        self._test = (x_te.to(device), y_te.to(device))
        self._host = None  # the device copy is the one used from now on

    def _require(self, split: Batch | None) -> Batch:
        if split is None:
            raise RuntimeError(f"{self.name}: call prepare(device) before asking for batches")
        return split

    @property
    def num_train_examples(self) -> int:
        if self._train is None:
            (x_tr, _), _ = self.host_tensors()
            return len(x_tr)
        return len(self._train[0])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for x, y, _ in self.indexed_train_batches(batch_size, generator):
            yield x, y

    def indexed_train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[IndexedBatch]:
        """The one definition of the training order: a permutation from ``generator``, cut into
        full batches; each batch's ids are its slice of the permutation.

        Subclasses that transform batches (augmentation) override this, not ``train_batches``.
        """
        x, y = self._require(self._train)
        order = torch.randperm(len(x), generator=generator).to(y.device)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx], idx

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        x, y = self._require(self._test)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]


def check_train_share(batch_size: int, rank: int, world_size: int) -> None:
    """ValueError unless ``rank`` of ``world_size`` gets at least one example of every batch."""
    check_rank(rank, world_size)
    if batch_size < world_size:
        raise ValueError(
            f"batch size {batch_size} leaves some of the {world_size} ranks without an "
            "example; use at least one per rank"
        )


_B = TypeVar("_B", Batch, IndexedBatch)


def _sliced(batches: Iterator[_B], rank: int, world_size: int) -> Iterator[_B]:
    """This rank's contiguous share of every batch (every tensor of it cut alike)."""
    for batch in batches:
        part = rank_slice(len(batch[1]), rank, world_size)
        if part.stop > part.start:
            yield tuple(t[part] for t in batch)  # type: ignore[misc]


_REGISTRY: dict[str, type[Workload]] = {}


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Class decorator adding a workload to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"workload {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_workloads() -> list[WorkloadInfo]:
    """Every registered workload, in registration order."""
    return [cls.info() for cls in _REGISTRY.values()]


#: Resolves a name outside the registry to its entry and a factory (``factory(data_dir=…)``).
WorkloadResolver = Callable[[str], tuple[WorkloadInfo, Callable[..., Workload]]]
#: Resolvers of ``PREFIX:REST`` names by prefix; ``""`` takes every other name with a colon.
_RESOLVERS: dict[str, WorkloadResolver] = {}


def register_workload_resolver(prefix: str, resolver: WorkloadResolver) -> None:
    """Resolve names ``PREFIX:…`` (``""``: any other ``a:b``) that are not registered.

    The resolver raises ValueError (one line) for a name it cannot resolve; it should cache,
    since every command asks for the entry several times.
    """
    _RESOLVERS[prefix] = resolver


def _resolve(name: str) -> tuple[WorkloadInfo, Callable[..., Workload]]:
    if isinstance(name, str) and name not in _REGISTRY and ":" in name:
        prefix = name.partition(":")[0]
        resolver = _RESOLVERS.get(prefix) or _RESOLVERS.get("")
        if resolver is not None:
            return resolver(name)
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown workload {name!r}; choose one of: {', '.join(_REGISTRY)}; or "
            "timm:MODEL (any timm model), or MODULE:FUNCTION (a function returning a Workload)"
        ) from None
    return cls.info(), cls


def get_workload_info(name: str) -> WorkloadInfo:
    """The registry entry for ``name``; ValueError listing the valid names otherwise.

    Besides registered names: ``timm:MODEL`` and ``module:function`` (see their resolvers).
    """
    return _resolve(name)[0]


def create_workload(name: str, *, data_dir: Path | None = None, **options: Any) -> Workload:
    """Instantiate a workload (data is loaded later, by ``prepare``)."""
    factory = _resolve(name)[1]
    return factory(data_dir=data_dir, **options)
