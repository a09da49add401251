"""The user's own model and data as a workload: :func:`custom_workload` and ``-w module:function``.

``-w my_workload:make`` imports ``my_workload`` (from PYTHONPATH or the current directory, as
``--plugin`` does) and calls ``make()`` with no arguments; it must return a :class:`Workload`,
which :func:`custom_workload` builds from a model factory and two ``Dataset``\\ s. Every command
takes such a name (``run``, ``bench``, sweep specs) and the results name the workload as written.
``make()`` runs once for the registry entry (defaults, whether accuracy is measured) and once for
every further workload a command creates; the first creation reuses the entry's instance.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from looksam._plugins import _cause, _with_current_directory
from looksam.train.workloads._base import (
    Batch,
    TensorWorkload,
    Workload,
    WorkloadInfo,
    register_workload_resolver,
)
from looksam.train.workloads._loader import LoaderWorkload

Loss = Callable[[Tensor, Tensor], Tensor]


class _Custom(Workload):
    """What both data paths share: the user's model factory and losses.

    Sample ids come from the data path (``TensorWorkload``/``LoaderWorkload``), unchanged.
    """

    summary: ClassVar[str] = "a user's model and data (custom_workload)"
    #: Which losses the user gave: set by custom_workload on the class it makes, so the
    #: registry entry (``provides_per_sample_loss``) is right before anything is built.
    user_loss: ClassVar[bool] = False
    user_per_sample_loss: ClassVar[bool] = False

    def __init__(
        self,
        *,
        model: Callable[[], nn.Module],
        loss: Loss | None,
        per_sample_loss: Loss | None = None,
    ) -> None:
        super().__init__(None)
        self._model_factory = model
        self._loss = loss
        self._per_sample_loss = per_sample_loss

    @classmethod
    def _provides_per_sample_loss(cls, instance: Workload | None) -> bool:
        # Given per-sample losses, or cross-entropy for both; not a user loss alone.
        if isinstance(instance, _Custom):
            return instance._per_sample_loss is not None or instance._loss is None
        return cls.user_per_sample_loss or not cls.user_loss

    def build_model(self) -> nn.Module:
        model = self._model_factory()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{self.name}: model() returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self._loss is not None:
            return self._loss(logits, targets)
        if self._per_sample_loss is not None:
            return self.per_sample_loss(logits, targets).mean()
        return super().loss(logits, targets)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self._per_sample_loss is None:
            if self._loss is not None:
                raise NotImplementedError(
                    f"workload {self.name} gives no per-sample loss: custom_workload got loss= "
                    "without per_sample_loss="
                )
            return super().per_sample_loss(logits, targets)
        losses = self._per_sample_loss(logits, targets)
        if losses.shape != (len(targets),):
            raise ValueError(
                f"workload {self.name}: per_sample_loss returned shape {tuple(losses.shape)}, "
                f"not ({len(targets)},): one unreduced loss per example"
            )
        return losses


class CustomTensorWorkload(_Custom, TensorWorkload):
    """Two ``TensorDataset``\\ s of (inputs, labels): the tensors go to the device whole and
    batches are drawn there in the order the run's generator gives (no loader)."""

    def __init__(
        self,
        *,
        model: Callable[[], nn.Module],
        loss: Loss | None,
        train: Batch,
        test: Batch,
        per_sample_loss: Loss | None = None,
    ) -> None:
        super().__init__(model=model, loss=loss, per_sample_loss=per_sample_loss)
        self._tensors = (train, test)

    def load_tensors(self) -> tuple[Batch, Batch]:
        def labels(y: Tensor) -> Tensor:  # int32/uint8 class labels: cross-entropy wants int64
            return y if y.is_floating_point() or y.is_complex() else y.long()

        (x_tr, y_tr), (x_te, y_te) = self._tensors
        return (x_tr, labels(y_tr)), (x_te, labels(y_te))


class CustomLoaderWorkload(_Custom, LoaderWorkload):
    """Any two map-style datasets, read through DataLoaders whose order, and each item's
    random draws, follow the run's generator (see :class:`LoaderWorkload`)."""

    def __init__(
        self,
        *,
        model: Callable[[], nn.Module],
        loss: Loss | None,
        train: Dataset[Any],
        test: Dataset[Any],
        num_workers: int,
        per_sample_loss: Loss | None = None,
    ) -> None:
        super().__init__(model=model, loss=loss, per_sample_loss=per_sample_loss)
        self._train_set = train
        self._test_set = test
        self.num_workers = num_workers  # checked by custom_workload

    def train_dataset(self) -> Dataset[Any]:
        return self._train_set

    def eval_dataset(self) -> Dataset[Any]:
        return self._test_set


def custom_workload(
    *,
    name: str,
    model: Callable[[], nn.Module],
    train: Dataset[Any],
    test: Dataset[Any],
    batch_size: int,
    epochs: int,
    loss: Loss | None = None,
    per_sample_loss: Loss | None = None,
    target_accuracy: float | None = None,
    num_classes: int | None = None,
    lr: float = Workload.default_lr,
    num_workers: int = 0,
) -> Workload:
    """A classification workload from a model factory and two datasets of (input, label) pairs.

    Args:
        name: what messages call it (results name the workload as the command line wrote it).
        model: a function returning a freshly initialised ``nn.Module`` (the runner seeds torch
            before calling it, so every optimizer starts from the same weights): ``MyNet`` or
            ``lambda: MyNet(width=64)``, not a model instance.
        train, test: map-style datasets. Two ``TensorDataset``\\ s of (inputs, integer labels)
            are moved to the device whole and batched there; any other dataset is read through
            a ``DataLoader``. Either way the training order comes from the run's seeded
            generator, the last partial batch is dropped, and each example's position in
            ``train`` is its sample id (``indexed_train_share``, which SAF's bank needs).
        batch_size, epochs: the defaults (``--batch-size``, ``--epochs`` override them).
        loss: ``loss(logits, labels)`` [default: mean cross-entropy, or the mean of
            ``per_sample_loss`` when only that is given]. Accuracy is the share of test
            examples whose arg-max logit is the label.
        per_sample_loss: ``per_sample_loss(logits, labels)``, one unreduced loss per example
            (shape [n]) whose mean is ``loss``; methods that weigh or select examples (ESAM,
            K-SAM) need it. [default: cross-entropy with ``reduction="none"`` when ``loss`` is
            not given either; with a ``loss`` alone the workload has none, and
            ``provides_per_sample_loss`` is False so such methods are refused up front].
        target_accuracy: test accuracy counted as reached for time-to-target (None: none).
        num_classes: outputs of the model [default: ``len(train.classes)``, or the largest
            label + 1 of ``train.targets`` or of the TensorDatasets' labels]; the divergence
            rules compare the loss with a uniform guess over them.
        lr: the default peak learning rate of the SGD base (``--lr`` overrides it).
        num_workers: DataLoader worker processes (not used for TensorDatasets).

    Raises:
        ValueError, TypeError: an argument out of range or of the wrong kind.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"custom_workload: name must be a non-empty string, got {name!r}")
    if isinstance(model, nn.Module) or not callable(model):
        raise TypeError(
            "custom_workload: model must be a function returning a fresh nn.Module "
            "(e.g. model=MyNet or model=lambda: MyNet()), not "
            f"{'a model instance' if isinstance(model, nn.Module) else type(model).__name__}: "
            "every optimizer starts from its own freshly seeded weights"
        )
    for split, data in (("train", train), ("test", test)):
        if not (hasattr(type(data), "__len__") and hasattr(type(data), "__getitem__")):
            raise TypeError(
                f"custom_workload: {split} must be a map-style torch Dataset (with __len__ and "
                f"__getitem__), got {type(data).__name__}"
            )
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError(f"custom_workload: the {split} dataset is empty")
    for what, value, lowest in (
        ("batch_size", batch_size, 1),
        ("epochs", epochs, 1),
        ("num_workers", num_workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(
                f"custom_workload: {what} must be an integer >= {lowest}, got {value!r}"
            )
    for what, function in (("loss", loss), ("per_sample_loss", per_sample_loss)):
        if function is not None and not callable(function):
            raise TypeError(
                f"custom_workload: {what} must be callable, got {type(function).__name__}"
            )
    if target_accuracy is not None and not 0.0 < target_accuracy <= 1.0:
        raise ValueError(
            f"custom_workload: target_accuracy must be in (0, 1], got {target_accuracy!r}"
        )
    if not lr > 0:
        raise ValueError(f"custom_workload: lr must be > 0, got {lr!r}")
    tensors = _tensor_pairs(train, test)
    if num_classes is None:
        num_classes = _infer_num_classes(train, tensors)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"custom_workload: num_classes must be an integer >= 2, got {num_classes!r}"
        )

    attrs: dict[str, Any] = {
        "name": name,
        "summary": f"{name}: a user's model and data (custom_workload)",
        "target_accuracy": target_accuracy,
        "default_epochs": epochs,
        "default_batch_size": batch_size,
        "default_lr": float(lr),
        "num_classes": num_classes,
        "user_loss": loss is not None,
        "user_per_sample_loss": per_sample_loss is not None,
        "__module__": __name__,
    }
    if tensors is not None:
        cls = type("CustomTensorWorkload", (CustomTensorWorkload,), attrs)
        return cls(
            model=model,
            loss=loss,
            per_sample_loss=per_sample_loss,
            train=tensors[0],
            test=tensors[1],
        )
    loader_cls = type("CustomLoaderWorkload", (CustomLoaderWorkload,), attrs)
    return loader_cls(
        model=model,
        loss=loss,
        per_sample_loss=per_sample_loss,
        train=train,
        test=test,
        num_workers=num_workers,
    )


def _tensor_pairs(train: Dataset[Any], test: Dataset[Any]) -> tuple[Batch, Batch] | None:
    """The (inputs, labels) tensors of two TensorDatasets of two tensors each; None otherwise."""
    if not (
        isinstance(train, TensorDataset)
        and isinstance(test, TensorDataset)
        and len(train.tensors) == len(test.tensors) == 2
    ):
        return None
    (x_tr, y_tr), (x_te, y_te) = train.tensors, test.tensors
    return (x_tr, y_tr), (x_te, y_te)


def _infer_num_classes(train: Dataset[Any], tensors: tuple[Batch, Batch] | None) -> int:
    classes = getattr(train, "classes", None)
    if isinstance(classes, list | tuple) and classes:
        return len(classes)
    labels: Any = getattr(train, "targets", None)
    if labels is None and tensors is not None:
        labels = torch.cat([tensors[0][1].flatten(), tensors[1][1].flatten()])
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.numel() and not labels.is_floating_point() and not labels.is_complex():
            return int(labels.max().item()) + 1
    raise ValueError(
        "custom_workload: cannot tell the number of classes from the datasets (no integer "
        "labels, .classes or .targets): pass num_classes="
    )


# ---------------------------------------------------------------------- module:function


def _is_function_name(name: str) -> bool:
    module, sep, function = name.partition(":")
    return (
        bool(sep) and all(p.isidentifier() for p in module.split(".")) and function.isidentifier()
    )


_resolved: dict[str, tuple[WorkloadInfo, Callable[..., Workload]]] = {}


def resolve_function(name: str) -> tuple[WorkloadInfo, Callable[..., Workload]]:
    """The entry and factory of ``module:function`` (the resolver of every other ``a:b``)."""
    if name in _resolved:
        return _resolved[name]
    if not _is_function_name(name):
        raise ValueError(
            f"unknown workload {name!r}: not a registered name, timm:MODEL or MODULE:FUNCTION "
            "(e.g. my_workload:make, a function returning a Workload)"
        )
    module_name, _, function_name = name.partition(":")
    _with_current_directory()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name
        if missing is not None and (
            missing == module_name or module_name.startswith(f"{missing}.")
        ):
            raise ValueError(
                f"workload {name!r}: no module named {missing!r} (put its folder on PYTHONPATH "
                "or run from it)"
            ) from None
        raise ValueError(
            f"workload {name!r}: {module_name} failed to import: {_cause(error)}"
        ) from None
    except Exception as error:  # the user's module raised: one line naming its own line
        raise ValueError(
            f"workload {name!r}: {module_name} failed to import: {_cause(error)}"
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        where = getattr(module, "__file__", None) or module_name
        raise ValueError(f"workload {name!r}: {where} has no {function_name!r}")
    if not callable(function):
        raise ValueError(
            f"workload {name!r}: {module_name}.{function_name} is a "
            f"{type(function).__name__}, not a function returning a Workload"
        )

    def make() -> Workload:
        try:
            workload = function()
        except Exception as error:  # the user's function raised: one line
            raise ValueError(
                f"workload {name!r}: {function_name}() raised {_cause(error)}"
            ) from None
        if not isinstance(workload, Workload):
            raise ValueError(
                f"workload {name!r}: {function_name}() returned {type(workload).__name__}, not "
                "a Workload (build one with looksam.train.workloads.custom_workload)"
            )
        return workload

    first = [make()]
    # The function brings its own data: the entry never asks for --data-dir.
    info = dataclasses.replace(type(first[0]).info(), name=name, needs_data_dir=False)

    def create(data_dir: Path | None = None, **options: Any) -> Workload:
        if data_dir is not None:
            raise ValueError(f"workload {name!r} brings its own data: leave out --data-dir")
        if options:
            raise ValueError(f"workload {name!r} takes no options ({', '.join(options)})")
        return first.pop() if first else make()

    _resolved[name] = (info, create)
    return info, create


register_workload_resolver("", resolve_function)

__all__ = [
    "CustomLoaderWorkload",
    "CustomTensorWorkload",
    "custom_workload",
    "resolve_function",
]
