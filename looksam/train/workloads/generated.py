"""`blobs-120k`: a generated classification problem big enough for batches in the thousands.

Large-batch studies need many samples per epoch: with digits' 1,257 training images a batch of
4,096 is not even one step. This set has 120,000 training samples (and 20,000 clean test ones)
drawn from scikit-learn's ``make_classification`` with fixed seeds, so it is the same problem on
every machine, built offline in about a second. A fifth of the training labels are flipped, as in
``digits-noisy``, so flat minima have something to buy.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from looksam.train.workloads._base import Batch, TensorWorkload, register_workload

_DATA_SEED = 0
_NOISE_SEED = 1


def generated_classification(
    n_train: int, n_test: int, features: int, classes: int, noise: float
) -> tuple[Batch, Batch]:
    """Gaussian clusters around hypercube vertices; ``noise`` of the training labels flipped."""
    from sklearn.datasets import make_classification  # imported lazily: sklearn is slow

    x, y = make_classification(
        n_samples=n_train + n_test,
        n_features=features,
        n_informative=features // 2,
        n_redundant=features // 4,
        n_classes=classes,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.0,
        random_state=_DATA_SEED,
    )
    x = (x - x[:n_train].mean(axis=0)) / x[:n_train].std(axis=0)  # standardised on train stats
    y_train = y[:n_train].copy()
    rng = np.random.default_rng(_NOISE_SEED)
    flip = rng.choice(n_train, size=round(noise * n_train), replace=False)
    y_train[flip] = (y_train[flip] + rng.integers(1, classes, size=len(flip))) % classes
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return (as_x(x[:n_train]), as_y(y_train)), (as_x(x[n_train:]), as_y(y[n_train:]))


@register_workload
class Blobs120k(TensorWorkload):
    """MLP 32-256-256-10 on 120k generated samples (the CPU large-batch workload)."""

    name = "blobs-120k"
    summary = "120k generated samples, 32 features, 10 classes, 20% train labels flipped, MLP"
    target_accuracy: ClassVar[float | None] = 0.85
    default_epochs = 10
    default_batch_size = 1024
    default_lr = 0.1
    features: ClassVar[int] = 32
    label_noise: ClassVar[float] = 0.2

    def load_tensors(self) -> tuple[Batch, Batch]:
        return generated_classification(120_000, 20_000, self.features, 10, self.label_noise)

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(self.features, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, self.num_classes),
        )
