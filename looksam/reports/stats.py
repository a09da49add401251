"""The statistics every report sentence leans on: means, confidence intervals, Welch's test.

Intervals are Student-t intervals over seeds (seeds are few, so the t, not the normal, quantile);
with fewer than two seeds there is no interval and the reports say so rather than invent one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanCI:
    """Mean of a sample and the half-width of its 95 % t-interval (None: too few values)."""

    mean: float
    half_width: float | None
    n: int

    def format(self, scale: float = 100.0, unit: str = " %", digits: int = 2) -> str:
        """'96.30 ± 0.85 %' or '96.30 % (1 seed: no CI)'."""
        mean = f"{self.mean * scale:.{digits}f}"
        if self.half_width is None:
            seeds = "seed" if self.n == 1 else "seeds"
            return f"{mean}{unit} ({self.n} {seeds}: no CI)"
        return f"{mean} ± {self.half_width * scale:.{digits}f}{unit}"


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (scipy, a dependency of scikit-learn, computes it)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(p, df))


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean and t-interval half-width; no interval for fewer than two values."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return MeanCI(mean, None, len(values))
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return MeanCI(mean, t_quantile(0.5 + level / 2, len(values) - 1) * sem, len(values))


@dataclass(frozen=True)
class Comparison:
    """Welch's two-sample t-test of a − b."""

    difference: float
    p_value: float | None  # None: not testable (fewer than 2 values on a side, or no spread)
    n_a: int
    n_b: int

    def significant(self, alpha: float = 0.05) -> bool:
        """True only when the test ran and rejects equality at ``alpha``."""
        return self.p_value is not None and self.p_value < alpha


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Welch's unequal-variance t-test; untestable samples give ``p_value=None``."""
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, len(a), len(b))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0.0:
        return Comparison(diff, None if diff == 0.0 else 0.0, len(a), len(b))
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    from scipy.stats import t as student_t

    return Comparison(diff, float(2 * student_t.sf(abs(t), df)), len(a), len(b))
