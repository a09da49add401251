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
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from looksam.train.workloads._base import WorkloadDataError, register_workload
from looksam.train.workloads._loader import LoaderWorkload

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYOUT = "expected DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (ImageFolder layout)"


def default_num_workers() -> int:
    """Up to 8 loader processes: enough to feed one GPU without oversubscribing small hosts."""
    return min(8, os.cpu_count() or 1)


class ImageFolderWorkload(LoaderWorkload):
    """An ImageFolder classification problem at 224x224 with the standard ImageNet transforms.

    Order and augmentation are fixed by the run's generator: each image's crop and flip are drawn
    with RNGs seeded from its epoch and index, so they do not depend on ``num_workers`` or on how
    many data-parallel ranks share the batch (each decodes only its own part).
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
        workers = default_num_workers() if num_workers is None else num_workers
        super().__init__(data_dir, num_workers=workers)
        self._train_set: Any = None  # torchvision ImageFolder, built on first use
        self._val_set: Any = None

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
        super().prepare(device)
        self._datasets()

    def train_dataset(self) -> Any:
        return self._datasets()[0]

    def eval_dataset(self) -> Any:
        return self._datasets()[1]

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
