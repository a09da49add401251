"""``custom_workload``: a model factory and two datasets as a workload the runner trains.

Both data paths (TensorDatasets held on the device, any other dataset through a DataLoader)
give batches fixed by the run's seed; bad arguments are one-line errors naming what to pass.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from looksam.train.runner import RunConfig, run_training
from looksam.train.workloads import Workload, custom_workload, get_workload_info
from looksam.train.workloads.custom import CustomLoaderWorkload, CustomTensorWorkload

CPU = torch.device("cpu")


def data(n: int, seed: int = 0, labels: torch.dtype = torch.int64) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, x[:, :3].argmax(dim=1).to(labels))


class Pairs(Dataset[tuple[Tensor, int]]):
    """A plain map-style dataset (python int labels), read through a DataLoader."""

    def __init__(self, n: int) -> None:
        self.x, self.y = data(n).tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], int(self.y[i])


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def make(**overrides: Any) -> Workload:
    kwargs: dict[str, Any] = {
        "name": "mine",
        "model": mlp,
        "train": data(40),
        "test": data(12, seed=1),
        "batch_size": 8,
        "epochs": 2,
    }
    return custom_workload(**{**kwargs, **overrides})


def labels_of(workload: Workload, seed: int) -> list[list[int]]:
    return [y.tolist() for _, y in workload.train_batches(8, torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("kind", ["tensors", "loader"])
def test_batches_follow_the_seed_on_both_paths(kind: str) -> None:
    loader = {"train": Pairs(40), "num_classes": 3}  # no labels to read the classes from
    build = (lambda: make()) if kind == "tensors" else (lambda: make(**loader))
    first, second = build(), build()
    expected = CustomTensorWorkload if kind == "tensors" else CustomLoaderWorkload
    assert isinstance(first, expected)
    first.prepare(CPU)
    second.prepare(CPU)
    assert labels_of(first, 3) == labels_of(second, 3)
    assert labels_of(first, 3) != labels_of(first, 4)
    assert len(labels_of(first, 3)) == first.steps_per_epoch(8) == 5
    assert sum(len(y) for _, y in first.eval_batches(5)) == 12


def test_defaults_and_inferred_classes_make_the_entry() -> None:
    workload = make(target_accuracy=0.8, lr=0.2, train=data(40, labels=torch.int32))
    info = workload.info()
    assert (info.default_batch_size, info.default_epochs, info.default_lr) == (8, 2, 0.2)
    assert info.target_accuracy == 0.8
    assert info.measures_accuracy
    assert workload.num_classes == 3  # the largest label + 1
    workload.prepare(CPU)
    _, y = next(workload.train_batches(8, torch.Generator().manual_seed(0)))
    assert y.dtype == torch.int64  # int32 labels are widened for cross-entropy


def test_the_runner_trains_it_with_the_users_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def loss(logits: Tensor, y: Tensor) -> Tensor:
        calls.append(len(y))
        return nn.functional.cross_entropy(logits, y, label_smoothing=0.1)

    module = types.ModuleType("cw_with_loss")
    module.make = lambda: make(loss=loss)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cw_with_loss", module)
    result = run_training(
        RunConfig("cw_with_loss:make", "looksam", device="cpu", timing_warmup_steps=1)
    )
    assert result.status == "ok", result.message
    assert result.config.workload == "cw_with_loss:make"
    assert result.steps == 10  # 40 examples in batches of 8, 2 epochs
    assert result.final_accuracy is not None
    assert set(calls) == {8}


@pytest.mark.parametrize(
    ("overrides", "error", "needle"),
    [
        ({"model": mlp()}, TypeError, "not a model instance"),
        ({"train": TensorDataset(torch.zeros(0, 6), torch.zeros(0))}, ValueError, "is empty"),
        ({"train": [1, 2]}, ValueError, "cannot tell the number of classes"),
        ({"test": 3}, TypeError, "test must be a map-style torch Dataset"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"target_accuracy": 80}, ValueError, "target_accuracy must be in (0, 1]"),
        ({"num_classes": 1}, ValueError, "num_classes must be an integer >= 2"),
        ({"name": ""}, ValueError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments_are_refused(
    overrides: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as raised:
        make(**overrides)
    assert needle in str(raised.value)
    assert str(raised.value).startswith("custom_workload: ")


def test_a_function_name_resolves_once_and_creates_fresh_workloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cw_counted.py").write_text(
        "from torch import nn\n"
        "from torch.utils.data import TensorDataset\n"
        "import torch\n"
        "from looksam.train.workloads import custom_workload\n"
        "CALLS = []\n"
        "def make():\n"
        "    CALLS.append(1)\n"
        "    d = TensorDataset(torch.randn(20, 4), torch.arange(20) % 2)\n"
        "    return custom_workload(name='counted', model=lambda: nn.Linear(4, 2), train=d,\n"
        "                           test=d, batch_size=4, epochs=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from looksam.train.workloads import create_workload

    info = get_workload_info("cw_counted:make")
    assert info.name == "cw_counted:make"  # as written, not the workload's own name
    assert get_workload_info("cw_counted:make") is info  # cached: make() ran once
    first, second = create_workload("cw_counted:make"), create_workload("cw_counted:make")
    assert first is not second

    import cw_counted  # type: ignore[import-not-found]

    assert len(cw_counted.CALLS) == 2  # the entry's instance is the first workload created
