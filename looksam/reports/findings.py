"""Plain-language findings, each computed from the data and said only when the data carry it.

A sentence about accuracy *differences* needs Welch's test to reject equality (α = 0.05) over at
least three seeds a side; ratios of means ("reaches 99 % of SAM's accuracy in 0.61× its time")
are descriptive and always true of the numbers shown, so they need no test.
"""

from __future__ import annotations

from looksam.reports.leaderboard import LeaderboardEntry, leaderboard
from looksam.reports.model import SweepData
from looksam.reports.stats import welch

NAMES = {
    "sgd": "SGD", "adamw": "AdamW", "lamb": "LAMB", "sam": "SAM", "samk": "SAM-k",
    "looksam": "LookSAM", "layerlooksam": "Look-LayerSAM",
}  # fmt: skip
MIN_SEEDS_FOR_TESTS = 3


def _label(e: LeaderboardEntry) -> str:
    name = NAMES.get(e.optimizer, e.optimizer)
    k = e.best.params.get("k") if e.best else None
    return f"{name} (k={k})" if k is not None else name


def compare_sentence(cheap: LeaderboardEntry, full: LeaderboardEntry) -> str | None:
    """'LookSAM (k=5) reaches 99 % of SAM's best accuracy in 0.61× its time.'"""
    a, b = cheap.best, full.best
    if a is None or b is None or not a.accuracy or not b.accuracy:
        return None
    if not a.train_seconds or not b.train_seconds:
        return None
    share = 100 * a.accuracy / b.accuracy
    time_ratio = a.train_seconds / b.train_seconds
    return (
        f"{_label(cheap)} reaches {share:.0f} % of {NAMES.get(full.optimizer, full.optimizer)}'s "
        f"best accuracy in {time_ratio:.2f}× its training time."
    )


def difference_sentence(a: LeaderboardEntry, b: LeaderboardEntry) -> str | None:
    """Claim one best trial is more accurate than another only when Welch's test says so."""
    if a.best is None or b.best is None:
        return None
    xs, ys = a.best.seed_accuracies, b.best.seed_accuracies
    name_a = NAMES.get(a.optimizer, a.optimizer)
    name_b = NAMES.get(b.optimizer, b.optimizer)
    if min(len(xs), len(ys)) < MIN_SEEDS_FOR_TESTS:
        return (
            f"{name_a} vs {name_b}: too few seeds ({len(xs)} and {len(ys)}) to tell a "
            f"difference from noise; run at least {MIN_SEEDS_FOR_TESTS} seeds per trial."
        )
    test = welch(xs, ys)
    if not test.significant():
        p = "n/a" if test.p_value is None else f"{test.p_value:.2f}"
        return (
            f"{name_a} and {name_b} are not significantly different in accuracy "
            f"({100 * test.difference:+.2f} points, Welch p = {p})."
        )
    better, worse = (name_a, name_b) if test.difference > 0 else (name_b, name_a)
    p = "p < 0.001" if (test.p_value or 0.0) < 0.001 else f"p = {test.p_value:.3f}"
    return (
        f"{better} is more accurate than {worse} by {100 * abs(test.difference):.2f} points "
        f"(Welch {p}, {test.n_a} vs {test.n_b} seeds)."
    )


def findings(data: SweepData) -> list[str]:
    """Sentences for the report, most useful first; empty when there is nothing to compare."""
    entries = {e.optimizer: e for e in leaderboard(data)}
    sentences: list[str | None] = []
    full = entries.get("sam")
    if full is not None:
        for cheap in ("looksam", "layerlooksam", "samk"):
            if cheap in entries:
                sentences.append(compare_sentence(entries[cheap], full))
        if "looksam" in entries:
            sentences.append(difference_sentence(entries["looksam"], full))
    base = entries.get(data.reference)
    if base is not None:
        for other in ("sam", "looksam"):
            if other in entries and other != data.reference:
                sentences.append(difference_sentence(entries[other], base))
    return [s for s in sentences if s]
