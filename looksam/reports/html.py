"""The sweep report as one self-contained HTML page: inline SVG charts, inline CSS, no network.

:func:`render_html` is a pure function of :class:`~looksam.reports.model.SweepData`; writing the
file is the caller's job. The page must open offline from an e-mail attachment or a CI artefact,
so nothing is fetched (a Content-Security-Policy forbids it outright), charts are drawn in Python
(:mod:`looksam.reports.svg`) and the numbers behind each chart are embedded as JSON so they can be
checked without scraping pixels.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from looksam._json import json_safe
from looksam.optim import integer_hyperparameters, sensitivity_axes
from looksam.reports.advice import (
    ADVICE_COLUMNS,
    advice_from,
    advice_json,
    advice_rows,
    paste_line,
    sentence,
)
from looksam.reports.findings import Finding
from looksam.reports.grid import GridCell, GridTable, grid_tables
from looksam.reports.leaderboard import (
    chosen_configurations,
    contended_total,
    seconds_estimator,
)
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.summary import best_trial, pareto_front
from looksam.reports.svg import (
    Frame,
    HeatCell,
    axes,
    circle,
    colours_for,
    fmt,
    group,
    heatmap,
    hline,
    polyline,
    step_path,
    svg,
)

__all__ = ["pareto_front", "render_html"]

NO_IMPORTANCES = "not enough completed trials with varied parameters"

CSS = """
:root{color-scheme:light;--fg:#1d1d1f;--muted:#5f6368;--line:#d8dadd;--bg:#fff;--panel:#f7f8fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.45;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:1rem 1.25rem 3rem}
header h1{font-size:1.5rem;margin:.5rem 0 .25rem}
.sub{color:var(--muted);margin:0 0 .75rem}
nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem;padding:.5rem 0;
border-bottom:1px solid var(--line)}
nav a{color:#0b57d0;text-decoration:none}
section{margin-top:2rem}
h2{font-size:1.2rem;margin:0 0 .5rem}
h3{font-size:1rem;margin:.25rem 0}
.note{color:var(--muted);font-size:.9rem;margin:.25rem 0 .5rem}
.chart{width:100%;height:auto;display:block;font-size:12px}
.grid-charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}
figure{margin:0;background:var(--panel);border:1px solid var(--line);border-radius:6px;
padding:.5rem}
figcaption{font-weight:600;font-size:.9rem;margin-bottom:.25rem}
.plot-bg{fill:#fff}
.grid{stroke:#eceef1;stroke-width:1}
.axis{stroke:#9aa0a6;fill:none}
.tick{fill:var(--muted);font-size:11px}
.axis-title{fill:var(--fg);font-size:12px}
.front{fill:none;stroke-width:1.8;stroke-opacity:.75}
.curve{fill:none;stroke-width:2}
.point,.dot{stroke-width:1.2;fill-opacity:.85}
.point.on-front{stroke:#1d1d1f;stroke-width:1.6}
.point.contended{stroke:#8e8e93;stroke-dasharray:2 1.5}
.chosen{fill:none;stroke:#1d1d1f;stroke-width:2;pointer-events:none}
.answer{background:var(--panel);border:1px solid var(--line);border-left:4px solid #0b57d0;
border-radius:6px;padding:.75rem 1rem}
.answer p{margin:.25rem 0}
.point:hover,.dot:hover{stroke:#000;stroke-width:2.5}
.ref{stroke:#5f6368;stroke-dasharray:5 4}
.ref-label{fill:var(--muted);font-size:11px}
.legend{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;padding:0;margin:.25rem 0}
.legend li{display:flex;align-items:center;gap:.35rem;font-size:.9rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:50%}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.9rem;min-width:50%}
th,td{border-bottom:1px solid var(--line);padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:var(--panel);white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.barcell{width:50%;min-width:8rem}
.bar{display:block;height:.8rem;border-radius:2px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
summary{cursor:pointer;margin:.75rem 0 .25rem;font-weight:600}
.heats{display:flex;flex-wrap:wrap;gap:.5rem 2rem;align-items:flex-start}
.heat{flex:0 1 auto;min-width:0}
pre{background:var(--panel);border:1px solid var(--line);padding:.75rem;overflow-x:auto;
font-size:.8rem}
"""

# No fetch of any kind may happen: the policy makes a stray external reference fail loudly.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(
    data: SweepData,
    *,
    leaderboard_rows: list[dict[str, str]] | None = None,
    findings: Sequence[Finding] | None = None,
) -> str:
    """The whole report as one HTML document (pure: no I/O, same input → same bytes).

    Args:
        data: the sweep, as loaded by :func:`looksam.sweeps.results.load_sweep_data`.
        leaderboard_rows: table rows (column → text) shown in order; ``None`` builds a plain
            table from ``data``.
        findings: the findings list; nothing is shown when ``None`` or empty.
    """
    colours = colours_for(s.optimizer for s in data.studies)
    grids = grid_tables(data)
    advice = _advice_section(data)
    sections = [
        advice,
        _scatter_section(data, colours),
        _grids_section(grids),
        _sensitivity_section(data, colours),
        _curves_section(data, colours),
        _importances_section(data, colours),
        _leaderboard_section(data, leaderboard_rows),
        _findings_section(findings or []),
        _environment_section(data),
    ]
    nav = [
        *([("advice", "Which SAM?")] if advice else []),
        ("scatter", "Speed–accuracy"),
        *([("grids", "Heat maps")] if grids else []),
        ("sensitivity", "Sensitivity"),
        ("curves", "Learning curves"),
        ("importances", "Importances"),
        ("leaderboard", "Leaderboard"),
        *([("findings", "Findings")] if findings else []),
        ("environment", "Environment"),
    ]
    goal = _finite(data.target_accuracy)
    target = f" · target accuracy {fmt(goal)}" if goal is not None else ""
    contended = contended_total(data)
    busy = f" · <b>{contended} contended trial(s)</b>" if contended else ""
    title = f"{data.name} — speed–accuracy report"
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            '<link rel="icon" href="data:,">\n',  # no favicon request
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
            f"<header><h1>{escape(title)}</h1>",
            f'<p class="sub">workload <b>{escape(data.workload)}</b> · objective '
            f"{escape(data.objective)} · base optimizer {escape(data.base)} · "
            f"{len(data.studies)} studies{target}{busy} · generated "
            f"{escape(data.generated_at)}</p>",
            "<nav>",
            *(f'<a href="#{sid}">{label}</a>' for sid, label in nav),
            "</nav></header>\n",
            *(s for s in sections if s),
            "</main>\n</body>\n</html>\n",
        ]
    )


# --------------------------------------------------------------------------- small helpers


def _finite(value: Any) -> float | None:
    """A plottable number, or None (missing, bool, NaN and ±inf are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _trials(study: StudyData) -> list[TrialPoint]:
    return sorted(study.trials, key=lambda t: t.number)


def _has_accuracy(t: TrialPoint) -> bool:
    return _finite(t.accuracy) is not None


def _best(data: SweepData, study: StudyData) -> TrialPoint | None:
    return best_trial(study.trials, data.objective)


def _value(v: Any) -> str:
    number = _finite(v)
    if number is not None and not isinstance(v, int):
        return fmt(number, 4)
    return str(v)


def _params_text(params: Mapping[str, Any], sep: str = ", ") -> str:
    return sep.join(f"{k}={_value(v)}" for k, v in params.items()) or "(none)"


def _seconds(v: float | None) -> str:
    number = _finite(v)
    return "—" if number is None else f"{fmt(number)} s"


def _accuracy(v: float | None) -> str:
    number = _finite(v)
    return "—" if number is None else f"{number:.4f}"


def _trial_title(t: TrialPoint, seconds: float | None, on_front: bool = False) -> str:
    """The hover text of one trial: what it scored, what it cost and how it was configured."""
    lines = [
        f"{t.optimizer} · trial {t.number}" + ("" if t.state == "COMPLETE" else f" ({t.state})")
    ]
    seeds = ", ".join(f"{a:.4f}" for a in t.seed_accuracies) if len(t.seed_accuracies) > 1 else ""
    lines.append(f"accuracy {_accuracy(t.accuracy)}" + (f" (seeds {seeds})" if seeds else ""))
    lines.append(f"est. train {_seconds(seconds)} (paired); raw {_seconds(t.train_seconds)}")
    if t.paired_ratios:
        lines.append(f"{fmt(statistics.median(t.paired_ratios))}× the base's step time (paired)")
    if t.contended:
        lines.append(f"contended: {t.contention}")
    lines.extend(f"{k} = {_value(v)}" for k, v in t.params.items())
    if on_front:
        lines.append("on the Pareto front")
    return "\n".join(lines)


def _json_script(element_id: str, payload: Any) -> str:
    """Embed data as JSON; '<', '>' and '&' are \\u-escaped so '</script>' cannot end it early."""
    text = json.dumps(json_safe(payload), separators=(",", ":"), allow_nan=False)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="{element_id}">{text}</script>\n'


def _legend(entries: Iterable[tuple[str, str]]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{escape(label)}</li>'
        for label, colour in entries
    )
    return f'<ul class="legend">{items}</ul>' if items else ""


# "0.87", "4/0/0", "87.59 ± 23.53 %", "7.65×", "2.03 s": right-aligned so digits line up
_NUMERIC = re.compile(r"[-+]?\d[\d.,/]*( ± [\d.,]+)?( ?[%×s])?")


def _table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] | None = None
) -> str:
    """Text cells; ``numeric`` names right-aligned columns (None: the cells that look numeric)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)

    def cell(i: int, text: str) -> str:
        right = _NUMERIC.fullmatch(text) is not None if numeric is None else i in numeric
        return f'<td class="num">{escape(text)}</td>' if right else f"<td>{escape(text)}</td>"

    body = "".join(
        "<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _spec_log(spec: Mapping[str, Any], optimizer: str, name: str) -> bool | None:
    """Whether the search space sampled ``name`` on a log scale (None: the spec doesn't say)."""
    spaces = spec.get("spaces")
    dims = spaces.get(optimizer) if isinstance(spaces, Mapping) else None
    for dim in dims if isinstance(dims, list | tuple) else ():
        if isinstance(dim, Mapping) and dim.get("name") == name and dim.get("choices") is None:
            return bool(dim.get("log"))
    return None


# --------------------------------------------------------------------------- sections


def _scatter_section(data: SweepData, colours: Mapping[str, str]) -> str:
    """Every trial with an accuracy, seconds against accuracy, with each optimizer's front."""
    frame = Frame(width=760, height=440)
    estimate = seconds_estimator(data)
    seconds = {
        (t.optimizer, t.number): _finite(estimate(t)) for s in data.studies for t in s.trials
    }

    def _xy(t: TrialPoint) -> tuple[float, float]:
        return (seconds[(t.optimizer, t.number)] or 0.0, float(t.accuracy or 0.0))

    def _plotted(t: TrialPoint) -> bool:
        return _has_accuracy(t) and seconds[(t.optimizer, t.number)] is not None

    points = [t for s in data.studies for t in _trials(s) if _plotted(t)]
    fronts = {s.optimizer: pareto_front(s.trials) for s in data.studies}
    chosen = {
        (t.optimizer, t.number) for t in chosen_configurations(data).values() if t is not None
    }
    on_front = {(t.optimizer, t.number) for f in fronts.values() for t in f}
    hidden = sum(1 for s in data.studies for t in s.trials if not _plotted(t))
    contended = sum(t.contended for t in points)
    payload = {
        "x": "estimated_seconds",
        "y": "accuracy",
        "points": [
            {
                "optimizer": t.optimizer,
                "trial": t.number,
                "state": t.state,
                "accuracy": t.accuracy,
                "estimated_seconds": seconds[(t.optimizer, t.number)],
                "raw_train_seconds": t.train_seconds,
                "samples_per_second": t.samples_per_second,
                "contended": t.contended,
                "contention": t.contention,
                "params": t.params,
                "pareto": (t.optimizer, t.number) in on_front,
                "confirmed": (t.optimizer, t.number) in chosen,
            }
            for t in points
        ],
        "fronts": {opt: [t.number for t in f] for opt, f in fronts.items()},
        "not_shown": hidden,
    }
    note = (
        "Each dot is one trial (mean over its seeds) at its paired cost: its steps timed "
        "against the base optimizer in interleaved rounds, in seconds of this machine when "
        "quiet. Hollow dots did not complete. Lines are each optimizer's Pareto front over "
        "completed trials: up and to the left is better. A ring marks each optimizer's "
        "confirmed configuration (the one re-run on fresh seeds). Hover a dot for its "
        "hyperparameters."
    )
    if contended:
        note += (
            f" {contended} grey dot(s) are contended trials: their own step times disagreed "
            "with the paired cost (the machine was busy), so no speed claim uses them."
        )
    if hidden:
        note += f" {hidden} trial(s) without an accuracy or a time are not shown."
    if not points:
        chart = '<p class="note">No trial has an accuracy yet.</p>'
    else:
        x = frame.x_scale([_xy(t)[0] for t in points])
        ys = [_xy(t)[1] for t in points]
        target = _finite(data.target_accuracy)
        show_target = target is not None and min(ys) - 0.1 <= target <= max(ys) + 0.1
        if show_target and target is not None:
            ys.append(target)
        y = frame.y_scale(ys, log=False)  # accuracy reads linearly
        body = [axes(frame, x, y, "est. train seconds (paired)", "test accuracy (mean)")]
        if show_target and target is not None:
            body.append(hline(frame, y(target), f"target {fmt(target)}"))
        for opt, front in fronts.items():
            body.append(
                step_path(
                    [(x(_xy(t)[0]), y(_xy(t)[1])) for t in front],
                    colours[opt],
                    frame.width - frame.right,
                )
            )
        for study in data.studies:
            marks = []
            for t in (p for p in points if p.optimizer == study.optimizer):
                key = (t.optimizer, t.number)
                marks.append(
                    circle(
                        x(_xy(t)[0]),
                        y(_xy(t)[1]),
                        cls=("point on-front" if key in on_front else "point")
                        + (" contended" if t.contended else ""),
                        title=_trial_title(t, _xy(t)[0], key in on_front),
                        attrs={
                            "data-optimizer": t.optimizer,
                            "data-trial": str(t.number),
                            "data-state": t.state,
                        },
                        r=5.5 if key in on_front else 4.5,
                        hollow=t.state != "COMPLETE" or t.contended,
                    )
                )
                if key in chosen:  # the configuration the confirmation re-ran
                    marks.append(
                        f'<circle class="chosen" cx="{x(_xy(t)[0]):.1f}" '
                        f'cy="{y(_xy(t)[1]):.1f}" r="9" data-confirmed="{escape(t.optimizer)}"/>'
                    )
            if marks:
                body.append(group(colours[study.optimizer], "".join(marks)))
        label = "Test accuracy against training seconds, one dot per trial"
        chart = svg(frame, label, "".join(body))
    return (
        '<section id="scatter"><h2>Speed against accuracy</h2>'
        f'<p class="note">{escape(note)}</p>'
        f"{_legend((s.optimizer, colours[s.optimizer]) for s in data.studies)}{chart}"
        f"{_json_script('data-scatter', payload)}</section>\n"
    )


def _small_scatter(
    title: str,
    pts: Sequence[tuple[float, float, TrialPoint]],
    x_label: str,
    y_label: str,
    colours: Mapping[str, str],
    log_x: bool | None,
    param: str,
) -> str:
    """One small chart of a per-trial quantity against a hyperparameter."""
    frame = Frame(width=320, height=230, left=56, bottom=42)
    integer = all(float(p[0]).is_integer() for p in pts) and param in {
        *integer_hyperparameters(),
        "batch_size",
    }
    x = frame.x_scale([p[0] for p in pts], log=log_x, integer=integer)
    # Throughput may span decades (log if so); accuracy always reads linearly.
    y = frame.y_scale([p[1] for p in pts], log=None if param == "batch_size" else False)
    body = [axes(frame, x, y, x_label, y_label)]
    for optimizer in dict.fromkeys(t.optimizer for _, _, t in pts):
        marks = "".join(
            circle(
                x(px),
                y(py),
                cls="dot",
                # short: the trial's full hyperparameters are on its point in #scatter
                title=f"{t.optimizer} · trial {t.number}\n{param} = {_value(px)}\n"
                f"{y_label} {fmt(py, 4)}",
                attrs={"data-trial": str(t.number)},
                r=4,
                hollow=t.state != "COMPLETE",
            )
            for px, py, t in pts
            if t.optimizer == optimizer
        )
        body.append(group(colours[optimizer], marks, {"data-optimizer": optimizer}))
    chart = svg(frame, title, "".join(body))
    return (
        f'<figure data-param="{escape(param)}"><figcaption>{escape(title)}</figcaption>'
        f"{chart}</figure>"
    )


def _sensitivity_section(data: SweepData, colours: Mapping[str, str]) -> str:
    """Accuracy against k, α and ρ where searched; throughput against batch size if searched."""
    panels: list[dict[str, Any]] = []
    figures: list[str] = []
    for study in data.studies:
        for name in sensitivity_axes(study.optimizer):
            pts = [
                (value, float(t.accuracy or 0.0), t)
                for t in _trials(study)
                if _has_accuracy(t) and (value := _finite(t.params.get(name))) is not None
            ]
            if len({v for v, _, _ in pts}) < 2:  # a fixed value: nothing to be sensitive to
                continue
            log = _spec_log(data.spec, study.optimizer, name)
            figures.append(
                _small_scatter(
                    f"{study.optimizer}: accuracy vs {name}",
                    pts,
                    name,
                    "accuracy",
                    colours,
                    log,
                    name,
                )
            )
            panels.append(
                {
                    "optimizer": study.optimizer,
                    "param": name,
                    "points": [{"trial": t.number, "value": v, "accuracy": a} for v, a, t in pts],
                }
            )
    parts = ['<section id="sensitivity"><h2>Hyperparameter sensitivity</h2>']
    if figures:
        parts.append(
            '<p class="note">Final accuracy of each trial against the SAM-family knobs: '
            "the interval k between sharpness steps, the reuse weight α and the radius ρ.</p>"
            f'<div class="grid-charts">{"".join(figures)}</div>'
        )
    else:
        parts.append('<p class="note">No study varied k, alpha or rho.</p>')

    tp = [
        (bs, speed, t)
        for s in data.studies
        for t in _trials(s)
        if (bs := _finite(t.params.get("batch_size"))) is not None
        and (speed := _finite(t.samples_per_second)) is not None
    ]
    throughput: dict[str, Any] | None = None
    if tp:
        throughput = {
            "points": [
                {
                    "optimizer": t.optimizer,
                    "trial": t.number,
                    "batch_size": b,
                    "samples_per_second": v,
                }
                for b, v, t in tp
            ]
        }
        used = list(dict.fromkeys(t.optimizer for _, _, t in tp))
        parts.append(
            "<h3>Throughput against batch size</h3>"
            f"{_legend((o, colours[o]) for o in used)}"
            '<div class="grid-charts">'
            + _small_scatter(
                "training throughput vs batch_size",
                tp,
                "batch_size",
                "samples/s",
                colours,
                None,
                "batch_size",
            )
            + "</div>"
        )
    else:
        parts.append(
            '<p class="note">batch_size was not searched, so there is no throughput-against-'
            "batch-size plot.</p>"
        )
    parts.append(_json_script("data-sensitivity", {"panels": panels, "throughput": throughput}))
    parts.append("</section>\n")
    return "".join(parts)


ACCURACY_RAMP = ("#f7fbff", "#08306b")  # light to dark blue: more accurate is darker
SECONDS_RAMP = ("#fff5eb", "#7f2704")  # light to dark orange: slower is darker


def _cell_texts(cell: GridCell | None, what: str) -> tuple[float | None, str, str]:
    """(colouring value, label, tooltip) of one grid cell for accuracy or seconds."""
    if cell is None:
        return None, "—", "not run"
    trials = "trial " + ", ".join(f"#{n}" for n in cell.trials)
    if what == "accuracy":
        if cell.accuracy is None:
            return None, "—", f"{trials}: no accuracy"
        return (
            cell.accuracy.mean,
            f"{100 * cell.accuracy.mean:.1f}",
            f"{trials}: accuracy {cell.accuracy.format()} over {cell.accuracy.n} seed(s)",
        )
    seconds = _finite(cell.train_seconds)
    if seconds is None:
        return None, "—", f"{trials}: no timing"
    return seconds, fmt(seconds), f"{trials}: {fmt(seconds)} s training (mean over seeds)"


def _grid_heatmap(table: GridTable, what: str) -> str:
    refs = list(table.references)
    col_labels = [_value(c) for c in table.cols] + refs
    rows = []
    for r in table.rows:
        row = [HeatCell(*_cell_texts(table.cells.get((r, c)), what)) for c in table.cols]
        row += [HeatCell(*_cell_texts(table.references[name].get(r), what)) for name in refs]
        rows.append(row)
    quantity = "accuracy (%)" if what == "accuracy" else "training seconds"
    chart = heatmap(
        [_value(r) for r in table.rows],
        col_labels,
        rows,
        row_title=table.row_param,
        col_title="" if table.by_optimizer else table.col_param,
        label=f"{quantity}: {table.title}",
        ramp=ACCURACY_RAMP if what == "accuracy" else SECONDS_RAMP,
        split_at=len(table.cols) if refs else None,
    )
    return f'<div class="heat" data-quantity="{what}"><h3>{quantity}</h3>{chart}</div>'


def _grids_section(grids: list[GridTable]) -> str:
    """Accuracy and training time over each gridded study's values, references alongside."""
    if not grids:
        return ""
    parts = [
        '<section id="grids"><h2>Heat maps over the grid</h2>',
        '<p class="note">Mean final accuracy (95 % t-interval in each tooltip) and mean training '
        "seconds at every grid point; darker is more accurate, or slower. Columns set apart on "
        "the right are other optimizers at the same row value.</p>",
    ]
    payload = []
    for table in grids:
        constants = "; ".join(
            f"{name}: {c.accuracy.format() if c.accuracy else '—'}, {_seconds(c.train_seconds)}"
            for name, c in table.constants.items()
        )
        parts.append(
            f'<figure data-grid="{escape(table.title)}"><figcaption>{escape(table.title)}'
            f'</figcaption><div class="heats">{_grid_heatmap(table, "accuracy")}'
            f"{_grid_heatmap(table, 'seconds')}</div>"
            + (
                f'<p class="note">Fixed-point references: {escape(constants)}.</p>'
                if constants
                else ""
            )
            + "</figure>"
        )
        payload.append(
            {
                "title": table.title,
                "row_param": table.row_param,
                "col_param": table.col_param,
                "cells": [
                    {
                        table.row_param: r,
                        table.col_param: c,
                        "accuracy": cell.accuracy.mean if cell.accuracy else None,
                        "accuracy_ci": cell.accuracy.half_width if cell.accuracy else None,
                        "seeds": cell.accuracy.n if cell.accuracy else 0,
                        "train_seconds": cell.train_seconds,
                        "trials": list(cell.trials),
                    }
                    for (r, c), cell in table.cells.items()
                ],
            }
        )
    parts.append(_json_script("data-grids", payload))
    parts.append("</section>\n")
    return "".join(parts)


def _curves_section(data: SweepData, colours: Mapping[str, str]) -> str:
    """Test accuracy per epoch of each optimizer's best trial."""
    frame = Frame(width=760, height=380)
    curves: list[tuple[TrialPoint, list[tuple[int, float]]]] = []
    for study in data.studies:
        best = _best(data, study)
        if best is None:
            continue
        pts = [(i + 1, v) for i, a in enumerate(best.curve) if (v := _finite(a)) is not None]
        if pts:
            curves.append((best, pts))
    payload = {
        "target": _finite(data.target_accuracy),
        "curves": [
            {"optimizer": t.optimizer, "trial": t.number, "accuracy": list(t.curve)}
            for t, _ in curves
        ],
    }
    head = '<section id="curves"><h2>Learning curves of the best trials</h2>'
    if not curves:
        return (
            f'{head}<p class="note">No completed trial recorded a learning curve.</p>'
            f"{_json_script('data-curves', payload)}</section>\n"
        )
    epochs = [e for _, pts in curves for e, _ in pts]
    ys = [v for _, pts in curves for _, v in pts]
    target = _finite(data.target_accuracy)
    show_target = target is not None and min(ys) - 0.1 <= target <= max(ys) + 0.1
    if show_target and target is not None:
        ys.append(target)
    x = frame.x_scale([float(e) for e in epochs], log=False, integer=True)
    y = frame.y_scale(ys, log=False)
    body = [axes(frame, x, y, "epoch", "test accuracy (mean over seeds)")]
    if show_target and target is not None:
        body.append(hline(frame, y(target), f"target {fmt(target)}"))
    for t, pts in curves:
        last = pts[-1][1]
        body.append(
            polyline(
                [(x(e), y(v)) for e, v in pts],
                colours[t.optimizer],
                title=f"{t.optimizer} · trial {t.number}: final {last:.4f}\n"
                + _params_text(t.params, "\n"),
                attrs={"data-optimizer": t.optimizer, "data-trial": str(t.number)},
            )
        )
    legend = _legend(
        (f"{t.optimizer} (trial {t.number}, {_accuracy(t.accuracy)})", colours[t.optimizer])
        for t, _ in curves
    )
    return (
        f'{head}<p class="note">One line per optimizer: its highest-accuracy completed trial, '
        f"test accuracy after each epoch (mean over seeds).</p>{legend}"
        f"{svg(frame, 'Test accuracy per epoch of each optimizer best trial', ''.join(body))}"
        f"{_json_script('data-curves', payload)}</section>\n"
    )


def _importances_section(data: SweepData, colours: Mapping[str, str]) -> str:
    """Optuna's hyperparameter importances per study, as bars in a table."""
    blocks = []
    for study in data.studies:
        items = sorted(
            ((k, v) for k, v in study.importances.items() if _finite(v) is not None),
            key=lambda kv: (-kv[1], kv[0]),
        )
        title = f"<h3>{escape(study.optimizer)}</h3>"
        if not items:
            blocks.append(f'<figure>{title}<p class="note">{NO_IMPORTANCES}</p></figure>')
            continue
        top = max(v for _, v in items) or 1.0
        rows = "".join(
            f'<tr><td>{escape(k)}</td><td class="barcell"><span class="bar" '
            f'style="width:{max(0.0, v) / top * 100:.1f}%;background:{colours[study.optimizer]}">'
            f'</span></td><td class="num">{v:.3f}</td></tr>'
            for k, v in items
        )
        blocks.append(
            f'<figure>{title}<table><thead><tr><th>parameter</th><th colspan="2">importance</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></figure>"
        )
    payload = {
        "studies": [
            {"optimizer": s.optimizer, "study_name": s.study_name, "importances": s.importances}
            for s in data.studies
        ]
    }
    return (
        '<section id="importances"><h2>Hyperparameter importances</h2>'
        '<p class="note">Share of the variance of each study\'s objective (accuracy, for a '
        "pareto study) that each parameter explains: fANOVA (Optuna's "
        "FanovaImportanceEvaluator, seeded), per study.</p>"
        f'<div class="grid-charts">{"".join(blocks)}</div>'
        f"{_json_script('data-importances', payload)}</section>\n"
    )


def _leaderboard_section(data: SweepData, rows: list[dict[str, str]] | None) -> str:
    """The given leaderboard rows as a table, or a plain one built from the data."""
    if rows is None:
        columns = ["optimizer", "completed trials", "best accuracy", "raw seconds", "best params"]
        cells = []
        for study in data.studies:
            best = _best(data, study)
            cells.append(
                [
                    study.optimizer,
                    f"{len(study.complete)} of {len(study.trials)}",
                    _accuracy(best.accuracy) if best else "—",
                    _seconds(best.train_seconds) if best else "—",
                    _params_text(best.params) if best else "—",
                ]
            )
        table = _table(columns, cells, {1, 2, 3})
    elif not rows:
        table = '<p class="note">No rows.</p>'
    else:
        columns = list(dict.fromkeys(c for row in rows for c in row))
        table = _table(columns, ([str(r.get(c, "")) for c in columns] for r in rows))
    return f'<section id="leaderboard"><h2>Leaderboard</h2>{table}</section>\n'


def _advice_section(data: SweepData) -> str:
    """advise's answer at the top of the page: the sentence, what to paste, the evidence."""
    advice = advice_from(data)
    if advice is None:
        return ""
    rows = advice_rows(advice)
    line = paste_line(advice)
    paste = "" if line is None else f"<pre><code>{escape(line)}</code></pre>"
    table = _table(ADVICE_COLUMNS, ([r.get(c, "") for c in ADVICE_COLUMNS] for r in rows))
    note = (
        f"Each candidate's confirmed configuration (ringed in the chart below) on fresh seeds. "
        f"p: one-sided Welch test that it is not worse than {advice.reference} by "
        f"{100 * advice.margin:g} point(s); α: the level it was held to after the corrections "
        f"for {len(advice.looks)} looks and {advice.family_size} candidate"
        f"{'s' if advice.family_size != 1 else ''}. Costs are paired "
        f"per-sample costs against {advice.base} (× base) and {advice.reference} (× ref). "
        "The rule: the cheapest of the reference and the candidates shown non-inferior to it."
    )
    return (
        '<section id="advice"><h2>Which SAM should I use?</h2>'
        f'<div class="answer" data-verdict="{escape(advice.verdict)}">'
        f"<p><b>{escape(advice.verdict)}</b>: {escape(sentence(advice))}</p>{paste}</div>"
        f'<p class="note">{escape(note)}</p>{table}'
        f"{_json_script('data-advice', advice_json(advice))}</section>\n"
    )


def _findings_section(findings: Sequence[Finding]) -> str:
    if not findings:
        return ""
    items = "".join(f'<li data-kind="{escape(f.kind)}">{escape(f.text)}</li>' for f in findings)
    return f'<section id="findings"><h2>Findings</h2><ul>{items}</ul></section>\n'


def _environment_section(data: SweepData) -> str:
    """Where and from what the numbers came, so a reader can reproduce or distrust them."""
    facts: list[tuple[str, Any]] = [
        ("sweep", data.name),
        ("workload", data.workload),
        ("objective", data.objective),
        ("base optimizer", data.base),
        ("speeds compared with", data.reference),
        ("target accuracy", "—" if data.target_accuracy is None else fmt(data.target_accuracy)),
        ("generated at", data.generated_at),
        *data.environment.items(),
    ]
    dl = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    runs = []
    estimate = seconds_estimator(data)
    for study in data.studies:
        best = _best(data, study)
        for t in pareto_front(study.trials):
            role = (
                "best accuracy" if best is not None and t.number == best.number else "Pareto front"
            )
            runs.append(
                [
                    study.optimizer,
                    str(t.number),
                    role,
                    _accuracy(t.accuracy),
                    _seconds(estimate(t)),
                    t.mlflow_run_id or "—",
                ]
            )
    run_table = (
        _table(
            ["optimizer", "trial", "role", "accuracy", "est. seconds", "MLflow run id"],
            runs,
            {1, 3, 4},
        )
        if runs
        else '<p class="note">No completed trial.</p>'
    )
    spec = json.dumps(json_safe(data.spec), indent=2, ensure_ascii=False)
    return (
        '<section id="environment"><h2>Environment</h2>'
        f"<dl>{dl}</dl><h3>MLflow runs of the best trials</h3>"
        '<p class="note">Each optimizer\'s Pareto-front trials; the best-accuracy one is '
        "marked.</p>"
        f"{run_table}<details><summary>Sweep spec (JSON; storage and tracking URIs redacted)"
        f"</summary><pre>{escape(spec)}</pre></details></section>\n"
    )
