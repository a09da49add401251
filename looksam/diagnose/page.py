"""The gradient-drift diagnosis as one self-contained HTML page (LookSAM's Figure 2, redrawn).

:func:`render_diagnosis_html` is a pure function of a
:class:`~looksam.diagnose.experiment.DiagnosisResult`; writing the file is the caller's job. It
shares the sweep report's look and offline guarantees (the same CSS and Content-Security-Policy,
charts drawn by :mod:`looksam.reports.svg`, the numbers behind each chart embedded as JSON).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from html import escape
from typing import Any

from looksam.diagnose.experiment import (
    METRICS,
    VECTORS,
    VERDICT_METRIC,
    DiagnosisResult,
    verdict_sentence,
)
from looksam.optim import gradient_colours
from looksam.reports.html import CSP, CSS, _json_script, _legend, _table
from looksam.reports.svg import Frame, axes, fmt, polyline, svg

__all__ = ["render_diagnosis_html"]

VECTOR_LABELS = {
    "g": "g = ∇L(w)",
    "g_s": "g_s = ∇L(w + ε)",
    "g_v": "g_v = g_s − proj_g g_s",
}
#: Per line and chart: step-to-step drift is noisy, and a few hundred jagged points in a small
#: chart hide each other; medians of equal buckets of steps show the level and the trend.
MAX_POINTS = 100

# Drift series are noisy step to step: thinner lines than the sweep report's learning curves.
EXTRA_CSS = """
.drift .curve{stroke-width:1.3;stroke-opacity:.85}
.verdict{font-size:1.05rem;padding:.6rem .8rem;border-radius:6px;border:1px solid var(--line);
background:var(--panel)}
.verdict.yes{border-color:#009E73}
.verdict.slight{border-color:#E69F00}
.verdict.no{border-color:#D55E00}
"""


def _thin(points: Sequence[tuple[int, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points: each the median step and median value of an equal bucket.

    Keeps the SVG small for long runs while showing the level and trend the medians summarise.
    """
    finite = [(float(s), v) for s, v in points if math.isfinite(v)]
    if len(finite) <= limit:
        return finite
    size = math.ceil(len(finite) / limit)
    out = []
    for i in range(0, len(finite), size):
        bucket = finite[i : i + size]
        out.append(
            (statistics.median(s for s, _ in bucket), statistics.median(v for _, v in bucket))
        )
    return out


def _num(value: float, digits: int = 3) -> str:
    return fmt(value, digits) if math.isfinite(value) else "—"


def _fixed(value: float, decimals: int = 3) -> str:
    """Table cells with the same decimals, so columns line up digit by digit."""
    return f"{value:.{decimals}f}" if math.isfinite(value) else "—"


def _chart(result: DiagnosisResult, k: int) -> tuple[str, dict[str, Any]]:
    """One small multiple: relative drift of g, g_s and g_v over training at lag k."""
    frame = Frame(width=360, height=240, left=56, bottom=42)
    colours = gradient_colours()
    lines = {
        v: _thin(
            list(
                zip(
                    result.get_series(k, v, "relative").steps,
                    result.get_series(k, v, "relative").values,
                    strict=True,
                )
            ),
            MAX_POINTS,
        )
        for v in VECTORS
    }
    summary = next(s for s in result.summaries if s.k == k)
    medians = summary.median["relative"]
    caption = f"k = {k} · median " + ", ".join(f"{v} {_num(medians[v])}" for v in VECTORS)
    payload = {"k": k, "points": {v: [[s, y] for s, y in pts] for v, pts in lines.items()}}
    xs = [s for pts in lines.values() for s, _ in pts]
    ys = [y for pts in lines.values() for _, y in pts]
    if not xs:
        body = '<p class="note">No step pair with a defined relative drift.</p>'
    else:
        x = frame.x_scale(xs, log=False, integer=True)
        y = frame.y_scale(ys)  # log when the values span more than 10×
        parts = [axes(frame, x, y, "step t + k", "‖x_t − x_{t+k}‖ / ‖x_t‖")]
        for v, pts in lines.items():
            if pts:
                parts.append(
                    polyline(
                        [(x(s), y(val)) for s, val in pts],
                        colours[v],
                        title=f"{v} at k = {k}: median relative drift {_num(medians[v])}",
                        attrs={"data-vector": v, "data-k": str(k)},
                    )
                )
        body = svg(frame, f"Relative drift of g, g_s and g_v at k = {k}", "".join(parts))
    figure = (
        f'<figure data-k="{k}"><figcaption>{escape(caption)}</figcaption>{body}'
        f"{_json_script(f'data-drift-k{k}', payload)}</figure>"
    )
    return figure, payload


def _charts_section(result: DiagnosisResult) -> str:
    figures = [_chart(result, k)[0] for k in result.config.ks]
    colours = gradient_colours()
    legend = _legend((VECTOR_LABELS[v], colours[v]) for v in VECTORS)
    thinned = any(len(s.values) > MAX_POINTS for s in result.series)
    note = (
        "Relative drift ‖x_t − x_{t+k}‖ / ‖x_t‖ of each vector between step t and step t + k, "
        "one chart per lag k. Lower means the vector changed less; LookSAM reuses g_v for k "
        "steps, so its line should sit below the other two. About √2 ≈ 1.41 means the two "
        "vectors are as different as two unrelated directions of equal size."
    )
    if thinned:
        note += (
            f" Each line shows at most {MAX_POINTS} points: medians of equal buckets of "
            "consecutive steps (the full series are in the JSON result)."
        )
    return (
        '<section id="drift"><h2>Drift over training</h2>'
        f'<p class="note">{escape(note)}</p>{legend}'
        f'<div class="grid-charts drift">{"".join(figures)}</div></section>\n'
    )


def _summary_section(result: DiagnosisResult) -> str:
    """Medians of every metric per vector and lag, then g_v's ratios per lag."""
    metric_titles = {
        "absolute": "median ‖x_t − x_{t+k}‖",
        "relative": "median ‖x_t − x_{t+k}‖ / ‖x_t‖",
        "cosine": "median cos(x_t, x_{t+k})",
    }
    rows = [
        [str(s.k), v, *(_fixed(s.median[m][v], 4) for m in METRICS)]
        for s in result.summaries
        for v in VECTORS
    ]
    medians = _table(["k", "vector", *(metric_titles[m] for m in METRICS)], rows, {0, 2, 3, 4})
    ratio_rows = [
        [
            str(s.k),
            _fixed(s.gv_over_g),
            _fixed(s.gv_over_gs),
            _fixed(s.abs_gv_over_g),
            _fixed(s.abs_gv_over_gs),
            "yes" if s.gv_slower else "no",
        ]
        for s in result.summaries
    ]
    ratios = _table(
        [
            "k",
            "g_v / g (relative)",
            "g_v / g_s (relative)",
            "g_v / g (absolute)",
            "g_v / g_s (absolute)",
            "g_v slower than both",
        ],
        ratio_rows,
        {0, 1, 2, 3, 4},
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        '<p class="note">Medians over the run. A ratio is g_v\'s median drift over that of g '
        "or g_s: below 1, g_v drifted less. The verdict uses the relative ratios, because g_v "
        "is one component of g_s and so smaller: its absolute drift is smaller for that reason "
        "alone.</p>"
        f"{medians}<h3>g_v against g and g_s</h3>{ratios}</section>\n"
    )


def _environment_section(result: DiagnosisResult) -> str:
    c = result.config
    facts: list[tuple[str, Any]] = [
        ("workload", c.workload),
        ("optimizer", f"SAM (SGD base), ρ = {fmt(c.rho)}"),
        ("k values", ", ".join(map(str, c.ks))),
        ("steps", f"{result.steps} of {c.steps} ({result.epochs:.1f} epochs)"),
        ("peak learning rate", fmt(result.lr)),
        ("batch size", result.batch_size),
        ("seed", c.seed),
        ("device asked for", c.device),
        ("data dir", c.data_dir or "—"),
        ("status", f"{result.status} {result.message}".strip()),
        ("seconds (training and measuring)", fmt(result.seconds)),
        *asdict(result.environment).items(),
    ]
    dl = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    head = '<section id="environment"><h2>Configuration and environment</h2>'
    return f"{head}<dl>{dl}</dl></section>\n"


def render_diagnosis_html(result: DiagnosisResult) -> str:
    """The whole page as one HTML document (pure: no I/O, same input → same bytes)."""
    c = result.config
    title = f"Gradient drift on {c.workload}: does g_v change slower than g and g_s?"
    accuracy = (
        "" if result.test_accuracy is None else f" · test accuracy {result.test_accuracy:.4f}"
    )
    loss = f" · final loss {_num(result.train_loss[-1], 4)}" if result.train_loss else ""
    verdict_class = "yes" if result.clearly_slower else "slight" if result.verdict else "no"
    summary_payload = {
        "verdict": result.verdict,
        "clearly_slower": result.clearly_slower,
        "verdict_metric": VERDICT_METRIC,
        "summaries": [asdict(s) for s in result.summaries],
    }
    nav = [("verdict", "Verdict"), ("drift", "Drift"), ("summary", "Summary")]
    nav.append(("environment", "Configuration"))
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            '<link rel="icon" href="data:,">\n',  # no favicon request
            f"<title>{escape(title)}</title>\n<style>{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n",
            "<main>\n",
            f"<header><h1>{escape(title)}</h1>",
            f'<p class="sub">SAM with ρ = {escape(fmt(c.rho))} · {result.steps} steps · '
            f"k = {escape(', '.join(map(str, c.ks)))}{escape(loss)}{escape(accuracy)} · "
            f"status {escape(result.status)}</p>",
            "<nav>",
            *(f'<a href="#{sid}">{label}</a>' for sid, label in nav),
            "</nav></header>\n",
            '<section id="verdict"><h2>Verdict</h2>',
            f'<p class="verdict {verdict_class}">{escape(verdict_sentence(result))}</p>',
            '<p class="note">LookSAM (Liu et al., CVPR 2022) computes SAM\'s gradient g_s only '
            "every k steps and reuses g_v, its part orthogonal to g, in between; its Figure 2 "
            "shows g_v changing much more slowly than g and g_s. This page measures that claim "
            "on this workload while training with SAM.</p>",
            _json_script("data-summary", summary_payload),
            "</section>\n",
            _charts_section(result),
            _summary_section(result),
            _environment_section(result),
            "</main>\n</body>\n</html>\n",
        ]
    )
