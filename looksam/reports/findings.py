"""Plain-language findings, each computed from the data and said only when the data carry it.

A sentence about accuracy *differences* needs Welch's test to reject equality (α = 0.05) over at
least three seeds a side; a sentence that a cheap variant *matches* SAM needs the equivalence test
(TOST) to reject a gap of the margin or more. Ratios of means ("reaches 99 % of SAM's accuracy in
0.61× its time") are descriptive and always true of the numbers shown, so they need no test.
"""

from __future__ import annotations

from looksam.reports.leaderboard import LeaderboardEntry, leaderboard
from looksam.reports.model import SweepData
from looksam.reports.stats import tost, welch

NAMES = {
    "sgd": "SGD", "adamw": "AdamW", "lamb": "LAMB", "sam": "SAM", "samk": "SAM-k",
    "looksam": "LookSAM", "layerlooksam": "Look-LayerSAM",
}  # fmt: skip
MIN_SEEDS_FOR_TESTS = 3
#: "Matches within δ": one point of accuracy unless the caller asks otherwise.
EQUIVALENCE_MARGIN = 0.01


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
    too_few = _too_few_seeds(name_a, name_b, len(xs), len(ys))
    if too_few:
        return too_few
    test = welch(xs, ys)
    if not test.significant():
        p = "n/a" if test.p_value is None else f"{test.p_value:.2f}"
        return (
            f"{name_a} and {name_b} are not significantly different in accuracy "
            f"({100 * test.difference:+.2f} points, Welch p = {p})."
        )
    better, worse = (name_a, name_b) if test.difference > 0 else (name_b, name_a)
    p = _p_text(test.p_value or 0.0)
    return (
        f"{better} is more accurate than {worse} by {100 * abs(test.difference):.2f} points "
        f"(Welch {p}, {test.n_a} vs {test.n_b} seeds)."
    )


def _too_few_seeds(name_a: str, name_b: str, n_a: int, n_b: int) -> str | None:
    if min(n_a, n_b) >= MIN_SEEDS_FOR_TESTS:
        return None
    return (
        f"{name_a} vs {name_b}: too few seeds ({n_a} and {n_b}) to tell a "
        f"difference from noise; run at least {MIN_SEEDS_FOR_TESTS} seeds per trial."
    )


def equivalence_sentence(
    cheap: LeaderboardEntry, full: LeaderboardEntry, margin: float = EQUIVALENCE_MARGIN
) -> str | None:
    """Say a cheap variant matches the full one only when TOST shows a gap under ``margin``."""
    if cheap.best is None or full.best is None:
        return None
    xs, ys = cheap.best.seed_accuracies, full.best.seed_accuracies
    name_a = NAMES.get(cheap.optimizer, cheap.optimizer)
    name_b = NAMES.get(full.optimizer, full.optimizer)
    if min(len(xs), len(ys)) < MIN_SEEDS_FOR_TESTS:
        return None  # the difference sentence already says why nothing can be claimed
    test = tost(xs, ys, margin)
    p = "n/a" if test.p_value is None else _p_text(test.p_value)
    within = f"within {100 * margin:g} point{'s' if margin != 0.01 else ''}"
    if test.equivalent():
        return (
            f"{name_a} matches {name_b} {within} of accuracy "
            f"({100 * test.difference:+.2f} points, equivalence test {p})."
        )
    return (
        f"These seeds cannot show {name_a} matching {name_b} {within} of accuracy "
        f"({100 * test.difference:+.2f} points, equivalence test {p}); more seeds or a wider "
        "margin would be needed."
    )


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def findings(data: SweepData, margin: float = EQUIVALENCE_MARGIN) -> list[str]:
    """Sentences for the report, most useful first; empty when there is nothing to compare.

    ``margin`` is δ of "matches within δ" (accuracy as a fraction: 0.01 is one point).
    """
    entries = {e.optimizer: e for e in leaderboard(data)}
    sentences: list[str | None] = []
    full = entries.get("sam")
    if full is not None:
        for cheap in ("looksam", "layerlooksam", "samk"):
            if cheap in entries:
                sentences.append(compare_sentence(entries[cheap], full))
        for cheap in ("looksam", "layerlooksam"):
            if cheap in entries:
                sentences.append(difference_sentence(entries[cheap], full))
                sentences.append(equivalence_sentence(entries[cheap], full, margin))
    base = entries.get(data.reference)
    if base is not None:
        for other in ("sam", "looksam"):
            if other in entries and other != data.reference:
                sentences.append(difference_sentence(entries[other], base))
    return list(dict.fromkeys(s for s in sentences if s))  # a pair compared twice is said once
