"""The statistics every report sentence leans on: means, confidence intervals, two tests.

Intervals are Student-t intervals over seeds (seeds are few, so the t, not the normal, quantile);
with fewer than two seeds there is no interval and the reports say so rather than invent one.
"A beats B" is Welch's unequal-variance t-test; "A matches B within δ" is its equivalence
counterpart, two one-sided Welch tests (TOST): failing to find a difference is not evidence of
sameness, so a match is claimed only when both one-sided tests reject a gap of δ or more.
"A is no worse than B by δ" (non-inferiority, ``advise``'s rule) is one of those one-sided tests.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Accuracies (fractions of a test set) this close are equal: 0.96 − 0.01 must equal 0.95 when
#: a difference is compared with a margin, although floating point says otherwise.
EXACT_TOLERANCE = 1e-9


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
    diff, se, df = _welch_parts(a, b)
    if se == 0.0:
        return Comparison(diff, None if diff == 0.0 else 0.0, len(a), len(b))
    from scipy.stats import t as student_t

    return Comparison(diff, float(2 * student_t.sf(abs(diff / se), df)), len(a), len(b))


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided Welch tests (TOST) of |mean(a) − mean(b)| < δ."""

    difference: float
    margin: float
    p_value: float | None  # the larger one-sided p; None: not testable
    n_a: int
    n_b: int

    def equivalent(self, alpha: float = 0.05) -> bool:
        """True only when both one-sided tests reject a difference of at least the margin."""
        return self.p_value is not None and self.p_value < alpha


def _welch_parts(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean(a) − mean(b), its standard error, Welch–Satterthwaite degrees of freedom)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0.0:
        return diff, 0.0, math.inf
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, math.sqrt(va + vb), df


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> Equivalence:
    """Whether a and b have means within ``margin`` of each other (α = 0.05 by default).

    The p-value is max(P(T ≥ (d + δ)/se), P(T ≤ (d − δ)/se)) with T Student-t on Welch's degrees
    of freedom: the same as asking whether the 90 % interval of the difference lies in (−δ, δ).
    """
    if margin <= 0 or not math.isfinite(margin):
        raise ValueError(f"the equivalence margin must be a finite number > 0, got {margin!r}")
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return Equivalence(diff, margin, None, len(a), len(b))
    diff, se, df = _welch_parts(a, b)
    if se == 0.0:  # no spread: the difference is known exactly
        return Equivalence(diff, margin, 0.0 if abs(diff) < margin else 1.0, len(a), len(b))
    from scipy.stats import t as student_t

    p_lower = float(student_t.sf((diff + margin) / se, df))  # H0: difference <= -margin
    p_upper = float(student_t.cdf((diff - margin) / se, df))  # H0: difference >= +margin
    return Equivalence(diff, margin, max(p_lower, p_upper), len(a), len(b))


@dataclass(frozen=True)
class OneSided:
    """A one-sided Welch test of H0: mean(a) − mean(b) ≤ −margin against the alternative
    mean(a) − mean(b) > −margin (margin 0: "a beats b"; margin δ > 0: "a is not worse by δ")."""

    difference: float  # mean(a) − mean(b)
    margin: float
    p_value: float | None  # None: fewer than 2 values on a side
    n_a: int
    n_b: int

    def rejects(self, alpha: float) -> bool:
        """True only when the test ran and its p-value is at most ``alpha``."""
        return self.p_value is not None and self.p_value <= alpha


def one_sided_welch(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> OneSided:
    """Welch's one-sided test that ``a`` exceeds ``b`` − ``margin``.

    p = P(T ≥ (d + δ)/se) with T Student-t on Welch's degrees of freedom. When neither sample
    varies the difference is known exactly, and the test rejects (p = 0) exactly when it lies
    beyond the margin (d > −δ, equality within :data:`EXACT_TOLERANCE` not beyond), else p = 1.
    """
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"the margin must be a finite number >= 0, got {margin!r}")
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return OneSided(diff, margin, None, len(a), len(b))
    diff, se, df = _welch_parts(a, b)
    shift = diff + margin
    if se == 0.0:
        return OneSided(diff, margin, 0.0 if shift > EXACT_TOLERANCE else 1.0, len(a), len(b))
    from scipy.stats import t as student_t

    return OneSided(diff, margin, float(student_t.sf(shift / se, df)), len(a), len(b))


def seeds_to_show(
    a: Sequence[float], b: Sequence[float], margin: float, alpha: float, power: float = 0.8
) -> int | None:
    """Seeds per arm with which :func:`one_sided_welch` would likely (``power``) reject, if the
    observed difference and spread are the truth (normal approximation):
    n = 2 s² (z₁₋α + z_power)² / (d + δ)², s² the mean of the two sample variances.

    None when the observed difference is not beyond the margin (more seeds would not help) or
    a sample has fewer than two values.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    shift = statistics.fmean(a) - statistics.fmean(b) + margin
    if shift <= EXACT_TOLERANCE:
        return None
    variance = (statistics.variance(a) + statistics.variance(b)) / 2
    if variance == 0.0:
        return max(len(a), len(b))
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha) + norm.ppf(power))
    return max(2, math.ceil(2 * variance * z * z / (shift * shift)))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (inclusive method); one value is its own spread."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def quiet_speed(reference_seconds_per_sample: Sequence[float]) -> float | None:
    """The reference's seconds per sample on this machine when it is quiet: the first quartile
    of every paired measurement so far, so a busy stretch covering up to three quarters of a
    sweep cannot move it (a median would give way at half). None before any measurement."""
    values = [v for v in reference_seconds_per_sample if v > 0 and math.isfinite(v)]
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=4, method="inclusive")[0]
