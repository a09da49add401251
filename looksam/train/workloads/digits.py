"""`digits-noisy`: scikit-learn's bundled 8x8 digits with 30 % of training labels flipped.

Offline (the data ships inside scikit-learn), seconds per run on a laptop CPU, and hard enough to
separate the optimizers: label noise is where SAM's flat minima pay off (SGD ≈ 79 %, SAM ≈ 96 %
clean test accuracy in the prototype), which makes it the CPU default for every comparison.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from looksam.train.workloads._base import Batch, TensorWorkload, register_workload

#: The split and the flipped labels are part of the problem, not of a run: fixed seeds.
_SPLIT_SEED = 0
_NOISE_SEED = 1


def noisy_digits(noise: float, test_fraction: float = 0.3) -> tuple[Batch, Batch]:
    """Stratified split of the digits; flip ``noise`` of the *training* labels to another class.

    Test labels stay clean, so test accuracy measures how well a model ignored the noise.
    """
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=_SPLIT_SEED
    )
    rng = np.random.default_rng(_NOISE_SEED)
    flip = rng.choice(len(y_tr), size=round(noise * len(y_tr)), replace=False)
    y_noisy = y_tr.copy()
    y_noisy[flip] = (y_tr[flip] + rng.integers(1, 10, size=len(flip))) % 10  # never the same
    as_x = lambda a: torch.as_tensor(a / 16.0, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return (as_x(x_tr), as_y(y_noisy)), (as_x(x_te), as_y(y_te))


@register_workload
class DigitsNoisy(TensorWorkload):
    """MLP 64-256-10 on the noisy digits (the CPU default)."""

    name = "digits-noisy"
    summary = "8x8 digits, 30% train labels flipped, MLP 64-256-10 (CPU, seconds)"
    target_accuracy: ClassVar[float | None] = 0.90
    default_epochs = 200
    default_batch_size = 64
    default_lr = 0.05
    label_noise: ClassVar[float] = 0.3

    def load_tensors(self) -> tuple[Batch, Batch]:
        return noisy_digits(self.label_noise)

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


@register_workload
class DigitsNoisyCNN(DigitsNoisy):
    """The same problem with a small BatchNorm CNN (exercises the frozen-BN perturbed pass)."""

    name = "digits-noisy-cnn"
    summary = "8x8 digits, 30% train labels flipped, small BatchNorm CNN (CPU)"
    default_epochs = 60

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
