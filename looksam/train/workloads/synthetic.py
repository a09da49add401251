"""Throughput-only workloads: the real models on random tensors made on the device.

They time the optimizer step alone, with no input pipeline and no data on disk, which is what
``bench`` compares across optimizers. Accuracy on random labels means nothing, so
``measures_accuracy`` is False and the runner never evaluates them.

The data set is a small pool (``pool_batches`` batches at the default batch size) generated once
with a fixed seed and reused every epoch, so memory stays bounded whatever the run length. An
example's position in the pool is its sample id (``indexed_train_share``); a batch larger than
the pool is drawn with replacement, so there an id may appear more than once in the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from looksam.train.workloads._base import Batch, IndexedBatch, Workload, register_workload
from looksam.train.workloads.cifar import cifar_resnet18, cifar_vit_tiny

#: Fixed: the data is part of the (throughput) problem, identical for every optimizer.
_DATA_SEED = 0


class SyntheticWorkload(Workload):
    """Random inputs of ``input_shape`` and random labels, generated on the device."""

    name: ClassVar[str] = "synthetic"
    summary: ClassVar[str] = "synthetic base class (not registered)"
    measures_accuracy = False
    target_accuracy: ClassVar[float | None] = None
    default_epochs = 10
    input_shape: ClassVar[tuple[int, ...]] = ()
    #: Batches (at the default batch size) in the pool reused every epoch.
    pool_batches: ClassVar[int] = 8

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__(data_dir)
        self._x: Tensor | None = None
        self._y: Tensor | None = None

    def data_hint(self) -> str:
        return "no data needed: random tensors generated on the device"

    @property
    def num_train_examples(self) -> int:
        return self.pool_batches * self.default_batch_size

    def prepare(self, device: torch.device) -> None:
        generator = torch.Generator(device=device).manual_seed(_DATA_SEED)
        n = self.num_train_examples
        self._x = torch.randn(n, *self.input_shape, generator=generator, device=device)
        self._y = torch.randint(0, self.num_classes, (n,), generator=generator, device=device)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for x, y, _ in self.indexed_train_batches(batch_size, generator):
            yield x, y

    def indexed_train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[IndexedBatch]:
        """Batches of the pool with their positions in it (the one definition of the order)."""
        if self._x is None or self._y is None:
            raise RuntimeError(f"{self.name}: call prepare(device) before asking for batches")
        x, y = self._x, self._y
        n = len(x)
        if batch_size > n:
            # Larger than the pool: one batch per epoch, drawn with replacement, so any batch
            # size can be timed (steps_per_epoch is 1 here too).
            order = torch.randint(0, n, (batch_size,), generator=generator).to(x.device)
        else:
            order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, max(n, batch_size) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx], idx

    def check_batch_size(self, batch_size: int) -> None:
        """Any batch size works: larger than the pool is drawn with replacement."""

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        raise RuntimeError("synthetic workloads have no meaningful accuracy")


@register_workload
class SyntheticResNet18Cifar(SyntheticWorkload):
    """The cifar10-resnet18 model and input size, without the data."""

    name = "synthetic-resnet18-cifar"
    summary = "random 3x32x32 inputs, ResNet-18 with CIFAR stem (throughput only, GPU)"
    input_shape = (3, 32, 32)
    default_lr = 0.1

    def build_model(self) -> nn.Module:
        return cifar_resnet18(self.num_classes)


@register_workload
class SyntheticViTTinyCifar(SyntheticWorkload):
    """The cifar10-vit-ti model and input size, without the data."""

    name = "synthetic-vit-ti-cifar"
    summary = "random 3x32x32 inputs, ViT-Ti with 4x4 patches (throughput only, GPU)"
    input_shape = (3, 32, 32)

    def build_model(self) -> nn.Module:
        return cifar_vit_tiny(self.num_classes)


class SyntheticImageNetSized(SyntheticWorkload):
    """224x224 inputs and 1000 classes, as ImageNet (not registered: the model is missing)."""

    input_shape = (3, 224, 224)
    num_classes = 1000
    default_batch_size = 128
    pool_batches = 4  # 512 images: 300 MB of float32 on the device is plenty for timing
    model_name: ClassVar[str]  # the timm model, as the ImageFolder workload of the same name

    def build_model(self) -> nn.Module:
        import timm

        model: nn.Module = timm.create_model(self.model_name, num_classes=self.num_classes)
        return model


@register_workload
class SyntheticResNet50ImageNet(SyntheticImageNetSized):
    """The imagenet-resnet50 model and input size, without the input pipeline."""

    name = "synthetic-resnet50-imagenet"
    summary = "random 3x224x224 inputs, ResNet-50, 1000 classes (throughput only, GPU)"
    model_name = "resnet50"
    default_lr = 0.1


@register_workload
class SyntheticViTS16ImageNet(SyntheticImageNetSized):
    """The imagenet-vit-s16 model and input size, without the input pipeline."""

    name = "synthetic-vit-s16-imagenet"
    summary = "random 3x224x224 inputs, ViT-S/16, 1000 classes (throughput only, GPU)"
    model_name = "vit_small_patch16_224"
    default_lr = 0.05


@register_workload
class SyntheticMLP(SyntheticWorkload):
    """An 85k-parameter MLP on 64-d inputs: optimizer overhead dominates, as on small models."""

    name = "synthetic-mlp"
    summary = "random 64-d inputs, MLP 64-256-256-10 (throughput only, CPU)"
    input_shape = (64,)
    default_batch_size = 128

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )


@register_workload
class SyntheticConvNet(SyntheticWorkload):
    """A small BatchNorm conv net on 3x16x16: conv and BN paths on a CPU in seconds."""

    name = "synthetic-convnet"
    summary = "random 3x16x16 inputs, small BatchNorm conv net (throughput only, CPU)"
    input_shape = (3, 16, 16)
    default_batch_size = 128

    def build_model(self) -> nn.Module:
        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]

        return nn.Sequential(
            *block(3, 32, 1),
            *block(32, 64, 2),  # 8x8
            *block(64, 64, 2),  # 4x4
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, self.num_classes),
        )
