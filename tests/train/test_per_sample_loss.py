"""Per-sample losses: ``per_sample_loss`` is one unreduced loss per example whose mean is
``loss``, on every built-in workload and on custom ones; ``provides_per_sample_loss`` says where
a workload has none (a loss of its own without a per-sample one), which then raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from looksam.train.workloads import (
    Workload,
    WorkloadDataError,
    create_workload,
    custom_workload,
    get_workload_info,
    list_workloads,
)
from looksam.train.workloads.custom import CustomTensorWorkload
from looksam.train.workloads.digits import DigitsNoisy

CPU = torch.device("cpu")

#: Built-ins that measure accuracy and load without --data-dir (the others need files).
OFFLINE = [i.name for i in list_workloads() if i.measures_accuracy and not i.needs_data_dir]


def check_mean(workload: Workload, logits: Tensor, targets: Tensor) -> Tensor:
    """The per-sample losses, checked: shape [n], float64, mean == loss to 1e-12."""
    losses = workload.per_sample_loss(logits, targets)
    assert losses.shape == (len(targets),)
    assert losses.dtype == torch.float64
    torch.testing.assert_close(losses.mean(), workload.loss(logits, targets), rtol=0.0, atol=1e-12)
    return losses


@pytest.mark.parametrize("name", OFFLINE)
def test_builtin_per_sample_mean_is_the_loss(name: str) -> None:
    try:
        workload = create_workload(name)
        workload.prepare(CPU)
    except WorkloadDataError as error:  # an optional dependency is missing (mnist-5k)
        pytest.skip(str(error))
    assert workload.provides_per_sample_loss
    assert type(workload).provides_per_sample_loss
    assert get_workload_info(name).provides_per_sample_loss
    torch.manual_seed(0)
    model = workload.build_model().double()
    x, y = next(workload.train_batches(32, torch.Generator().manual_seed(0)))
    losses = check_mean(workload, model(x.double()), y)
    assert bool((losses > 0).all())


def test_every_builtin_entry_gives_per_sample_losses() -> None:
    assert "digits-noisy" in OFFLINE
    for info in list_workloads():
        assert info.provides_per_sample_loss is info.cls.provides_per_sample_loss is True


# --- custom workloads ---------------------------------------------------------------------------


def smoothed(logits: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits, y, label_smoothing=0.1)


def smoothed_each(logits: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits, y, label_smoothing=0.1, reduction="none")


def data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return TensorDataset(x, x[:, :3].argmax(dim=1))


class Pairs(Dataset[tuple[Tensor, int]]):
    """Not a TensorDataset: the DataLoader path."""

    def __init__(self, n: int) -> None:
        self.x, self.y = data(n).tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], int(self.y[i])


def make(kind: str, **losses: Any) -> Workload:
    wrap: Callable[[int], Any] = data if kind == "tensors" else Pairs
    return custom_workload(
        name="mine",
        model=lambda: nn.Linear(6, 3).double(),
        train=wrap(24),
        test=wrap(8),
        batch_size=8,
        epochs=1,
        num_classes=3,
        **losses,
    )


def batch(workload: Workload) -> tuple[Tensor, Tensor]:
    workload.prepare(CPU)
    torch.manual_seed(0)
    model = workload.build_model()
    x, y = next(workload.train_batches(8, torch.Generator().manual_seed(0)))
    return model(x), y


@pytest.mark.parametrize("kind", ["tensors", "loader"])
def test_custom_without_losses_uses_cross_entropy_for_both(kind: str) -> None:
    workload = make(kind)
    assert workload.provides_per_sample_loss
    assert type(workload).info().provides_per_sample_loss
    logits, y = batch(workload)
    losses = check_mean(workload, logits, y)
    torch.testing.assert_close(losses, nn.functional.cross_entropy(logits, y, reduction="none"))


@pytest.mark.parametrize("kind", ["tensors", "loader"])
def test_custom_with_both_losses_uses_them(kind: str) -> None:
    workload = make(kind, loss=smoothed, per_sample_loss=smoothed_each)
    assert workload.provides_per_sample_loss
    assert type(workload).info().provides_per_sample_loss
    logits, y = batch(workload)
    torch.testing.assert_close(check_mean(workload, logits, y), smoothed_each(logits, y))
    torch.testing.assert_close(workload.loss(logits, y), smoothed(logits, y))


@pytest.mark.parametrize("kind", ["tensors", "loader"])
def test_custom_with_a_loss_alone_gives_no_per_sample_loss(kind: str) -> None:
    workload = make(kind, loss=smoothed)
    assert workload.provides_per_sample_loss is False
    assert type(workload).provides_per_sample_loss is False
    assert type(workload).info().provides_per_sample_loss is False
    logits, y = batch(workload)
    torch.testing.assert_close(workload.loss(logits, y), smoothed(logits, y))
    with pytest.raises(NotImplementedError, match="mine gives no per-sample loss") as raised:
        workload.per_sample_loss(logits, y)
    assert "\n" not in str(raised.value)


def test_custom_with_a_per_sample_loss_alone_means_it() -> None:
    workload = make("tensors", per_sample_loss=smoothed_each)
    assert workload.provides_per_sample_loss
    logits, y = batch(workload)
    torch.testing.assert_close(workload.loss(logits, y), smoothed(logits, y))
    check_mean(workload, logits, y)


def test_custom_per_sample_loss_of_the_wrong_shape_is_refused() -> None:
    workload = make("tensors", loss=smoothed, per_sample_loss=smoothed)  # reduced: a scalar
    logits, y = batch(workload)
    with pytest.raises(ValueError, match=r"shape \(\), not \(8,\)"):
        workload.per_sample_loss(logits, y)
    with pytest.raises(TypeError, match="per_sample_loss must be callable"):
        make("tensors", per_sample_loss=3)  # type: ignore[arg-type]


def test_a_custom_class_built_directly_answers_for_its_instance() -> None:
    (x_tr, y_tr), (x_te, y_te) = data(16).tensors, data(8, seed=1).tensors
    workload = CustomTensorWorkload(
        model=lambda: nn.Linear(6, 3).double(),
        loss=smoothed,
        train=(x_tr, y_tr),
        test=(x_te, y_te),
    )
    assert workload.provides_per_sample_loss is False


# --- subclasses ---------------------------------------------------------------------------------


class Smoothed(DigitsNoisy):
    """Overrides the loss alone: its per-sample losses would not average to it."""

    name = "smoothed"

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return smoothed(logits, targets)


class SmoothedBoth(Smoothed):
    name = "smoothed-both"

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return smoothed_each(logits, targets)


def test_a_subclass_overriding_the_loss_alone_gives_none() -> None:
    assert Smoothed.provides_per_sample_loss is False
    assert Smoothed.info().provides_per_sample_loss is False
    logits, y = torch.randn(4, 10, dtype=torch.float64), torch.arange(4)
    with pytest.raises(NotImplementedError, match="smoothed gives no per-sample loss"):
        Smoothed().per_sample_loss(logits, y)
    assert SmoothedBoth.provides_per_sample_loss is True
    check_mean(SmoothedBoth(), logits, y)
