"""Check every value a sweep's trials could draw before anything is created.

A value the runner refuses (``lr = 0`` at the low end of a range, an unknown device, a data
directory that is not there) would otherwise surface when the first trial to draw it starts:
after the studies, the MLflow runs and maybe hours of other trials exist, and as a failed trial
rather than as the user's mistake. :func:`validate_trial_space` builds the runs a trial could
produce at the extremes of every searched dimension (both ends of each range, every choice), with
the fixed values, the base optimizer and learning-rate scaling applied exactly as trials apply
them, and passes each to the runner's own :func:`~looksam.train.runner.validate_config` — the
check ``looksam-bench run`` makes.

It stays cheap: no model is built and no data is read. Data directories are checked by their
layout (folder and file names); ``validate_config`` builds one throwaway optimizer on one tensor.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from looksam.sweeps._trial import reference_batch_size, trial_configs
from looksam.sweeps.plan import train_examples
from looksam.sweeps.spec import Dimension, SpecError, SweepSpec
from looksam.train.runner import resolve_device, validate_config
from looksam.train.workloads import Workload, WorkloadDataError, create_workload, get_workload_info

#: Beyond this many corner points in one study, dimensions are varied one at a time instead
#: (still every extreme of every dimension, but not every combination of them).
MAX_POINTS = 4096
#: Dimensions that combine into one value the runner checks: the learning rate is scaled with
#: the batch size, so their extremes are always combined, whatever the size of the space.
_COUPLED = ("lr", "batch_size")


def validate_trial_space(spec: SweepSpec) -> None:
    """Raise for any value a trial of ``spec`` could draw that a run would refuse.

    Call it after parsing and before any study, tracking run or file exists (``sweep`` and
    ``sweep --dry-run`` alike).

    Raises:
        WorkloadDataError: the workload's data directory is missing, is not a directory, or
            lacks the files the workload reads.
        SpecError: one line naming the study and the point (``looksam with lr=0, k=5``) and
            what is wrong with it (``lr must be > 0, got 0.0``); or an unusable device.
    """
    where = spec.source or spec.name
    check_workload_data(spec.workload.name, spec.workload.data_dir)
    try:
        resolve_device(spec.workload.device)
    except ValueError as error:
        raise SpecError(f"{where} [workload]: {error}") from None
    examples: int | None = None  # the workload's training set, counted once if needed
    reference = spec.workload.run_config(spec.base, batch_size=reference_batch_size(spec))
    try:  # every trial's speed is paired against the base at the reference batch, accumulated
        validate_config(reference)
    except ValueError as error:
        timed = f"the paired timing's {spec.base} at batch {reference.batch_size}"
        raise SpecError(f"{where}: {timed}: {str(error).splitlines()[0]}") from None
    for optimizer in spec.optimizers:
        for params in extreme_points(spec.space_for(optimizer)):
            configs = trial_configs(spec, optimizer, params)
            if not configs:  # no seeds: nothing would train
                continue
            try:
                validate_config(configs[0])  # seeds differ only in the seed
                batch = configs[0].batch_size
                if batch is not None:
                    examples = train_examples(spec) if examples is None else examples
                    if batch > examples:
                        raise ValueError(
                            f"batch size {batch} exceeds the {examples} training examples of "
                            f"{spec.workload.name}: no step would fit in an epoch"
                        )
            except (ValueError, TypeError) as error:
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise SpecError(
                    f"{where}: {_describe(optimizer, params)}: {message or type(error).__name__}"
                ) from None
        distinct = distinct_points(spec.space_for(optimizer))
        budget = spec.budget_for(optimizer)
        if spec.sampler != "grid" and distinct is not None and distinct < budget:
            raise SpecError(
                f"{where}: {optimizer}'s space has {distinct} distinct point(s), fewer than "
                f"n_trials = {budget}: every further trial would repeat one (use the grid "
                "sampler, widen the space or lower n_trials)"
            )


def check_outputs(spec: SweepSpec, *files: Path) -> None:
    """Raise SpecError (one line) unless every local file the sweep will write can be written.

    The Optuna and MLflow stores, MLflow's outbox and ``files`` (the report) are checked before
    anything is created: a folder that is a file, or one this user cannot write, would otherwise
    surface after training (the report) or as minutes of MLflow retries (the store).
    """
    from looksam.sweeps._storage import local_file
    from looksam.sweeps.tracking import outbox_path, sqlite_db_path

    targets = [local_file(spec.storage), *files]
    if spec.tracking_uri is not None:
        targets += [sqlite_db_path(spec.tracking_uri), outbox_path(spec.storage, spec.name)]
    for target in targets:
        if target is not None:
            problem = _unwritable(target)
            if problem:
                raise SpecError(f"cannot write {target}: {problem}")
    check_stores(spec)


def check_stores(spec: SweepSpec) -> None:
    """Raise SpecError (one line) for a store the sweep could not use, before any exists: a
    tracking URI MLflow cannot store runs at or whose server does not answer, and a SQLite store
    (Optuna's or MLflow's) damaged anywhere in the file. Nothing is created or written."""
    from looksam.sweeps._storage import check_sqlite_intact, local_file
    from looksam.sweeps.tracking import check_tracking_uri

    if spec.tracking_uri is not None:
        check_tracking_uri(spec.tracking_uri)
    local = local_file(spec.storage)
    if local is not None and spec.storage.startswith("sqlite:") and local.is_file():
        check_sqlite_intact(local, "Optuna storage")


def _unwritable(path: Path) -> str | None:
    """Why ``path`` could not be created or written, or None if it can."""
    if path.is_dir():
        return "it is a directory"
    folder = path.parent
    while not folder.exists():  # the nearest folder that exists must take the new ones
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def distinct_points(space: Sequence[Dimension]) -> int | None:
    """How many different points a sampler can draw from ``space``; None: unboundedly many.

    An empty space is one point; a real-valued range is unbounded; an integer range holds
    ``high - low + 1`` values and a list of choices its distinct choices.
    """
    count = 1
    for dim in space:
        if dim.choices is not None:
            count *= len(set(dim.choices))
        elif dim.integer and dim.low is not None and dim.high is not None:
            count *= int(dim.high) - int(dim.low) + 1
        else:
            return None
    return count


def extreme_points(space: Sequence[Dimension]) -> list[dict[str, Any]]:
    """The points whose runs :func:`validate_trial_space` checks, for one study's space.

    Every combination of each dimension's extremes (a range's two ends, every choice) while there
    are at most :data:`MAX_POINTS`; beyond that each dimension's extremes are taken one at a time
    with the other dimensions at their first extreme, and lr and batch size still together. An
    empty space is one point: the fixed values alone.
    """
    names = [d.name for d in space]
    values = [_extremes(d) for d in space]
    if math.prod(len(v) for v in values) <= MAX_POINTS:
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    base = {name: options[0] for name, options in zip(names, values, strict=True)}
    points = [base]
    for name, options in zip(names, values, strict=True):
        points.extend({**base, name: value} for value in options[1:])
    coupled = [(n, v) for n, v in zip(names, values, strict=True) if n in _COUPLED]
    if len(coupled) > 1:
        for combo in itertools.product(*(v for _, v in coupled)):
            points.append({**base, **dict(zip((n for n, _ in coupled), combo, strict=True))})
    return points


def _extremes(dim: Dimension) -> list[Any]:
    """Both ends of a range (as the integers a trial draws for an integer one), or every choice."""
    if dim.choices is not None:
        return list(dict.fromkeys(dim.choices))  # each distinct choice once, in order
    assert dim.low is not None
    assert dim.high is not None
    ends = [int(dim.low), int(dim.high)] if dim.integer else [dim.low, dim.high]
    return list(dict.fromkeys(ends))


def _describe(optimizer: str, params: Mapping[str, Any]) -> str:
    """'looksam with k=5, lr=0' — the point a failing run stands for."""
    if not params:
        return f"{optimizer} (fixed values)"
    shown = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )
    return f"{optimizer} with {shown}"


def check_workload_data(name: str, data_dir: str | Path | None) -> None:
    """Raise :class:`WorkloadDataError` now if ``name``'s data is not where its runs will look.

    ``create_workload`` refuses only a *missing* ``--data-dir``; a wrong one surfaces when the
    first trial loads its data. This checks that the directory exists and has the workload's
    layout, by names only (nothing is read). A workload class may define ``check_data()`` to
    check its own layout; the CIFAR-10 and ImageFolder families are checked here until they do.
    """
    info = get_workload_info(name)
    path = Path(data_dir) if data_dir is not None else None
    workload = create_workload(name, data_dir=path)  # refuses a missing --data-dir itself
    if not info.needs_data_dir or path is None:
        return
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise WorkloadDataError(f"{name}: --data-dir {path} {what} ({workload.data_hint()})")
    own_check = getattr(workload, "check_data", None)
    if callable(own_check):
        own_check()
        return
    _check_known_layout(workload, path)


def _check_known_layout(workload: Workload, path: Path) -> None:
    """The layouts of the built-in families that read from disk (:func:`check_workload_data`)."""
    from looksam.train.workloads.cifar import (
        TEST_FILE,
        TRAIN_FILES,
        Cifar10Workload,
        find_cifar_dir,
    )
    from looksam.train.workloads.imagenet import ImageFolderWorkload

    if isinstance(workload, Cifar10Workload):
        root = find_cifar_dir(path)
        missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (root / n).is_file()]
        if len(missing) == len(TRAIN_FILES) + 1:
            raise WorkloadDataError(
                f"{workload.name}: no CIFAR-10 batches in {root} ({workload.data_hint()})"
            )
        if missing:
            raise WorkloadDataError(
                f"{workload.name}: {', '.join(missing)} missing from {root} "
                f"({workload.data_hint()})"
            )
    elif isinstance(workload, ImageFolderWorkload):
        workload.classes()  # raises for a missing train/ or one without class folders
        if not (path / "val").is_dir():
            raise WorkloadDataError(
                f"{workload.name}: no val/ folder in {path} ({workload.data_hint()})"
            )
