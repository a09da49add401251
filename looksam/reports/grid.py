"""Studies whose trials lie on a small grid (e.g. LookSAM over k × α), as tables for heat maps.

Only grid sweeps (``sampler = "grid"``) qualify: a search's few trials can also vary one or two
knobs over a handful of values, but the empty cells of such a "grid" would be read as results.
A study is drawn when its finished trials vary one or two hyperparameters.
A grid over k also picks up references from the other studies at the same k (SAM-k next to
LookSAM), and fixed-point studies (SAM) as constants, so a reader compares like with like;
studies gridded over one knob (batch size) share one table, an optimizer per column.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from looksam.reports.leaderboard import Estimate, optimizer_label, seconds_estimator
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.stats import MeanCI, mean_ci

#: More distinct values than this on an axis is a search, not a grid.
MAX_GRID_VALUES = 12
#: Preferred row axes, in order: the interval k reads down, everything else across.
ROW_ORDER = ("k", "batch_size", "rho", "alpha", "lr")


@dataclass(frozen=True)
class GridCell:
    """One grid point: accuracy over every seed of its trials, mean training seconds (paired
    estimate, contended trials left out)."""

    accuracy: MeanCI | None
    train_seconds: float | None
    trials: tuple[int, ...]


@dataclass(frozen=True)
class GridTable:
    """Cells ``cells[(row_value, col_value)]``: a study's 2-D grid, or 1-D grids by optimizer.

    For the side-by-side table of one-parameter grids ``col_param`` is ``"optimizer"`` and the
    columns are optimizer names.
    """

    title: str
    row_param: str
    col_param: str
    rows: tuple[Any, ...]
    cols: tuple[Any, ...]
    cells: dict[tuple[Any, Any], GridCell]
    #: other studies gridded over the same row parameter: label → row value → cell
    references: dict[str, dict[Any, GridCell]] = field(default_factory=dict)
    #: fixed-point studies (nothing varied): label → cell
    constants: dict[str, GridCell] = field(default_factory=dict)

    @property
    def by_optimizer(self) -> bool:
        """Whether columns are optimizers (1-D grids side by side) rather than a parameter."""
        return self.col_param == "optimizer"


def _cell(trials: list[TrialPoint], estimate: Estimate) -> GridCell:
    seeds = [a for t in trials for a in t.seed_accuracies]
    seconds = [s for t in trials if not t.contended and (s := estimate(t)) is not None]
    return GridCell(
        accuracy=mean_ci(seeds) if seeds else None,
        train_seconds=statistics.fmean(seconds) if seconds else None,
        trials=tuple(t.number for t in trials),
    )


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _varied(trials: tuple[TrialPoint, ...]) -> dict[str, list[Any]]:
    """Each hyperparameter that takes more than one value, with its sorted distinct values."""
    names = dict.fromkeys(name for t in trials for name in t.params)
    varied: dict[str, list[Any]] = {}
    for name in names:
        values = [t.params.get(name) for t in trials]
        if not all(isinstance(v, Hashable) for v in values):
            continue
        distinct = sorted(set(values), key=_sort_key)
        if len(distinct) > 1:
            varied[name] = distinct
    return varied


def _grid_names(spec: dict[str, Any], optimizer: str) -> set[str] | None:
    """The dimensions the spec's grid lists for ``optimizer`` (None: the spec does not say).

    Values derived from them — a learning rate scaled with the batch size — vary too, but are
    not axes of the grid.
    """
    spaces = spec.get("spaces")
    dims = spaces.get(optimizer) if isinstance(spaces, dict) else None
    if not isinstance(dims, list | tuple):
        return None
    return {d["name"] for d in dims if isinstance(d, dict) and "name" in d}


def _axes(
    study: StudyData, names: set[str] | None = None
) -> tuple[str, str | None, dict[str, list[Any]]] | None:
    varied = _varied(study.complete)
    if names is not None:
        varied = {name: values for name, values in varied.items() if name in names}
    if not 1 <= len(varied) <= 2 or any(len(v) > MAX_GRID_VALUES for v in varied.values()):
        return None
    order = sorted(varied, key=lambda n: (ROW_ORDER.index(n) if n in ROW_ORDER else 99, n))
    return order[0], (order[1] if len(order) > 1 else None), varied


def grid_tables(data: SweepData) -> list[GridTable]:
    """Two-parameter grids one per study; one-parameter grids over the same knob side by side.

    A 2-D grid over k also shows the 1-D grids over k (SAM-k) as reference columns; studies
    gridded over one parameter (batch size, say) share one table with a column per optimizer.
    """
    if data.spec.get("sampler") != "grid":
        return []
    axes = {s.optimizer: _axes(s, _grid_names(data.spec, s.optimizer)) for s in data.studies}
    estimate = seconds_estimator(data)
    one_d: dict[str, list[StudyData]] = {}
    for study in data.studies:
        found = axes[study.optimizer]
        if found is not None and found[1] is None:
            one_d.setdefault(found[0], []).append(study)
    constants = {
        optimizer_label(s.optimizer): _cell(list(s.complete), estimate)
        for s in data.studies
        if s.complete and not _varied(s.complete)
    }
    tables: list[GridTable] = []
    for study in data.studies:
        found = axes[study.optimizer]
        if found is None:
            continue
        row, col, varied = found
        if col is None:
            continue
        groups: dict[tuple[Any, Any], list[TrialPoint]] = {}
        for t in study.complete:
            groups.setdefault((t.params.get(row), t.params.get(col)), []).append(t)
        tables.append(
            GridTable(
                title=f"{study.optimizer} over {row} × {col}",
                row_param=row,
                col_param=col,
                rows=tuple(varied[row]),
                cols=tuple(varied[col]),
                cells={key: _cell(trials, estimate) for key, trials in groups.items()},
                references={
                    optimizer_label(other.optimizer): _one_d_cells(other, row, estimate)
                    for other in one_d.get(row, [])
                },
                constants=constants,
            )
        )
    for row, studies in one_d.items():
        cells = {
            (value, study.optimizer): cell
            for study in studies
            for value, cell in _one_d_cells(study, row, estimate).items()
        }
        values = sorted({value for value, _ in cells}, key=_sort_key)
        names = ", ".join(s.optimizer for s in studies)
        tables.append(
            GridTable(
                title=f"{names} over {row}",
                row_param=row,
                col_param="optimizer",
                rows=tuple(values),
                cols=tuple(s.optimizer for s in studies),
                cells=cells,
                constants=constants,
            )
        )
    return tables


def _one_d_cells(study: StudyData, param: str, estimate: Estimate) -> dict[Any, GridCell]:
    groups: dict[Any, list[TrialPoint]] = {}
    for t in study.complete:
        groups.setdefault(t.params.get(param), []).append(t)
    return {value: _cell(trials, estimate) for value, trials in groups.items()}
