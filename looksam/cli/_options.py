"""Option aliases shared by several commands, so a flag means the same thing everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from looksam.cli._console import fail
from looksam.optim import DEFAULT_BASE, base_optimizers, option_help, shared_hyperparameter
from looksam.train.workloads.timm_models import with_timm_options

Workload = Annotated[
    str,
    typer.Option("--workload", "-w", help="Workload name (see `looksam-bench workloads`)."),
]
Base = Annotated[
    str | None,
    typer.Option(
        help=f"Base optimizer of the SAM family: {', '.join(base_optimizers())} "
        f"\\[default: {DEFAULT_BASE}]."
    ),
]
Rho = Annotated[float | None, typer.Option(help=option_help("rho"))]
K = Annotated[int | None, typer.Option("--k", "-k", help=option_help("k"))]
#: The look interval a command uses when none is given: the registry's default k.
DEFAULT_K = int(shared_hyperparameter("k").default)
Alpha = Annotated[float | None, typer.Option(help=option_help("alpha"))]
Hp = Annotated[
    list[str] | None,
    typer.Option(
        "--hp",
        help="Any hyperparameter of the optimizer or its base as NAME=VALUE, repeatable "
        "(e.g. --hp start_fraction=0.8); `looksam-bench optimizers` lists them.",
    ),
]
Lr = Annotated[float | None, typer.Option(help="Peak learning rate \\[default: workload's].")]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", "-b", help="Batch size \\[default: workload's].")
]
Seed = Annotated[int, typer.Option(help="Seed for init, data order and augmentation.")]
Device = Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")]
Amp = Annotated[str, typer.Option(help="Mixed precision: off, bf16, or fp16 (GradScaler recipe).")]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where CIFAR-10 / ImageFolder data lives (no downloads)."),
]
Data = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="timm:MODEL workloads: 'synthetic' for random tensors at the model's input size "
        "(speed only) instead of --data-dir.",
    ),
]
NumClasses = Annotated[
    int | None,
    typer.Option(
        "--num-classes",
        min=2,
        help="timm:MODEL workloads: the model's outputs \\[default: the data's classes, or the "
        "model's own with --data synthetic].",
    ),
]
ImgSize = Annotated[
    int | None,
    typer.Option(
        "--img-size",
        min=1,
        help="timm:MODEL workloads: input side in pixels \\[default: the model's own].",
    ),
]


def cli_spelling(key: str) -> str:
    """A workload parameter as its option is spelled (``img_size`` -> ``--img-size``)."""
    return "--" + key.replace("_", "-")


def workload_name(
    workload: str, data: str | None, num_classes: int | None, img_size: int | None
) -> str:
    """``--workload`` with ``--data``, ``--num-classes`` and ``--img-size`` written into it
    (``timm:MODEL,data=synthetic,…``), the name every later step carries; exit 2 if they do
    not apply."""
    try:
        return with_timm_options(
            workload, data=data, num_classes=num_classes, img_size=img_size, spell=cli_spelling
        )
    except ValueError as error:
        fail(str(error))


JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")]
Perturbation = Annotated[
    str,
    typer.Option(
        help="Data-parallel look steps: global (all-reduced g, as one process) or per-rank "
        "(each rank perturbs with its own g: m-sharpness).",
    ),
]
Accumulate = Annotated[
    int,
    typer.Option(
        "--accumulate",
        "--micro-batches",
        min=1,
        help="Gradient accumulation: run each batch as N micro-batches inside every pass (a "
        "batch larger than memory); every optimizer still steps with the whole batch's gradient.",
    ),
]
NProc = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Train data-parallel in N local processes (re-launches itself under torchrun; the "
        "batch size is the global batch and must divide by N).",
    ),
]
