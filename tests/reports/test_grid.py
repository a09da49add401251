"""Grid studies as heat maps: which studies qualify, cell statistics, references, rendering."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from rich.console import Console

from looksam.reports.grid import grid_tables
from looksam.reports.html import render_html
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.svg import _mix
from looksam.reports.terminal import grid_table


def _trial(
    opt: str, n: int, seeds: tuple[float, ...], seconds: float, **params: object
) -> TrialPoint:
    return TrialPoint(
        optimizer=opt, number=n, state="COMPLETE", params={"lr": 0.05, **params},
        accuracy=sum(seeds) / len(seeds), seed_accuracies=seeds, train_seconds=seconds,
        samples_per_second=100.0, time_to_target_seconds=None, curve=(0.5,),
        # paired cost in base steps at batch 1, base at 1 s/sample: estimated s = seconds
        cost=seconds, reference_seconds_per_sample=1.0,
    )  # fmt: skip


def _study(opt: str, *trials: TrialPoint) -> StudyData:
    return StudyData(opt, f"g/digits-noisy/{opt}", 1.2, trials)


def _data(*studies: StudyData, sampler: str = "grid") -> SweepData:
    return SweepData(
        name="g", workload="digits-noisy", objective="accuracy", base="sgd", target_accuracy=None,
        studies=studies, spec={"sampler": sampler}, environment={}, generated_at="now",
        reference="sam", reference_batch_size=1,
    )  # fmt: skip


SAM = _study("sam", _trial("sam", 0, (0.96, 0.94), 10.0, rho=0.5))
SAMK = _study(
    "samk",
    _trial("samk", 0, (0.90, 0.92), 6.0, k=2, rho=0.5),
    _trial("samk", 1, (0.80, 0.84), 4.0, k=10, rho=0.5),
)
LOOKSAM = _study(
    "looksam",
    # k × alpha = {2, 10} × {0.0, 0.7}; trial 4 repeats (10, 0.7) and pools its seeds in
    _trial("looksam", 0, (0.90, 0.92), 6.0, k=2, alpha=0.0, rho=0.5),
    _trial("looksam", 1, (0.95, 0.95), 6.5, k=2, alpha=0.7, rho=0.5),
    _trial("looksam", 2, (0.81, 0.83), 4.0, k=10, alpha=0.0, rho=0.5),
    _trial("looksam", 3, (0.93, 0.95), 4.2, k=10, alpha=0.7, rho=0.5),
    _trial("looksam", 4, (0.94,), 4.4, k=10, alpha=0.7, rho=0.5),
)


def test_a_two_parameter_grid_with_pooled_seeds_and_references() -> None:
    tables = grid_tables(_data(SAM, SAMK, LOOKSAM))
    assert [(t.title, t.row_param, t.col_param) for t in tables] == [
        ("looksam over k × alpha", "k", "alpha"),  # two-parameter grids first
        ("samk over k", "k", "optimizer"),
    ]
    grid = tables[0]
    assert grid.rows == (2, 10)
    assert grid.cols == (0.0, 0.7)
    pooled = grid.cells[(10, 0.7)]
    assert pooled.trials == (3, 4)
    assert pooled.accuracy is not None
    assert pooled.accuracy.mean == pytest.approx(0.94)  # (0.93 + 0.95 + 0.94) / 3
    assert pooled.accuracy.n == 3
    # sd 0.01, t(0.975, 2) = 4.3027 → half-width 4.3027 × 0.01 / √3 = 0.024841
    assert pooled.accuracy.half_width == pytest.approx(0.024841, abs=1e-6)
    assert pooled.train_seconds == pytest.approx(4.3)
    ref = grid.references["SAM-k"]
    assert ref[10].accuracy is not None
    assert ref[10].accuracy.mean == pytest.approx(0.82)
    assert set(grid.constants) == {"SAM"}


def test_a_value_derived_from_a_grid_axis_is_not_an_axis() -> None:
    # lr scaled with the batch size varies with it, but only batch_size is on the grid
    trials = [_trial("sgd", i, (0.9,), 1.0, batch_size=b, lr=0.1 * b / 256)
              for i, b in enumerate((256, 1024))]  # fmt: skip
    data = dataclasses.replace(
        _data(_study("sgd", *trials)),
        spec={
            "sampler": "grid",
            "spaces": {"sgd": [{"name": "batch_size", "choices": [256, 1024]}]},
        },
    )
    (table,) = grid_tables(data)
    assert (table.row_param, table.col_param) == ("batch_size", "optimizer")


def test_one_parameter_grids_share_a_table_by_optimizer() -> None:
    by_batch = [
        _study(opt, *(_trial(opt, i, (acc - 0.01 * i,), 1.0 + i, batch_size=b)
                      for i, b in enumerate((256, 1024))))
        for opt, acc in (("sgd", 0.9), ("looksam", 0.95))
    ]  # fmt: skip
    (table,) = grid_tables(_data(*by_batch))
    assert table.by_optimizer
    assert table.title == "sgd, looksam over batch_size"
    assert table.rows == (256, 1024)
    assert table.cols == ("sgd", "looksam")
    cell = table.cells[(1024, "looksam")]
    assert cell.accuracy is not None
    assert cell.accuracy.mean == pytest.approx(0.94)
    assert cell.train_seconds == pytest.approx(2.0)


def test_a_search_is_never_drawn_as_a_grid() -> None:
    # Three TPE trials over two knobs look like a 2 × 2 grid with a hole: not a result to draw.
    assert grid_tables(_data(SAM, SAMK, LOOKSAM, sampler="tpe")) == []


def test_a_continuous_search_is_not_a_grid() -> None:
    searched = _study(
        "looksam",
        *(_trial("looksam", i, (0.9,), 1.0, rho=0.01 * (i + 1), k=2) for i in range(13)),
    )
    assert grid_tables(_data(searched)) == []  # 13 distinct rho values: a search
    three = _study(
        "looksam",
        *(_trial("looksam", i, (0.9,), 1.0, rho=0.1 * i, k=i, alpha=0.1 * i) for i in range(1, 4)),
    )
    assert grid_tables(_data(three)) == []  # three varied parameters: no 2-D picture


def test_heat_maps_in_the_html_page_carry_their_numbers() -> None:
    page = render_html(_data(SAM, SAMK, LOOKSAM))
    assert 'href="#grids"' in page
    payload = json.loads(
        re.search(r'<script type="application/json" id="data-grids">(.*?)</script>', page).group(1)
    )
    looksam = next(p for p in payload if p["title"] == "looksam over k × alpha")
    cell = next(c for c in looksam["cells"] if c["k"] == 10 and c["alpha"] == 0.7)
    assert cell["accuracy"] == pytest.approx(0.94)
    assert cell["seeds"] == 3
    # 2 rows × (2 grid columns + the SAM-k reference) cells, twice (accuracy and seconds)
    grid_figure = page.split('data-grid="looksam over k × alpha"')[1].split("</figure>")[0]
    assert grid_figure.count('<g class="cell"') == 2 * 2 * 3
    assert ">94.0<" in grid_figure
    assert "SAM: 95.00 ± " in grid_figure  # the fixed-point reference, with its interval


def test_no_heat_map_section_without_a_grid() -> None:
    page = render_html(_data(SAM))
    assert 'id="grids"' not in page


def test_terminal_grid_table() -> None:
    console = Console(width=100, record=True)
    console.print(grid_table(grid_tables(_data(SAM, SAMK, LOOKSAM))[0]))
    text = console.export_text()
    assert "k \\ alpha" in text
    row = next(line for line in text.splitlines() if line.strip("│ ").startswith("10 "))
    assert "94.0 ±2.5" in row  # pooled cell with its CI
    assert "82.0 ±25.4" in row  # SAM-k at k = 10: 2 seeds, t(0.975, 1) = 12.706


def test_colour_mix_by_hand() -> None:
    assert _mix("#000000", "#ffffff", 0.5) == "#808080"
    assert _mix("#f7fbff", "#08306b", 0.0) == "#f7fbff"
    assert _mix("#f7fbff", "#08306b", 1.0) == "#08306b"
