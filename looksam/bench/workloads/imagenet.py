"""ImageNet workloads: ResNet-50 and ViT-S/16 from an ImageFolder tree, through a DataLoader.

ImageNet does not fit on the device, so these read JPEGs with torchvision's ``ImageFolder`` and
the standard transforms in DataLoader workers. The runner's clock therefore includes the input
pipeline: with too few CPU workers the GPU waits on JPEG decoding. The ``synthetic-*-imagenet``
workloads time the same models without any input pipeline.

Data: ``DIR/train/<class>/*.JPEG`` and ``DIR/val/<class>/*.JPEG`` with the same class folders
(the usual layout after sorting the validation images into class folders). Nothing is
downloaded. The class count is the number of folders under ``train/``, so a subset such as
ImageNette or a 100-class sample works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from looksam.bench.workloads._base import Batch, Workload, WorkloadDataError, register_workload

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYOUT = "expected DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (ImageFolder layout)"


def default_num_workers() -> int:
    """Up to 8 loader processes: enough to feed one GPU without oversubscribing small hosts."""
    return min(8, os.cpu_count() or 1)


class ImageFolderWorkload(Workload):
    """An ImageFolder classification problem at 224x224 with the standard ImageNet transforms.

    Order is fixed by the run's generator (the sampler draws from it) and so is augmentation
    when ``num_workers > 0`` (each worker's seed derives from it); with ``num_workers=0`` the
    transforms draw from torch's global RNG, which the runner seeds.
    """

    name: ClassVar[str] = "imagefolder"
    summary: ClassVar[str] = "ImageFolder base class (not registered)"
    needs_data_dir = True
    #: Nominal (ImageNet-1k); the model gets one output per class folder under train/.
    num_classes: ClassVar[int] = 1000
    model_name: ClassVar[str] = ""
    image_size: ClassVar[int] = 224
    resize_size: ClassVar[int] = 256

    def __init__(self, data_dir: Path | None = None, *, num_workers: int | None = None) -> None:
        super().__init__(data_dir)
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self._train_set: Any = None  # torchvision ImageFolder, built on first use
        self._val_set: Any = None
        self._device = torch.device("cpu")

    def data_hint(self) -> str:
        return _LAYOUT

    def _split_dir(self, split: str) -> Path:
        assert self.data_dir is not None  # __init__ refuses None (needs_data_dir)
        path = self.data_dir / split
        if not path.is_dir():
            raise WorkloadDataError(
                f"{self.name}: no {split}/ folder in {self.data_dir}: {_LAYOUT}"
            )
        return path

    def classes(self) -> list[str]:
        """The class folder names under train/, sorted (ImageFolder's label order)."""
        train = self._split_dir("train")
        found = sorted(entry.name for entry in os.scandir(train) if entry.is_dir())
        if not found:
            raise WorkloadDataError(f"{self.name}: no class folders in {train}: {_LAYOUT}")
        return found

    def _image_folder(self, split: str, transform: Callable[[Any], Any]) -> Any:
        from torchvision.datasets import ImageFolder  # lazily: only these workloads need it

        root = self._split_dir(split)
        try:
            return ImageFolder(str(root), transform=transform)
        except FileNotFoundError as error:  # no class folders, or a folder without images
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise WorkloadDataError(f"{self.name}: {first_line}; {_LAYOUT}") from error

    def _datasets(self) -> tuple[Any, Any]:
        if self._train_set is None or self._val_set is None:
            from torchvision import transforms

            normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
            train_tf = transforms.Compose(
                [
                    transforms.RandomResizedCrop(self.image_size),
                    transforms.RandomHorizontalFlip(),
                    transforms.ToTensor(),
                    normalize,
                ]
            )
            val_tf = transforms.Compose(
                [
                    transforms.Resize(self.resize_size),
                    transforms.CenterCrop(self.image_size),
                    transforms.ToTensor(),
                    normalize,
                ]
            )
            train = self._image_folder("train", train_tf)
            val = self._image_folder("val", val_tf)
            if val.classes != train.classes:  # labels would silently mean different classes
                raise WorkloadDataError(
                    f"{self.name}: val/ has {len(val.classes)} class folders, train/ has "
                    f"{len(train.classes)}, and they differ: both need the same class folders"
                )
            self._train_set, self._val_set = train, val
        return self._train_set, self._val_set

    def prepare(self, device: torch.device) -> None:
        self._device = device
        self._datasets()

    @property
    def num_train_examples(self) -> int:
        return len(self._datasets()[0])

    def _to_device(self, loader: DataLoader[Any]) -> Iterator[Batch]:
        device = self._device
        non_blocking = device.type == "cuda"  # pinned host memory: asynchronous copies
        for x, y in loader:
            yield x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        train, _ = self._datasets()
        loader: DataLoader[Any] = DataLoader(
            train,
            batch_size=batch_size,
            sampler=RandomSampler(train, generator=generator),
            num_workers=self.num_workers,
            pin_memory=self._device.type == "cuda",
            drop_last=True,  # the runner's steps_per_epoch drops the partial batch too
            generator=generator,  # worker seeds, hence augmentation, follow the run's seed
        )
        return self._to_device(loader)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        _, val = self._datasets()
        loader: DataLoader[Any] = DataLoader(
            val,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self._device.type == "cuda",
        )
        return self._to_device(loader)

    def build_model(self) -> nn.Module:
        import timm

        model: nn.Module = timm.create_model(self.model_name, num_classes=len(self.classes()))
        return model


@register_workload
class ImageNetResNet50(ImageFolderWorkload):
    """ResNet-50 on ImageNet: the classic large-scale SGD benchmark.

    90 epochs, batch 256, lr 0.1 is Goyal et al.'s reference recipe; 75.9 % top-1 is MLPerf's
    ResNet-50 target, used here as the conventional "trained" bar.
    """

    name = "imagenet-resnet50"
    summary = "ImageNet (ImageFolder), ResNet-50, 224 px, DataLoader (GPU)"
    model_name = "resnet50"
    target_accuracy: ClassVar[float | None] = 0.759
    default_epochs = 90
    default_batch_size = 256
    default_lr = 0.1


@register_workload
class ImageNetViTS16(ImageFolderWorkload):
    """ViT-S/16 on ImageNet: the setting of the LookSAM paper's ViT results.

    ViTs need an adaptive base (``--base adamw`` or ``lamb``). 74 % top-1 is a conventional bar
    for ViT-S/16 trained 300 epochs with Inception crops only (no RandAugment/Mixup), not a
    paper number.
    """

    name = "imagenet-vit-s16"
    summary = "ImageNet (ImageFolder), ViT-S/16, 224 px, DataLoader (GPU; use --base adamw)"
    model_name = "vit_small_patch16_224"
    target_accuracy: ClassVar[float | None] = 0.74
    default_epochs = 300
    default_batch_size = 256
    default_lr = 0.05
