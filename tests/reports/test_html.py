"""The HTML report: Pareto fronts by hand, escaping, offline-only output, data matching plots."""

from __future__ import annotations

import html
import json
import math
import os
import pickle
import re
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from looksam.reports.findings import Finding
from looksam.reports.html import render_html
from looksam.reports.leaderboard import seconds_estimator
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.svg import Scale, colours_for, fmt, make_scale, pareto_front

# --------------------------------------------------------------------------- helpers


def trial(
    optimizer: str,
    number: int,
    accuracy: float | None,
    seconds: float | None,
    params: dict[str, Any] | None = None,
    *,
    state: str = "COMPLETE",
    curve: tuple[float, ...] = (),
    run: str | None = None,
) -> TrialPoint:
    return TrialPoint(
        optimizer=optimizer,
        number=number,
        state=state,
        params=params or {},
        accuracy=accuracy,
        seed_accuracies=() if accuracy is None else (accuracy,),
        train_seconds=seconds,
        samples_per_second=None if seconds is None else 1000.0 / seconds,
        time_to_target_seconds=None,
        curve=curve,
        mlflow_run_id=run,
        # paired cost in base steps at batch 1, base at 1 s/sample: estimated seconds = seconds
        cost=seconds,
        reference_seconds_per_sample=None if seconds is None else 1.0,
    )


def sweep(*studies: StudyData, spec: dict[str, Any] | None = None) -> SweepData:
    return SweepData(
        name="hand",
        workload="digits-noisy",
        objective="pareto",
        base="sgd",
        target_accuracy=0.9,
        studies=studies,
        spec=spec or {"name": "hand"},
        environment={"device": "cpu", "torch": "2.x", "git_commit": "abc123"},
        generated_at="2026-01-01 00:00 UTC",
        reference_batch_size=1,
    )


def study(optimizer: str, *trials: TrialPoint, importances: dict[str, float] | None = None):
    return StudyData(
        optimizer=optimizer,
        study_name=f"hand/{optimizer}",
        passes_per_step=1.0,
        trials=trials,
        importances=importances or {},
    )


class Elements(HTMLParser):
    """Every start tag with its attributes and the id of the <section> it sits in."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], str | None]] = []
        self._sections: list[str | None] = []
        self._stack: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self._sections.append(a.get("id"))
        self.found.append((tag, a, next((s for s in reversed(self._sections) if s), None)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._sections.pop()

    def select(self, tag: str | None = None, cls: str | None = None, section: str | None = None):
        return [
            a
            for t, a, s in self.found
            if (tag is None or t == tag)
            and (cls is None or cls in a.get("class", "").split())
            and (section is None or s == section)
        ]


def embedded(page: str, element_id: str) -> Any:
    match = re.search(
        rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S
    )
    assert match, element_id
    return json.loads(match.group(1))


def with_accuracy(data: SweepData) -> list[TrialPoint]:
    return [t for s in data.studies for t in s.trials if t.accuracy is not None]


# --------------------------------------------------------------------------- pure helpers


def test_pareto_front_drops_dominated_points_fastest_first() -> None:
    points = [(3.0, 0.6), (1.0, 0.5), (2.0, 0.7), (0.5, 0.4), (2.5, 0.65), (4.0, 0.7)]
    # (3, .6) and (2.5, .65) lose to (2, .7); (4, .7) ties on accuracy but is slower
    assert pareto_front(points) == [(0.5, 0.4), (1.0, 0.5), (2.0, 0.7)]


def test_pareto_front_ties() -> None:
    # same seconds: only the more accurate survives; same accuracy: only the faster
    assert pareto_front([(1.0, 0.5), (1.0, 0.8)]) == [(1.0, 0.8)]
    assert pareto_front([(2.0, 0.8), (1.0, 0.8)]) == [(1.0, 0.8)]
    # exact duplicates: neither dominates the other, both stay (input order)
    a, b = ("a", (1.0, 0.8)), ("b", (1.0, 0.8))
    assert pareto_front([b, a, ("c", (2.0, 0.7))], key=lambda p: p[1]) == [b, a]
    assert pareto_front([]) == []
    assert pareto_front([(5.0, 0.1)]) == [(5.0, 0.1)]


def test_pareto_front_of_trials_with_key() -> None:
    t = [trial("sam", i, a, s) for i, (s, a) in enumerate([(1, 0.7), (2, 0.9), (3, 0.8)])]
    front = pareto_front(t, key=lambda p: (p.train_seconds or 0, p.accuracy or 0))
    assert [p.number for p in front] == [0, 1]


@pytest.mark.parametrize(
    ("values", "log", "integer"),
    [([0.6, 0.95], False, False), ([0.08, 2.0], None, False), ([1, 3], False, True),
     ([32, 512], None, True), ([0.5, 0.5], False, False)],
)  # fmt: skip
def test_scale_ticks_lie_inside_and_map_monotonically(
    values: list[float], log: bool | None, integer: bool
) -> None:
    scale = make_scale(values, 0, 100, log=log, integer=integer)
    assert isinstance(scale, Scale)
    ticks = scale.ticks()
    assert ticks
    assert all(scale.lo <= t <= scale.hi for t in ticks)
    assert ticks == sorted(ticks)
    assert all(0 <= scale(v) <= 100 for v in values)
    if integer:
        assert all(float(t).is_integer() for t in ticks)


def test_fmt_and_colours() -> None:
    assert fmt(0.05) == "0.05"
    assert fmt(1234.5) == "1234"
    assert fmt(2.0) == "2"
    colours = colours_for(["looksam", "mine", "sam", "other"])
    assert colours["looksam"] != colours["sam"]
    assert len(set(colours.values())) == 4
    assert colours_for(["sam"])["sam"] == colours["sam"]  # fixed across reports


# --------------------------------------------------------------------------- hand-made data


def test_text_from_the_data_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    data = sweep(
        study(
            evil,
            trial(
                evil, 0, 0.8, 1.0, {"<img src=x>": "</script><b>", "rho": 0.1}, curve=(0.5, 0.8)
            ),
            importances={"<i>": 1.0},
        )
    )
    page = render_html(
        data,
        leaderboard_rows=[{"<th>col": "<td>cell"}],
        findings=[Finding("speed", "LookSAM <b>wins</b> & more")],
    )
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for raw in ("<img src=x>", "<b>wins", "<i>", "<td>cell", "<th>col"):
        assert raw not in page
    assert "&lt;td&gt;cell" in page
    assert "LookSAM &lt;b&gt;wins&lt;/b&gt; &amp; more" in page
    assert page.count("<script") == 4  # only the four JSON blocks
    scatter = embedded(page, "data-scatter")  # still parses, still holds the raw text
    assert scatter["points"][0]["optimizer"] == evil
    assert scatter["points"][0]["params"]["<img src=x>"] == "</script><b>"


def test_offline_only_references() -> None:
    data = sweep(study("sam", trial("sam", 0, 0.8, 1.0, {"rho": 0.1}, curve=(0.7, 0.8))))
    page = render_html(data)
    assert "http://" not in page  # inline SVG needs no xmlns
    assert "https://" not in page
    elements = Elements(page)
    for tag, attrs, _ in elements.found:
        for name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), (tag, name, value)
        if tag == "script":
            assert attrs.get("type") == "application/json", attrs
    assert "url(" not in page
    assert "@import" not in page
    assert "default-src 'none'" in page  # the browser refuses any fetch we might add later


def test_states_missing_values_and_nan() -> None:
    data = sweep(
        study(
            "sam",
            trial("sam", 0, 0.8, 1.0, {"rho": 0.1}, curve=(0.6, 0.8)),
            trial("sam", 1, 0.85, 0.5, {"rho": 0.2}, state="PRUNED"),  # faster, better, pruned
            trial("sam", 2, None, None, {"rho": 0.3}, state="FAIL"),
            trial("sam", 3, float("nan"), 2.0, {"rho": 0.4}, state="FAIL"),
        )
    )
    page = render_html(data)
    points = Elements(page).select(cls="point", section="scatter")
    assert [p["data-trial"] for p in points] == ["0", "1"]
    assert points[1]["data-state"] == "PRUNED"
    assert points[1]["fill"] == "#fff"  # hollow
    scatter = embedded(page, "data-scatter")
    assert scatter["fronts"] == {"sam": [0]}  # a pruned trial is not on the front
    assert scatter["not_shown"] == 2
    assert "NaN" not in page
    assert "Infinity" not in page


def test_sections_fallbacks_and_notes() -> None:
    data = sweep(
        study("sgd", trial("sgd", 0, 0.7, 1.0, {"lr": 0.1}, curve=(0.5, 0.7))),
        study(
            "looksam",
            trial("looksam", 0, 0.8, 1.2, {"lr": 0.1, "k": 5, "alpha": 0.7, "rho": 0.1}),
            trial("looksam", 1, 0.6, 1.0, {"lr": 0.1, "k": 10, "alpha": 0.7, "rho": 0.2}),
            importances={"rho": 0.7, "k": 0.3},
        ),
    )
    page = render_html(data)
    for sid in ("scatter", "sensitivity", "curves", "importances", "leaderboard", "environment"):
        assert f'<section id="{sid}">' in page
    assert 'id="findings"' not in page  # no findings given, no section
    assert "not enough completed trials with varied parameters" in page  # sgd's importances
    assert "batch_size was not searched" in page
    sens = embedded(page, "data-sensitivity")
    assert [(p["optimizer"], p["param"]) for p in sens["panels"]] == [
        ("looksam", "rho"),
        ("looksam", "k"),
    ]  # the registry's order; alpha was the same in every trial: nothing to be sensitive to
    assert sens["throughput"] is None
    curves = embedded(page, "data-curves")  # looksam's best trial has no curve: one line only
    assert [c["optimizer"] for c in curves["curves"]] == ["sgd"]
    fallback = page.split('<section id="leaderboard">')[1].split("</section>")[0]
    assert re.findall(r"<th>(.*?)</th>", fallback) == [
        "optimizer", "completed trials", "best accuracy", "raw seconds", "best params",
    ]  # fmt: skip
    assert re.findall(r"<td>(looksam|sgd)</td>", fallback) == ["sgd", "looksam"]
    given = render_html(data, leaderboard_rows=[{"b": "1", "a": "2"}, {"a": "3", "c": "4"}],
                        findings=[Finding("speed", "one"), Finding("speed", "two")])  # fmt: skip
    board = given.split('<section id="leaderboard">')[1].split("</section>")[0]
    assert re.findall(r"<th>(.*?)</th>", board) == ["b", "a", "c"]  # first-seen column order
    assert re.findall(r"<td[^>]*>(.*?)</td>", board) == ["1", "2", "", "", "3", "4"]
    found = given.split('<section id="findings">')[1].split("</section>")[0]
    assert re.findall(r"<li[^>]*>(.*?)</li>", found) == ["one", "two"]


def test_throughput_plot_when_batch_size_searched() -> None:
    data = sweep(
        study(
            "sgd",
            *(trial("sgd", i, 0.8, 1.0 + i, {"batch_size": bs}) for i, bs in enumerate((32, 128))),
        )
    )
    page = render_html(data)
    assert "batch_size was not searched" not in page
    tp = embedded(page, "data-sensitivity")["throughput"]
    assert [p["batch_size"] for p in tp["points"]] == [32, 128]
    assert len(Elements(page).select("circle", "dot", "sensitivity")) == 2


def test_hundred_trials_per_optimizer_stay_small() -> None:
    """400 trials with 200-epoch curves, every one on its front: still a few hundred KB."""
    spaces = {"sgd": 1, "sam": 2, "samk": 3, "looksam": 4}  # lr, rho, k, alpha: as searched
    studies = []
    for opt, n_params in spaces.items():
        trials = []
        for i in range(100):
            params = {
                "lr": 0.01 + i / 1000,
                "rho": 0.05 + i / 500,
                "k": 2 + i % 9,
                "alpha": i / 99,
            }
            trials.append(
                trial(
                    opt,
                    i,
                    0.5 + 0.004 * i + 0.001 * n_params,
                    1.0 + 0.37 * i * n_params,
                    dict(list(params.items())[:n_params]),
                    curve=tuple(0.5 + e / 1000 for e in range(200)),
                    run=f"{i:032x}",
                )
            )
        studies.append(study(opt, *trials, importances={"lr": 1.0}))
    page = render_html(sweep(*studies))
    assert len(page.encode()) < 450_000
    assert len(Elements(page).select(cls="point", section="scatter")) == 400


# --------------------------------------------------------------------------- the real tiny sweep


def test_one_point_per_trial_with_accuracy(tiny_sweep_data: SweepData) -> None:
    page = render_html(tiny_sweep_data)
    points = Elements(page).select(cls="point", section="scatter")
    expected = with_accuracy(tiny_sweep_data)
    assert expected
    assert len(points) == len(expected)
    assert {(p["data-optimizer"], int(p["data-trial"])) for p in points} == {
        (t.optimizer, t.number) for t in expected
    }
    assert len(Elements(page).select(cls="point")) == len(expected)  # nowhere else
    titles = re.findall(r'<circle class="point[^>]*><title>(.*?)</title>', page, re.S)
    assert len(titles) == len(expected)
    assert all("trial " in t and "accuracy " in t and "lr = " in t for t in titles)


def test_embedded_json_matches_the_data(tiny_sweep_data: SweepData) -> None:
    data = tiny_sweep_data
    page = render_html(data)
    scatter = embedded(page, "data-scatter")
    estimate = seconds_estimator(data)
    by_key = {(t.optimizer, t.number): t for t in with_accuracy(data)}
    assert len(scatter["points"]) == len(by_key)
    for p in scatter["points"]:
        t = by_key[(p["optimizer"], p["trial"])]
        assert p["accuracy"] == pytest.approx(t.accuracy)
        assert p["raw_train_seconds"] == pytest.approx(t.train_seconds)
        assert p["estimated_seconds"] == pytest.approx(estimate(t))
        assert p["params"] == pytest.approx(t.params)
    for s in data.studies:
        front = pareto_front(s.complete, key=lambda t: (t.cost or 0, t.accuracy or 0))
        assert scatter["fronts"][s.optimizer] == [t.number for t in front]

    curves = embedded(page, "data-curves")
    assert curves["target"] == data.target_accuracy
    assert len(curves["curves"]) == len(data.studies)
    for c, s in zip(curves["curves"], data.studies, strict=True):
        best = max(s.complete, key=lambda t: (t.accuracy or 0, -(t.cost or 0), -t.number))
        assert (c["optimizer"], c["trial"]) == (s.optimizer, best.number)
        assert c["accuracy"] == pytest.approx(list(best.curve))
    assert len(Elements(page).select("polyline", section="curves")) == len(data.studies)

    importances = embedded(page, "data-importances")["studies"]
    assert [i["importances"] for i in importances] == [s.importances for s in data.studies]

    sens = embedded(page, "data-sensitivity")
    panels = {(p["optimizer"], p["param"]): p for p in sens["panels"]}
    assert set(panels) == {("sam", "rho"), ("looksam", "k"), ("looksam", "alpha"),
                           ("looksam", "rho")}  # fmt: skip
    for (opt, name), panel in panels.items():
        trials = [t for t in with_accuracy(data) if t.optimizer == opt and name in t.params]
        assert [p["value"] for p in panel["points"]] == pytest.approx(
            [t.params[name] for t in trials]
        )
    dots = Elements(page).select("circle", "dot", "sensitivity")
    assert len(dots) == sum(len(p["points"]) for p in sens["panels"])


def test_environment_and_spec(tiny_sweep_data: SweepData) -> None:
    data = tiny_sweep_data
    page = render_html(data)
    env = page.split('<section id="environment">')[1]
    assert data.generated_at in env
    assert str(data.environment["git_commit"]) in env
    for s in data.studies:
        best = max(s.complete, key=lambda t: (t.accuracy or 0, -(t.cost or 0), -t.number))
        assert best.mlflow_run_id
        assert best.mlflow_run_id in env
    spec_text = re.search(r"<pre>(.*?)</pre>", env, re.S)
    assert spec_text is not None
    assert json.loads(html.unescape(spec_text.group(1)))["name"] == data.name


def test_same_input_same_bytes(tiny_sweep_data: SweepData, tmp_path: Path) -> None:
    page = render_html(tiny_sweep_data, findings=[Finding("speed", "x")])
    assert page == render_html(tiny_sweep_data, findings=[Finding("speed", "x")])
    assert page == render_html(replace(tiny_sweep_data), findings=[Finding("speed", "x")])
    # and in another interpreter with another hash seed (no set/dict-order leaks)
    pickled = tmp_path / "data.pkl"
    pickled.write_bytes(pickle.dumps(tiny_sweep_data))
    code = (
        "import pickle, sys; from looksam.reports.html import render_html; "
        "from looksam.reports.findings import Finding; "
        f"sys.stdout.write(render_html(pickle.loads(open({str(pickled)!r}, 'rb').read()), "
        "findings=[Finding('speed', 'x')]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout == page


def test_no_nan_in_json_even_for_odd_curves() -> None:
    data = sweep(study("sam", trial("sam", 0, 0.8, 1.0, {"rho": 0.1}, curve=(0.5, math.inf, 0.8))))
    page = render_html(data)
    assert embedded(page, "data-curves")["curves"][0]["accuracy"] == [0.5, None, 0.8]
