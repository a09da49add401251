"""``timm:MODEL`` workloads: names and their parameters, random data, and data detected in a
folder (a tiny ImageFolder tree and fake CIFAR-10 batches written here; nothing is downloaded).

The model is timm's ``resnet10t`` at 16-32 px so that every step takes milliseconds on a CPU.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from looksam.sweeps.spec import SpecError, parse_spec
from looksam.sweeps.study import validate_for_workload
from looksam.train.runner import RunConfig, run_training, validate_config
from looksam.train.workloads import WorkloadDataError, create_workload, get_workload_info
from looksam.train.workloads.cifar import TEST_FILE, TRAIN_FILES, Cifar10Workload
from looksam.train.workloads.imagenet import ImageFolderWorkload
from looksam.train.workloads.synthetic import SyntheticWorkload
from looksam.train.workloads.timm_models import parse_timm_name, with_timm_options

CPU = torch.device("cpu")
SMALL = "timm:resnet10t,data=synthetic,num_classes=5,img_size=16"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared two-core machine more threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_fake_cifar(root: Path, per_file: int = 8) -> Path:
    """The six pickled batches of the 'CIFAR-10 python version', ``per_file`` images each."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*TRAIN_FILES, TEST_FILE):
        batch = {
            b"data": rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=per_file)],
        }
        with (root / name).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "eel")) -> Path:
    """``root/{train,val}/<class>/<i>.png``: three 12x12 RGB images per class and split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


# --- names -------------------------------------------------------------------------------------


def test_options_are_written_into_the_name_in_a_fixed_order() -> None:
    name = with_timm_options("timm:resnet10t", img_size=64, data="synthetic", num_classes=10)
    assert name == "timm:resnet10t,data=synthetic,num_classes=10,img_size=64"
    assert parse_timm_name(name).img_size == 64
    assert with_timm_options("digits-noisy") == "digits-noisy"  # nothing given: unchanged
    assert with_timm_options(name, img_size=64) == name  # the same value twice is fine


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("digits-noisy", {"img_size": 32}, "--img-size only applies to timm:MODEL"),
        ("timm:resnet10t,img_size=64", {"img_size": 32}, "--img-size 32 contradicts img_size=64"),
        ("timm:resnet10t", {"data": "real"}, "--data must be synthetic"),
        ("timm:resnet10t", {"num_classes": 1}, "--num-classes must be an integer >= 2"),
        ("timm:resnet10t,depth=3", {"img_size": 8}, "'depth=3' is not a parameter"),
    ],
)
def test_options_that_do_not_apply_are_refused(
    name: str, options: dict[str, object], needle: str
) -> None:
    spell = lambda key: "--" + key.replace("_", "-")  # noqa: E731
    with pytest.raises(ValueError, match=re.escape(needle)) as error:
        with_timm_options(name, spell=spell, **options)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)


def test_an_unknown_model_is_refused_with_close_matches() -> None:
    with pytest.raises(ValueError, match="unknown timm model 'resnt10t'") as error:
        get_workload_info("timm:resnt10t,data=synthetic")
    assert "resnet10t" in str(error.value)  # a close match
    with pytest.raises(ValueError, match="close matches: vit_tiny_patch16_224"):
        get_workload_info("timm:vit_tiny")


def test_entries_follow_the_data_source() -> None:
    synthetic = get_workload_info("timm:resnet10t,data=synthetic")
    assert (synthetic.measures_accuracy, synthetic.needs_data_dir) == (False, False)
    assert "3x176x176" in synthetic.summary  # resnet10t's own input size (pretrained config)
    real = get_workload_info("timm:resnet10t")
    assert (real.measures_accuracy, real.needs_data_dir) == (True, True)
    assert real.name == "timm:resnet10t"
    with pytest.raises(WorkloadDataError, match="pass --data-dir DIR") as error:
        validate_config(RunConfig("timm:resnet10t", "sgd", device="cpu"))
    assert "--data synthetic" in str(error.value)


# --- random data -------------------------------------------------------------------------------


def test_synthetic_batches_have_the_size_and_classes_asked_for() -> None:
    workload = create_workload(SMALL)
    assert isinstance(workload, SyntheticWorkload)
    workload.prepare(CPU)
    x, y = next(workload.train_batches(4, torch.Generator().manual_seed(0)))
    again, _ = next(workload.train_batches(4, torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 16, 16)
    assert torch.equal(x, again)
    assert set(y.tolist()) <= set(range(5))
    assert workload.build_model()(x).shape == (4, 5)
    with pytest.raises(ValueError, match="leave out --data-dir"):
        create_workload(SMALL, data_dir=Path("."))


def test_a_vit_is_built_at_the_size_asked_for() -> None:
    workload = create_workload("timm:vit_tiny_patch16_224,data=synthetic,img_size=32")
    model = workload.build_model()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)  # the model's own classes


def test_accuracy_is_refused_on_random_data() -> None:
    result = run_training(
        RunConfig(SMALL, "looksam", batch_size=4, max_steps=3, device="cpu", timing_warmup_steps=1)
    )
    assert result.status == "ok", result.message
    assert result.config.workload == SMALL
    assert result.final_accuracy is None
    assert all(record.test_accuracy is None for record in result.history)
    spec = parse_spec({"workload": {"name": "timm:resnet10t", "data": "synthetic"}})
    assert spec.workload.name == "timm:resnet10t,data=synthetic"
    with pytest.raises(SpecError, match="measures no accuracy"):
        validate_for_workload(spec)


def test_spec_keys_reach_the_name_and_bad_ones_are_refused() -> None:
    spec = parse_spec({"workload": {"name": "timm:resnet10t", "img_size": 32, "num_classes": 10}})
    assert spec.workload.name == "timm:resnet10t,num_classes=10,img_size=32"
    with pytest.raises(SpecError, match=r"\[workload\].*img_size only applies to timm"):
        parse_spec({"workload": {"name": "digits-noisy", "img_size": 32}})
    with pytest.raises(SpecError, match="img_size must be an integer >= 1, got 'True'"):
        parse_spec({"workload": {"name": "timm:resnet10t", "img_size": True}})
    with pytest.raises(SpecError, match="unknown timm model"):
        parse_spec({"workload": {"name": "timm:not_a_model_at_all"}})


# --- data from a folder ------------------------------------------------------------------------


def test_an_image_folder_tree_is_detected(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    name = "timm:resnet10t,img_size=16"
    workload = create_workload(name, data_dir=root, num_workers=0)
    assert isinstance(workload, ImageFolderWorkload)
    assert workload.num_classes == 3  # the class folders under train/
    workload.prepare(CPU)
    first = [y for _, y in workload.train_batches(3, torch.Generator().manual_seed(1))]
    x, y = next(workload.train_batches(3, torch.Generator().manual_seed(1)))
    assert x.shape == (3, 3, 16, 16)
    assert torch.equal(y, first[0])  # the order follows the seed
    assert sum(len(y) for _, y in workload.eval_batches(4)) == 9
    assert workload.build_model()(x).shape == (3, 3)
    wider = create_workload("timm:resnet10t,num_classes=7", data_dir=root, num_workers=0)
    assert wider.num_classes == 7
    with pytest.raises(WorkloadDataError, match="num_classes 2 is below the 3 classes"):
        create_workload("timm:resnet10t,num_classes=2", data_dir=root)


def test_cifar_batches_are_detected_and_resized_on_the_device(tmp_path: Path) -> None:
    root = write_fake_cifar(tmp_path / "c" / "cifar-10-batches-py")
    workload = create_workload("timm:resnet10t,img_size=24", data_dir=tmp_path / "c")
    assert isinstance(workload, Cifar10Workload)
    assert workload.num_classes == 10
    workload.prepare(CPU)
    x, _ = next(workload.train_batches(4, torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 24, 24)
    test_x, _ = next(workload.eval_batches(4))
    assert test_x.shape == (4, 3, 24, 24)
    assert isinstance(create_workload("timm:resnet10t", data_dir=root), Cifar10Workload)


def test_a_run_on_cifar_batches_measures_accuracy(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "cifar")
    result = run_training(
        RunConfig(
            "timm:resnet10t,img_size=16",
            "looksam",
            data_dir=str(tmp_path / "cifar"),
            batch_size=8,
            epochs=1,
            device="cpu",
            timing_warmup_steps=1,
        )
    )
    assert result.status == "ok", result.message
    assert result.steps == 5  # 40 training images in batches of 8
    assert result.final_accuracy is not None


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        ("empty", "holds neither an ImageFolder tree nor CIFAR-10 batches"),
        ("missing", "does not exist"),
        ("only-val", "no train/ folder"),
    ],
)
def test_a_folder_with_neither_format_is_one_line(
    tmp_path: Path, layout: str, needle: str
) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
        (root / "notes.txt").write_text("not images")
    if layout == "only-val":
        (root / "val" / "cat").mkdir(parents=True)
    with pytest.raises(WorkloadDataError, match=re.escape(needle)) as error:
        create_workload("timm:resnet10t", data_dir=root)
    message = str(error.value)
    assert message.startswith("timm:resnet10t")
    assert "\n" not in message
