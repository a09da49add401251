"""``timm:MODEL``: any timm model as a workload, on random tensors or on the user's images.

The name is ``timm:MODEL`` followed by optional ``,KEY=VALUE`` parameters, which the CLI's
``--data``, ``--num-classes`` and ``--img-size`` (and a sweep spec's ``[workload]`` keys of the
same names) write for the user, e.g. ``timm:resnet10t,data=synthetic,img_size=64``:

* ``data=synthetic``: random inputs and labels generated on the device, as the ``synthetic-*``
  workloads do; speed only (no accuracy is measured, and a sweep refuses accuracy objectives).
* without it the data is read from ``--data-dir``, whose content decides the format: an
  ImageFolder tree (``train/<class>/…`` and ``val/<class>/…``, as ``imagenet-*``) or the CIFAR-10
  python batches (as ``cifar10-*``, resized on the device to the model's input size).
* ``img_size=N``: the input side in pixels [default: the model's own, from its pretrained
  config]; passed to the model when it takes one (ViTs), so any size works there too.
* ``num_classes=N``: the model's outputs [default: the model's own (1000 for ImageNet models) on
  random data, the class count of the data otherwise, which N must not be below].

The model is built by ``timm.create_model`` with random weights: nothing is downloaded. Unknown
model names are refused with close matches before anything is created.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from looksam.train.workloads._base import (
    Workload,
    WorkloadDataError,
    WorkloadInfo,
    register_workload_resolver,
)
from looksam.train.workloads.cifar import (
    IMAGE_SIZE as CIFAR_IMAGE_SIZE,
)
from looksam.train.workloads.cifar import (
    SUBDIR as CIFAR_SUBDIR,
)
from looksam.train.workloads.cifar import (
    TEST_FILE,
    TRAIN_FILES,
    Cifar10Workload,
    find_cifar_dir,
)
from looksam.train.workloads.imagenet import ImageFolderWorkload
from looksam.train.workloads.synthetic import SyntheticWorkload

PREFIX = "timm"
#: The parameters a ``timm:`` name may carry, in the order the canonical name writes them.
PARAMETERS = ("data", "num_classes", "img_size")
#: Values of ``data`` (without it, the data comes from --data-dir).
DATA_SOURCES = ("synthetic",)
#: CIFAR-10 has ten classes; ImageFolder trees count their class folders.
CIFAR_CLASSES = 10
_DATA_HINT = (
    "an ImageFolder tree (DIR/train/<class>/*, DIR/val/<class>/*) or the CIFAR-10 python "
    f"batches (data_batch_1..5 and test_batch, in DIR or DIR/{CIFAR_SUBDIR})"
)


@dataclasses.dataclass(frozen=True)
class TimmSpec:
    """A parsed ``timm:`` workload name."""

    model: str
    data: str | None = None
    num_classes: int | None = None
    img_size: int | None = None

    @property
    def name(self) -> str:
        """The canonical name: ``timm:MODEL`` and the parameters given, in a fixed order."""
        params = "".join(
            f",{key}={getattr(self, key)}" for key in PARAMETERS if getattr(self, key) is not None
        )
        return f"{PREFIX}:{self.model}{params}"


def parse_timm_name(name: str) -> TimmSpec:
    """``timm:MODEL[,KEY=VALUE…]`` as a :class:`TimmSpec`; ValueError (one line) if malformed.

    The model name itself is checked by the resolver, which imports timm.
    """
    prefix, _, rest = name.partition(":")
    model, *params = rest.split(",")
    if prefix != PREFIX or not model.strip():
        raise ValueError(
            f"workload {name!r}: give a timm model after 'timm:', e.g. timm:resnet18 "
            "(timm.list_models() lists them)"
        )
    values: dict[str, Any] = {}
    for param in params:
        key, eq, value = param.partition("=")
        if not eq or key not in PARAMETERS:
            raise ValueError(
                f"workload {name!r}: {param!r} is not a parameter; a timm workload takes "
                f"{', '.join(f'{k}=…' for k in PARAMETERS)} after the model, comma-separated"
            )
        if key in values:
            raise ValueError(f"workload {name!r}: {key} is given twice")
        values[key] = _parse_value(f"workload {name!r}: {key}", key, value)
    return TimmSpec(model=model.strip(), **values)


def _parse_value(what: str, key: str, value: str) -> str | int:
    """``value`` of parameter ``key`` (``what`` names it in messages), checked."""
    if key == "data":
        if value not in DATA_SOURCES:
            raise ValueError(
                f"{what} must be {' or '.join(DATA_SOURCES)} (random tensors), got {value!r}; "
                "for real data leave it out and pass --data-dir DIR"
            )
        return value
    lowest = 2 if key == "num_classes" else 1
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < lowest or str(number) != value.strip():
        raise ValueError(f"{what} must be an integer >= {lowest}, got {value!r}")
    return number


def with_timm_options(
    name: str,
    *,
    data: str | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    spell: Callable[[str], str] = str,
) -> str:
    """``name`` with the options given written into it (``name`` itself when none is given).

    This is how ``--data``, ``--num-classes``, ``--img-size`` and a spec's keys reach every
    command: through the workload name, which the runner, sweeps and results all carry. ``spell``
    names a parameter in messages (``--img-size`` on the command line, ``img_size`` in a spec).

    Raises:
        ValueError: options for a workload that is not ``timm:``, a value the name already
            gives differently, or a value out of range.
    """
    given: dict[str, Any] = {
        key: value
        for key, value in (("data", data), ("num_classes", num_classes), ("img_size", img_size))
        if value is not None
    }
    if not given:
        return name
    if not isinstance(name, str) or not name.startswith(f"{PREFIX}:"):
        options = ", ".join(spell(key) for key in given)
        raise ValueError(
            f"{options} only appl{'ies' if len(given) == 1 else 'y'} to timm:MODEL workloads, "
            f"not to {name!r}"
        )
    spec = parse_timm_name(name)
    for key, raw in given.items():
        value = _parse_value(spell(key), key, raw if isinstance(raw, str) else repr(raw))
        given[key] = value
        before = getattr(spec, key)
        if before is not None and before != value:
            raise ValueError(
                f"{spell(key)} {value} contradicts {key}={before} in the workload name {name!r}"
            )
    return dataclasses.replace(spec, **given).name


# ---------------------------------------------------------------------- the model


def check_model_name(model: str) -> None:
    """ValueError naming a few close matches if timm has no model ``model`` (imports timm)."""
    import timm  # lazily: a second or more to import, and only these workloads need it

    if timm.is_model(model):
        return
    base = model.split(".", 1)[0]  # a pretrained tag (resnet18.a1_in1k) is no part of a match
    pattern = f"*{base}*"
    matches = timm.list_models(pattern)
    if matches:
        similar = lambda m: difflib.SequenceMatcher(None, base, m).ratio()  # noqa: E731
        matches.sort(key=lambda m: (not m.startswith(base), -similar(m)))
        more = len(matches) - 5
        hint = f"; close matches: {', '.join(matches[:5])}"
        if more > 0:
            hint += f" (and {more} more: timm.list_models({pattern!r}))"
    else:
        matches = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(matches)}" if matches else ""
        hint = hint or "; timm.list_models() lists every model"
    raise ValueError(f"unknown timm model {model!r}{hint}")


@functools.cache
def model_defaults(model: str) -> tuple[tuple[int, int, int], int, float]:
    """(channels, height, width), class count and crop fraction of ``model``'s pretrained config.

    Models without one get timm's usual 3 x 224 x 224, 1000 classes and 0.875.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model)
    size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
    classes = cfg.num_classes if cfg is not None and cfg.num_classes else 1000
    crop = cfg.crop_pct if cfg is not None and cfg.crop_pct else 0.875
    channels, height, width = (int(v) for v in size)
    return (channels, height, width), int(classes), float(crop)


def create_timm_model(model: str, num_classes: int, img_size: int | None) -> nn.Module:
    """``timm.create_model`` with random weights, ``num_classes`` outputs and, for models that
    take one (ViTs), ``img_size`` when it is not the model's own."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    (_, height, width), _, _ = model_defaults(model)
    if img_size is not None and (img_size, img_size) != (height, width):
        try:
            built: nn.Module = timm.create_model(model, img_size=img_size, **kwargs)
            return built
        except TypeError as error:  # a model without img_size (CNNs) takes any input size
            if "img_size" not in str(error):
                raise
    built = timm.create_model(model, **kwargs)
    return built


class _TimmModel:
    """Mixin: the workload's model is the timm model its name gives."""

    timm_model: ClassVar[str] = ""
    #: Input side handed to the model (None: the model's own).
    timm_img_size: ClassVar[int | None] = None
    num_classes: ClassVar[int] = 1000

    def build_model(self) -> nn.Module:
        return create_timm_model(self.timm_model, self.num_classes, self.timm_img_size)


class TimmSynthetic(_TimmModel, SyntheticWorkload):
    """A timm model on random inputs of its input size (``data=synthetic``)."""

    summary: ClassVar[str] = "random inputs, a timm model (throughput only)"
    default_batch_size = 32
    pool_batches = 4


class TimmCifar10(_TimmModel, Cifar10Workload):
    """A timm model on CIFAR-10, the images resized on the device to ``image_size``."""

    summary: ClassVar[str] = "CIFAR-10 from --data-dir, a timm model"
    default_batch_size = 32
    image_size: ClassVar[int] = CIFAR_IMAGE_SIZE

    def __init__(self, data_dir: Path | None = None, *, num_workers: int | None = None) -> None:
        super().__init__(data_dir)  # no loader: num_workers has nothing to do here

    def normalize(self, images: Tensor) -> Tensor:
        x = super().normalize(images)
        if self.image_size != CIFAR_IMAGE_SIZE:
            x = nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x


class TimmImageFolder(_TimmModel, ImageFolderWorkload):
    """A timm model on an ImageFolder tree, at ``image_size``."""

    summary: ClassVar[str] = "ImageFolder tree from --data-dir, a timm model"
    default_batch_size = 32


W = TypeVar("W", bound=Workload)


def _subclass(base: type[W], name: str, **attrs: Any) -> type[W]:
    """``base`` specialised for the workload ``name`` (class attributes are its registry entry)."""
    return type(base.__name__, (base,), {"name": name, "__module__": __name__, **attrs})


# ---------------------------------------------------------------------- resolution


def detect_data(name: str, data_dir: Path) -> str:
    """``"imagefolder"`` or ``"cifar10"``, from what ``data_dir`` holds; WorkloadDataError else."""
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise WorkloadDataError(f"{name}: --data-dir {data_dir} {what} (expected {_DATA_HINT})")
    if (data_dir / "train").is_dir() or (data_dir / "val").is_dir():
        return "imagefolder"
    root = find_cifar_dir(data_dir)
    if any((root / n).is_file() for n in (*TRAIN_FILES, TEST_FILE)):
        return "cifar10"
    raise WorkloadDataError(
        f"{name}: {data_dir} holds neither an ImageFolder tree nor CIFAR-10 batches: "
        f"expected {_DATA_HINT}"
    )


def _check_classes(name: str, spec: TimmSpec, found: int, where: str) -> int:
    if spec.num_classes is None:
        return found
    if spec.num_classes < found:
        raise WorkloadDataError(
            f"{name}: num_classes {spec.num_classes} is below the {found} classes of {where}"
        )
    return spec.num_classes


@functools.cache
def resolve_timm(name: str) -> tuple[WorkloadInfo, Callable[..., Workload]]:
    """The entry and factory of ``timm:MODEL[,…]`` (the resolver of the ``timm`` prefix)."""
    spec = parse_timm_name(name)
    check_model_name(spec.model)
    (channels, height, width), model_classes, crop = model_defaults(spec.model)
    size = (spec.img_size, spec.img_size) if spec.img_size else (height, width)
    model_attrs: dict[str, Any] = {"timm_model": spec.model, "timm_img_size": spec.img_size}

    if spec.data == "synthetic":
        classes = spec.num_classes or model_classes
        synthetic = _subclass(
            TimmSynthetic,
            name,
            summary=f"random {channels}x{size[0]}x{size[1]} inputs, timm {spec.model}, "
            f"{classes} classes (throughput only)",
            input_shape=(channels, *size),
            num_classes=classes,
            **model_attrs,
        )

        def create_synthetic(data_dir: Path | None = None, **options: Any) -> Workload:
            if data_dir is not None:
                raise ValueError(
                    f"{name} generates random data (data=synthetic): leave out --data-dir"
                )
            return synthetic(**options)

        return synthetic.info(), create_synthetic

    side = size[0]  # square crops of the data (models with non-square inputs are rare)

    @functools.cache
    def cifar(classes: int) -> type[TimmCifar10]:
        return _subclass(TimmCifar10, name, num_classes=classes, image_size=side, **model_attrs)

    @functools.cache
    def folder(classes: int) -> type[TimmImageFolder]:
        return _subclass(
            TimmImageFolder,
            name,
            num_classes=classes,
            image_size=side,
            resize_size=int(side / crop),  # resize, then centre-crop, as timm evaluates
            **model_attrs,
        )

    def create(data_dir: Path | None = None, **options: Any) -> Workload:
        if data_dir is None:
            raise WorkloadDataError(
                f"{name} reads its data from disk: pass --data-dir DIR ({_DATA_HINT}), "
                "or --data synthetic for random tensors"
            )
        if detect_data(name, data_dir) == "cifar10":
            classes = _check_classes(name, spec, CIFAR_CLASSES, "CIFAR-10")
            return cifar(classes)(data_dir, **options)
        found = len(folder(1)(data_dir, num_workers=0).classes())  # refuses a tree without any
        classes = _check_classes(name, spec, found, f"{data_dir / 'train'}")
        return folder(classes)(data_dir, **options)

    entry = dataclasses.replace(
        folder(spec.num_classes or 1).info(),
        summary=f"timm {spec.model} at {side} px on --data-dir (ImageFolder tree or CIFAR-10)",
    )
    return entry, create


register_workload_resolver(PREFIX, resolve_timm)

__all__ = [
    "DATA_SOURCES",
    "PARAMETERS",
    "TimmSpec",
    "check_model_name",
    "create_timm_model",
    "detect_data",
    "parse_timm_name",
    "resolve_timm",
    "with_timm_options",
]
