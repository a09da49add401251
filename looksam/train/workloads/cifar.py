"""CIFAR-10 workloads: ResNet-18 and ViT-Ti/4, the two models the LookSAM paper reports on CIFAR.

The whole data set lives on the device as uint8 (50k x 3 x 32 x 32 = 150 MB) and the standard
augmentation (4-pixel zero-padded random crop, horizontal flip) runs on the device from the run's
``torch.Generator``, so data order *and* augmentation are seeded and no loader sits in the timed
loop.

Data: the "CIFAR-10 python version" archive (``cifar-10-python.tar.gz``), extracted; pass its
``cifar-10-batches-py`` folder, or the folder holding it, as ``--data-dir``. Nothing is downloaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from looksam.train.workloads._base import (
    Batch,
    IndexedBatch,
    TensorWorkload,
    WorkloadDataError,
    register_workload,
)

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
SUBDIR = "cifar-10-batches-py"
_EXPECTED = (
    "expected data_batch_1..5 and test_batch (the 'CIFAR-10 python version' archive, extracted)"
)

#: Per-channel statistics of the CIFAR-10 training set (the correct std, not the widely copied
#: 0.2023/0.1994/0.2010, which is the std of per-image means).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
#: Zero padding of the random crop, in pixels (as torchvision's ``RandomCrop(32, padding=4)``).
CROP_PADDING = 4
IMAGE_SIZE = 32


def find_cifar_dir(data_dir: Path) -> Path:
    """``data_dir`` itself if it holds the batches, else its ``cifar-10-batches-py`` folder."""
    names = (*TRAIN_FILES, TEST_FILE)
    nested = data_dir / SUBDIR
    if not any((data_dir / n).is_file() for n in names) and nested.is_dir():
        return nested
    return data_dir


def _read_batch(path: Path, workload: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as (N x 3072 uint8, N int64 labels); WorkloadDataError if malformed.

    The batches are pickles, as published; only point ``--data-dir`` at files you trust.
    """
    bad = f"{workload}: {path} is not a CIFAR-10 python batch"
    try:
        with path.open("rb") as f:
            raw: Any = pickle.load(f, encoding="bytes")
    except Exception as error:  # garbage can fail to unpickle in many ways
        raise WorkloadDataError(f"{bad} ({type(error).__name__}); {_EXPECTED}") from error
    if not isinstance(raw, dict) or b"data" not in raw or b"labels" not in raw:
        raise WorkloadDataError(f'{bad} (no b"data"/b"labels" entries); {_EXPECTED}')
    data = np.asarray(raw[b"data"])
    labels = np.asarray(raw[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE**2:
        raise WorkloadDataError(
            f"{bad} (data is {data.dtype} {data.shape}, want uint8 N x 3072); {_EXPECTED}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise WorkloadDataError(f"{bad} ({len(labels)} labels for {len(data)} images)")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise WorkloadDataError(f"{bad} (labels outside 0..9)")
    return data, labels.astype(np.int64)


def load_cifar10(data_dir: Path, workload: str) -> tuple[Batch, Batch]:
    """(x_train, y_train), (x_test, y_test): uint8 N x 3 x 32 x 32 images, int64 labels, CPU."""
    root = find_cifar_dir(data_dir)
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (root / n).is_file()]
    if len(missing) == len(TRAIN_FILES) + 1:
        where = str(root) if root != data_dir else f"{data_dir} (nor in {data_dir / SUBDIR})"
        raise WorkloadDataError(f"{workload}: no CIFAR-10 python batches in {where}: {_EXPECTED}")
    if missing:
        raise WorkloadDataError(
            f"{workload}: {', '.join(missing)} missing from {root}: {_EXPECTED}"
        )

    def to_tensors(parts: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(x), torch.from_numpy(y)

    train = to_tensors([_read_batch(root / n, workload) for n in TRAIN_FILES])
    test = to_tensors([_read_batch(root / TEST_FILE, workload)])
    return train, test


def random_crop_flip(
    images: Tensor, shifts: Tensor, flips: Tensor, padding: int = CROP_PADDING
) -> Tensor:
    """Zero-pad by ``padding``, crop at per-image offsets ``shifts`` (N x 2: dy, dx), then flip.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` applied
    image by image, but one ``gather`` for the whole batch on the device.
    """
    n, c, h, w = images.shape
    # A zero canvas and a slice copy: F.pad is much slower on CPU for uint8 batches.
    padded = images.new_zeros(n, c, h + 2 * padding, w + 2 * padding)
    padded[:, :, padding : padding + h, padding : padding + w] = images
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = shifts[:, :1] + ar_h  # N x H
    cols = shifts[:, 1:] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # N x W, mirrored
    flat = rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]  # N x H x W into the canvas
    index = flat.view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, index).view(n, c, h, w)


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """timm's ResNet-18 with the usual CIFAR stem: 3x3 stride-1 conv, no max-pool.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink 32x32 inputs to 8x8 before the
    first block and cost several points of accuracy.
    """
    import timm  # lazily: timm is slow to import and only model-building needs it

    model: Any = timm.create_model("resnet18", num_classes=num_classes)
    stem = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")  # as timm's init
    model.conv1 = stem
    model.maxpool = nn.Identity()
    return model  # type: ignore[no-any-return]


def cifar_vit_tiny(num_classes: int = 10) -> nn.Module:
    """timm's ViT-Ti with 4x4 patches on 32x32 images (64 tokens + class token)."""
    import timm

    model: nn.Module = timm.create_model(
        "vit_tiny_patch16_224", img_size=IMAGE_SIZE, patch_size=4, num_classes=num_classes
    )
    return model


class Cifar10Workload(TensorWorkload):
    """CIFAR-10 held on the device as uint8; normalised and augmented per batch on the device."""

    name: ClassVar[str] = "cifar10"
    summary: ClassVar[str] = "CIFAR-10 base class (not registered)"
    needs_data_dir = True
    #: Random crop + flip on training batches (a variant without augmentation turns this off).
    augment: ClassVar[bool] = True

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__(data_dir)
        self._mean: Tensor | None = None
        self._std: Tensor | None = None

    def data_hint(self) -> str:
        return (
            f"a folder with the CIFAR-10 python batches, or the {SUBDIR} folder inside it: "
            f"{_EXPECTED}"
        )

    def load_tensors(self) -> tuple[Batch, Batch]:
        assert self.data_dir is not None  # __init__ refuses None (needs_data_dir)
        return load_cifar10(self.data_dir, self.name)

    def prepare(self, device: torch.device) -> None:
        super().prepare(device)
        self._mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images -> float32, standardised per channel."""
        if self._mean is None or self._std is None:
            raise RuntimeError(f"{self.name}: call prepare(device) before asking for batches")
        return (images.float().div_(255.0) - self._mean) / self._std

    def indexed_train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[IndexedBatch]:
        """Augmented, normalised batches with their ids (``train_batches`` drops the ids)."""
        x, y = self._require(self._train)
        n = len(x)
        # Everything random for the epoch is drawn up front, in a fixed order, from the
        # generator (on the CPU), then moved once: the epoch is a function of the seed.
        order = torch.randperm(n, generator=generator)
        shifts = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
        order, shifts, flips = (t.to(x.device) for t in (order, shifts, flips))
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            images = x[idx]
            if self.augment:
                images = random_crop_flip(
                    images, shifts[start : start + batch_size], flips[start : start + batch_size]
                )
            yield self.normalize(images), y[idx], idx

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        x, y = self._require(self._test)
        for start in range(0, len(x), batch_size):
            yield self.normalize(x[start : start + batch_size]), y[start : start + batch_size]


@register_workload
class Cifar10ResNet18(Cifar10Workload):
    """ResNet-18 (CIFAR stem) on CIFAR-10: the standard SAM benchmark.

    Defaults are the usual SGD recipe (200 epochs, batch 128, lr 0.1, cosine); 93 % is a
    conventional "trained" target that plain SGD passes (≈95 % fully trained), not a paper number.
    """

    name = "cifar10-resnet18"
    summary = "CIFAR-10, ResNet-18 with 3x3 stem, crop+flip on device (GPU)"
    target_accuracy: ClassVar[float | None] = 0.93
    default_epochs = 200
    default_batch_size = 128
    default_lr = 0.1

    def build_model(self) -> nn.Module:
        return cifar_resnet18(self.num_classes)


@register_workload
class Cifar10ViTTiny(Cifar10Workload):
    """ViT-Ti/4 on CIFAR-10: a transformer, where SAM's gain is largest.

    ViTs train poorly with plain SGD; use ``--base adamw`` (or lamb) for meaningful numbers. 80 %
    is a conventional target for a ViT-Ti trained from scratch with crop+flip only, not a paper
    number.
    """

    name = "cifar10-vit-ti"
    summary = "CIFAR-10, ViT-Ti with 4x4 patches, crop+flip on device (GPU; use --base adamw)"
    target_accuracy: ClassVar[float | None] = 0.80
    default_epochs = 200
    default_batch_size = 128
    default_lr = 0.05

    def build_model(self) -> nn.Module:
        return cifar_vit_tiny(self.num_classes)
