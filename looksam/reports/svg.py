"""Inline-SVG drawing for the HTML report: scales, axes and marks as strings, no plotting library.

The report must open offline and stay small, so charts are drawn here as plain SVG text. Every
function is pure and deterministic: the same input gives the same bytes (coordinates are rounded
to 0.1 px so float noise cannot leak into the output).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import TypeVar

T = TypeVar("T")

# Okabe–Ito, colour-blind safe. Registered optimizers keep the colour their registry entry names
# in every report; others take the unused palette colours in order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F", "#000000")


def _registered_colours() -> dict[str, str]:
    from looksam.optim import list_optimizers  # read at call time: plugins may add entries

    return {info.name: info.colour.upper() for info in list_optimizers() if info.colour}


def colours_for(names: Iterable[str]) -> dict[str, str]:
    """A fixed colour per name: registered ones get their entry's, others the unused palette."""
    known = _registered_colours()
    ordered = list(dict.fromkeys(names))
    taken = {known[n] for n in ordered if n in known}
    spare = [c for c in PALETTE if c not in taken] or list(PALETTE)
    out: dict[str, str] = {}
    i = 0
    for name in ordered:
        if name in known:
            out[name] = known[name]
        else:
            out[name] = spare[i % len(spare)]
            i += 1
    return out


def pareto_front(
    points: Iterable[T], key: Callable[[T], tuple[float, float]] | None = None
) -> list[T]:
    """Points no other point beats on both seconds (lower) and accuracy (higher), fastest first.

    ``key`` maps an item to ``(seconds, accuracy)``; without it the items are those pairs. A point
    is dropped only if another is at least as good on both and strictly better on one, so exact
    duplicates of a front point all stay (in input order) — neither dominates the other.
    """
    get: Callable[[T], tuple[float, float]] = key if key is not None else (lambda p: p)  # type: ignore[assignment,return-value]
    indexed = [(get(p), i, p) for i, p in enumerate(points)]
    indexed.sort(key=lambda e: (e[0][0], -e[0][1], e[1]))
    front: list[T] = []
    last: tuple[float, float] | None = None
    for (seconds, accuracy), _, item in indexed:
        if last is None or accuracy > last[1] or (seconds, accuracy) == last:
            front.append(item)
            last = (seconds, accuracy)
    return front


def fmt(value: float, digits: int = 3) -> str:
    """A number for labels: ``digits`` significant figures, no exponent for everyday sizes."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = math.floor(math.log10(abs(value)))
    if -4 <= magnitude < 6:
        decimals = max(0, digits - 1 - magnitude)
        text = f"{value:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.{digits - 1}e}"


def _r(v: float) -> str:
    """A coordinate rounded to 0.1 px: small output, stable bytes."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Scale:
    """Maps data values onto pixels along one axis, linear or log10."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float
    log: bool = False
    integer: bool = False  # whole-number data (epochs, k, batch size): whole-number ticks

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        frac = 0.5 if b == a else (self._t(v) - a) / (b - a)
        return self.px_lo + frac * (self.px_hi - self.px_lo)

    def ticks(self, target: int = 5) -> list[float]:
        """Round-number tick positions inside the domain (1-2-5 steps; decades on a log axis)."""
        if self.log and self.integer:
            powers = [
                2.0**e
                for e in range(math.floor(math.log2(self.lo)), math.ceil(math.log2(self.hi)) + 1)
                if self.lo <= 2.0**e <= self.hi
            ]
            if len(powers) >= 3:
                return powers[:: max(1, math.ceil(len(powers) / (target + 2)))]
        if self.log:
            decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
            for mantissas in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0)):
                found = [
                    m * 10.0**d
                    for d in decades
                    for m in mantissas
                    if self.lo <= m * 10.0**d <= self.hi
                ]
                if len(found) >= 3:
                    return found
        return _linear_ticks(self.lo, self.hi, target, self.integer)


def _linear_ticks(lo: float, hi: float, target: int, integer: bool = False) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(1, target)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    n = first
    while n * step <= hi + 1e-9 * step:
        ticks.append(round(n * step, 12))
        n += 1
    return ticks


def make_scale(
    values: Sequence[float],
    px_lo: float,
    px_hi: float,
    *,
    log: bool | None = None,
    integer: bool = False,
) -> Scale:
    """A scale covering ``values`` with a margin; log when asked, or (None) when they span >10×."""
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    use_log = (lo > 0 and hi / lo > 10) if log is None else (log and lo > 0)
    if use_log:
        a, b = math.log10(lo), math.log10(hi)
        pad = (b - a) * 0.06 if b > a else 0.15
        return Scale(10 ** (a - pad), 10 ** (b + pad), px_lo, px_hi, True, integer)
    if hi == lo:
        half = (0.5 if integer else abs(lo) * 0.1) or 0.5
        lo, hi = lo - half, hi + half
    pad = (hi - lo) * 0.06
    return Scale(lo - pad, hi + pad, px_lo, px_hi, False, integer)


@dataclass(frozen=True)
class Frame:
    """The drawing box of one chart: total size and the plot area's margins."""

    width: int = 720
    height: int = 420
    left: int = 64
    right: int = 16
    top: int = 14
    bottom: int = 48

    def x_scale(
        self, values: Sequence[float], log: bool | None = None, integer: bool = False
    ) -> Scale:
        """The horizontal scale of this frame's plot area."""
        return make_scale(values, self.left, self.width - self.right, log=log, integer=integer)

    def y_scale(self, values: Sequence[float], log: bool | None = None) -> Scale:
        """The vertical scale of this frame's plot area (larger values higher up)."""
        return make_scale(values, self.height - self.bottom, self.top, log=log)


def axes(frame: Frame, x: Scale, y: Scale, x_label: str, y_label: str) -> str:
    """Grid lines, tick labels and axis titles; log axes say so in their title."""
    parts = [
        f'<rect class="plot-bg" x="{frame.left}" y="{frame.top}" '
        f'width="{frame.width - frame.left - frame.right}" '
        f'height="{frame.height - frame.top - frame.bottom}"/>'
    ]
    x0, x1 = frame.left, frame.width - frame.right
    y0, y1 = frame.height - frame.bottom, frame.top
    for t in x.ticks():
        px = _r(x(t))
        parts.append(f'<line class="grid" x1="{px}" x2="{px}" y1="{y1}" y2="{y0}"/>')
        parts.append(
            f'<text class="tick" x="{px}" y="{y0 + 16}" text-anchor="middle">{fmt(t)}</text>'
        )
    for t in y.ticks():
        py = _r(y(t))
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{py}" y2="{py}"/>')
        parts.append(
            f'<text class="tick" x="{x0 - 6}" y="{py}" dy="0.32em" text-anchor="end">'
            f"{fmt(t)}</text>"
        )
    parts.append(f'<path class="axis" d="M{x0} {y1}V{y0}H{x1}"/>')
    x_title = x_label + (" (log scale)" if x.log else "")
    y_title = y_label + (" (log scale)" if y.log else "")
    parts.append(
        f'<text class="axis-title" x="{_r((x0 + x1) / 2)}" y="{frame.height - 8}" '
        f'text-anchor="middle">{escape(x_title)}</text>'
    )
    parts.append(
        f'<text class="axis-title" transform="translate(14 {_r((y0 + y1) / 2)}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_title)}</text>'
    )
    return "".join(parts)


def svg(frame: Frame, label: str, body: str) -> str:
    """Wrap chart markup in an inline ``<svg>`` that scales to its container's width."""
    return (
        f'<svg class="chart" viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="{escape(label)}">{body}</svg>'
    )


def circle(
    cx: float,
    cy: float,
    *,
    cls: str,
    title: str,
    attrs: dict[str, str] | None = None,
    r: float = 4.5,
    hollow: bool = False,
) -> str:
    """One data point with a native tooltip (an SVG ``<title>`` child).

    Its colour comes from the enclosing :func:`group` (fill and stroke are inherited), which
    keeps hundreds of points small; a hollow point only overrides the fill.
    """
    extra = "".join(f' {k}="{escape(v)}"' for k, v in (attrs or {}).items())
    fill = ' fill="#fff"' if hollow else ""
    return (
        f'<circle class="{cls}" cx="{_r(cx)}" cy="{_r(cy)}" r="{_r(r)}"{fill}{extra}>'
        f"<title>{escape(title)}</title></circle>"
    )


def group(colour: str, body: str, attrs: dict[str, str] | None = None) -> str:
    """Marks sharing one colour (one optimizer's points)."""
    extra = "".join(f' {k}="{escape(v)}"' for k, v in (attrs or {}).items())
    return f'<g fill="{colour}" stroke="{colour}"{extra}>{body}</g>'


def step_path(points: Sequence[tuple[float, float]], colour: str, x_end: float) -> str:
    """A staircase through pixel points (x ascending): the best value reachable by each x."""
    if not points:
        return ""
    (x0, y0), rest = points[0], points[1:]
    d = [f"M{_r(x0)} {_r(y0)}"]
    for px, py in rest:
        d.append(f"H{_r(px)}V{_r(py)}")
    d.append(f"H{_r(x_end)}")
    return f'<path class="front" d="{"".join(d)}" stroke="{colour}"/>'


def polyline(
    points: Sequence[tuple[float, float]], colour: str, *, title: str, attrs: dict[str, str]
) -> str:
    """A connected line through pixel points, with a native tooltip."""
    coords = " ".join(f"{_r(x)},{_r(y)}" for x, y in points)
    extra = "".join(f' {k}="{escape(v)}"' for k, v in attrs.items())
    return (
        f'<polyline class="curve" points="{coords}" stroke="{colour}"{extra}>'
        f"<title>{escape(title)}</title></polyline>"
    )


def hline(frame: Frame, y: float, label: str) -> str:
    """A dashed horizontal reference line (e.g. the workload's target accuracy) with a label."""
    x0, x1 = frame.left, frame.width - frame.right
    return (
        f'<line class="ref" x1="{x0}" x2="{x1}" y1="{_r(y)}" y2="{_r(y)}"/>'
        f'<text class="ref-label" x="{x1 - 4}" y="{_r(y - 4)}" text-anchor="end">'
        f"{escape(label)}</text>"
    )


def _mix(light: str, dark: str, t: float) -> str:
    """The colour a fraction ``t`` of the way from ``light`` to ``dark`` (both '#rrggbb')."""
    a = [int(light[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(dark[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class HeatCell:
    """One cell of a heat map: the value that colours it, its label and its tooltip."""

    value: float | None  # None: no data (drawn hatched grey, labelled "—")
    text: str
    title: str


def heatmap(
    rows: Sequence[str],
    cols: Sequence[str],
    cells: Sequence[Sequence[HeatCell]],
    *,
    row_title: str,
    col_title: str,
    label: str,
    ramp: tuple[str, str],
    split_at: int | None = None,
) -> str:
    """A table of coloured cells (darker = larger value), labels in every cell.

    ``split_at`` leaves a gap before that column: reference columns (another optimizer at the
    same row value) sit apart from the grid they are compared with.
    """
    cell_w, cell_h, gap = 66, 30, 12
    left, top = 58, 44
    present = [c.value for row in cells for c in row if c.value is not None]
    lo, hi = (min(present), max(present)) if present else (0.0, 1.0)

    def x_of(j: int) -> float:
        return left + j * cell_w + (gap if split_at is not None and j >= split_at else 0)

    width = int(x_of(len(cols)) + 8)
    height = top + len(rows) * cell_h + 8
    parts = [
        f'<text class="axis-title" x="{_r((left + x_of(len(cols))) / 2)}" y="14" '
        f'text-anchor="middle">{escape(col_title)}</text>',
        f'<text class="axis-title" transform="translate(14 {_r(top + len(rows) * cell_h / 2)}) '
        f'rotate(-90)" text-anchor="middle">{escape(row_title)}</text>',
    ]
    for j, name in enumerate(cols):
        parts.append(
            f'<text class="tick" x="{_r(x_of(j) + cell_w / 2)}" y="{top - 8}" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    for i, name in enumerate(rows):
        y = top + i * cell_h
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{_r(y + cell_h / 2)}" dy="0.32em" '
            f'text-anchor="end">{escape(name)}</text>'
        )
        for j, cell in enumerate(cells[i]):
            x = x_of(j)
            if cell.value is None:
                fill, ink = "#eceef1", "#5f6368"
            else:
                t = 0.5 if hi == lo else (cell.value - lo) / (hi - lo)
                fill = _mix(ramp[0], ramp[1], 0.08 + 0.92 * t)
                ink = "#fff" if t > 0.55 else "#1d1d1f"
            parts.append(
                f'<g class="cell" data-row="{escape(name)}" data-col="{escape(cols[j])}">'
                f'<rect x="{_r(x + 1)}" y="{_r(y + 1)}" width="{cell_w - 2}" '
                f'height="{cell_h - 2}" rx="3" fill="{fill}">'
                f"<title>{escape(cell.title)}</title></rect>"
                f'<text x="{_r(x + cell_w / 2)}" y="{_r(y + cell_h / 2)}" dy="0.32em" '
                f'text-anchor="middle" fill="{ink}" font-size="12" pointer-events="none">'
                f"{escape(cell.text)}</text></g>"
            )
    # Drawn at its natural size (a few columns would be blown up to the page's width otherwise).
    return (
        f'<svg class="chart heatmap" viewBox="0 0 {width} {height}" '
        f'style="width:{width}px;max-width:100%" role="img" aria-label="{escape(label)}">'
        f"{''.join(parts)}</svg>"
    )
