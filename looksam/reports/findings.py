"""Plain-language findings, each computed from the data and said only when the data carry it.

A sentence about accuracy *differences* needs Welch's test to reject equality (α = 0.05) over at
least three seeds a side; a sentence that a cheap variant *matches* SAM needs the equivalence test
(TOST) to reject a gap of the margin or more. Both use the headline seeds: the confirmation runs
where the sweep has them. A sentence about time states a ratio of *paired* per-sample costs
(never of two wall-clock totals) with its spread, and contended trials feed none. Which
optimizers are compared comes from the registry (``sam_role``), not from a list here.

Each optimizer is represented by its confirmed configuration (``reports.summary.confirm_choices``:
by default a cheap variant's cheapest configuration within the margin of SAM's search best), so
a sentence answers "what does the cheapest configuration as good as SAM cost?"; when the two
configurations compared train at different batch sizes, the sentence names both.
"""

from __future__ import annotations

from dataclasses import dataclass

from looksam.reports.leaderboard import (
    LeaderboardEntry,
    contended_total,
    leaderboard,
    optimizer_info,
    optimizer_label,
)
from looksam.reports.model import SweepData
from looksam.reports.summary import DEFAULT_MARGIN, RelativeCost, relative_time
from looksam.stats import tost, welch

MIN_SEEDS_FOR_TESTS = 3
#: "Matches within δ": one point of accuracy unless the caller asks otherwise.
EQUIVALENCE_MARGIN = DEFAULT_MARGIN
KINDS = (
    "speed",
    "difference",
    "no_difference",
    "equivalence",
    "inconclusive",
    "seeds",
    "contention",
)


@dataclass(frozen=True)
class Finding:
    """One sentence of the report, what kind of claim it is, and its test's p-value."""

    kind: str  # one of KINDS
    text: str
    p_value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; one of: {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (``report --json``)."""
        return {"kind": self.kind, "sentence": self.text, "p_value": self.p_value}


def _batch(e: LeaderboardEntry) -> object:
    return None if e.chosen is None else e.chosen.params.get("batch_size")


def _label(e: LeaderboardEntry, other: LeaderboardEntry | None = None) -> str:
    """'LookSAM (k=5)', with the batch size when ``other``'s configuration trains at another."""
    details = []
    k = e.chosen.params.get("k") if e.chosen else None
    if k is not None:
        details.append(f"k={k}")
    if other is not None and _batch(e) is not None and _batch(e) != _batch(other):
        details.append(f"batch {_batch(e)}")
    name = optimizer_label(e.optimizer)
    return f"{name} ({', '.join(details)})" if details else name


def _relative_cost(cheap: LeaderboardEntry, full: LeaderboardEntry) -> RelativeCost | None:
    return relative_time((cheap.chosen, cheap.confirmations), (full.chosen, full.confirmations))


def compare_sentence(cheap: LeaderboardEntry, full: LeaderboardEntry) -> Finding | None:
    """'LookSAM (k=5) reaches 99 % of SAM's accuracy in 0.61× its training time (paired…).'

    Configurations at different batch sizes are named with them: their costs are per sample.
    """
    if cheap.headline is None or full.headline is None or not full.headline.mean:
        return None
    cost = _relative_cost(cheap, full)
    if cost is None:
        return None
    share = 100 * cheap.headline.mean / full.headline.mean
    full_name = _label(full, cheap)
    whose = (
        f"{full_name}'s accuracy"
        if full_name == optimizer_label(full.optimizer)
        else (f"the accuracy of {full_name}")
    )
    return Finding(
        "speed",
        f"{_label(cheap, full)} reaches {share:.0f} % of {whose} in "
        f"{cost.ratio:.2f}× its training time (paired step costs, spread "
        f"{cost.low:.2f}–{cost.high:.2f}).",
    )


def difference_sentence(a: LeaderboardEntry, b: LeaderboardEntry) -> Finding | None:
    """Claim one is more accurate than another only when Welch's test says so."""
    if a.headline is None or b.headline is None:
        return None
    xs, ys = a.accuracies, b.accuracies
    name_a, name_b = optimizer_label(a.optimizer), optimizer_label(b.optimizer)
    too_few = _too_few_seeds(name_a, name_b, len(xs), len(ys))
    if too_few:
        return too_few
    test = welch(xs, ys)
    if not test.significant():
        p = "n/a" if test.p_value is None else f"{test.p_value:.2f}"
        return Finding(
            "no_difference",
            f"{name_a} and {name_b} are not significantly different in accuracy "
            f"({100 * test.difference:+.2f} points, Welch p = {p}).",
            test.p_value,
        )
    better, worse = (name_a, name_b) if test.difference > 0 else (name_b, name_a)
    p = _p_text(test.p_value or 0.0)
    return Finding(
        "difference",
        f"{better} is more accurate than {worse} by {100 * abs(test.difference):.2f} points "
        f"(Welch {p}, {test.n_a} vs {test.n_b} seeds).",
        test.p_value,
    )


def _too_few_seeds(name_a: str, name_b: str, n_a: int, n_b: int) -> Finding | None:
    if min(n_a, n_b) >= MIN_SEEDS_FOR_TESTS:
        return None
    return Finding(
        "seeds",
        f"{name_a} vs {name_b}: too few seeds ({n_a} and {n_b}) to tell a "
        f"difference from noise; run at least {MIN_SEEDS_FOR_TESTS} seeds "
        "([confirm] seeds in the spec).",
    )


def equivalence_sentence(
    cheap: LeaderboardEntry, full: LeaderboardEntry, margin: float = EQUIVALENCE_MARGIN
) -> Finding | None:
    """Say a cheap variant matches the full one only when TOST shows a gap under ``margin``."""
    if cheap.headline is None or full.headline is None:
        return None
    xs, ys = cheap.accuracies, full.accuracies
    name_a, name_b = _label(cheap, full), _label(full, cheap)
    if min(len(xs), len(ys)) < MIN_SEEDS_FOR_TESTS:
        return None  # the difference sentence already says why nothing can be claimed
    test = tost(xs, ys, margin)
    p = "n/a" if test.p_value is None else _p_text(test.p_value)
    within = f"within {100 * margin:g} point{'s' if margin != 0.01 else ''}"
    if test.equivalent():
        cost = _relative_cost(cheap, full)
        at = "" if cost is None else f" at {cost.ratio:.2f}× its cost"
        return Finding(
            "equivalence",
            f"{name_a} matches {name_b} {within} of accuracy{at} "
            f"({100 * test.difference:+.2f} points, equivalence test {p}).",
            test.p_value,
        )
    return Finding(
        "inconclusive",
        f"These seeds cannot show {name_a} matching {name_b} {within} of accuracy "
        f"({100 * test.difference:+.2f} points, equivalence test {p}); more seeds or a wider "
        "margin would be needed.",
        test.p_value,
    )


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _role(optimizer: str) -> str:
    info = optimizer_info(optimizer)
    return "none" if info is None else info.sam_role


def findings(data: SweepData, margin: float = EQUIVALENCE_MARGIN) -> list[Finding]:
    """Findings for the report, most useful first; empty when there is nothing to compare.

    ``margin`` is δ of "matches within δ" (accuracy as a fraction: 0.01 is one point).
    """
    entries = leaderboard(data)
    fulls = [e for e in entries if _role(e.optimizer) == "full"]
    cheap = [e for e in entries if _role(e.optimizer) == "approximation"]
    found: list[Finding | None] = []
    contended = contended_total(data)
    if contended:
        found.append(
            Finding(
                "contention",
                f"{contended} trial{'s were' if contended != 1 else ' was'} contended (the "
                "machine was busy while it trained): their wall-clock feeds no speed claim.",
            )
        )
    for full in fulls:
        found.extend(compare_sentence(c, full) for c in cheap)
        for c in cheap:
            difference = difference_sentence(c, full)
            found.append(difference)
            if difference is None or difference.kind != "difference":
                # a shown difference answers the question: no "more seeds could show a match"
                found.append(equivalence_sentence(c, full, margin))
    base = next((e for e in entries if e.optimizer == data.reference), None)
    if base is not None:
        for other in fulls or cheap:
            found.append(difference_sentence(other, base))
    unique: dict[str, Finding] = {}
    for f in found:  # a pair compared twice is said once
        if f is not None:
            unique.setdefault(f.text, f)
    return list(unique.values())
