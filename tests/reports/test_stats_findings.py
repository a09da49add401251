"""Statistics checked by hand, and findings said only when the data carry them."""

from __future__ import annotations

import math
import statistics

import pytest

from looksam.reports.findings import (
    MIN_SEEDS_FOR_TESTS,
    Finding,
    compare_sentence,
    difference_sentence,
    equivalence_sentence,
    findings,
)
from looksam.reports.leaderboard import (
    LeaderboardEntry,
    leaderboard,
    leaderboard_rows,
)
from looksam.reports.markdown import render_markdown
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.stats import mean_ci, tost, welch


def test_t_interval_by_hand() -> None:
    # mean 0.92, sd 0.02, sem 0.02/√3 = 0.011547, t(0.975, 2) = 4.302653 → ±0.049683
    ci = mean_ci([0.90, 0.92, 0.94])
    assert ci.mean == pytest.approx(0.92)
    assert ci.half_width == pytest.approx(0.049683, abs=1e-6)
    assert ci.format() == "92.00 ± 4.97 %"


def test_one_seed_has_no_interval() -> None:
    ci = mean_ci([0.9])
    assert ci.half_width is None
    assert ci.format() == "90.00 % (1 seed: no CI)"
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


def test_welch_by_hand() -> None:
    # a − b = −3, both variances 1 → t = −3/√(2/3) = −3.674, df = 4 → p = 0.02131
    test = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert test.difference == pytest.approx(-3.0)
    assert test.p_value == pytest.approx(0.021312, abs=1e-5)
    assert test.significant()


def test_welch_no_difference_and_untestable_samples() -> None:
    same = welch([0.90, 0.95, 0.85], [0.91, 0.86, 0.93])
    assert same.p_value == pytest.approx(1.0)
    assert not same.significant()
    assert welch([0.9], [0.8, 0.85]).p_value is None
    assert not welch([0.9], [0.8, 0.85]).significant()


def _t4_cdf(x: float) -> float:
    """Student-t CDF for 4 degrees of freedom in closed form (an oracle independent of scipy)."""
    u = x / math.sqrt(4 + x * x)
    return 0.5 + 0.75 * u * (1 - u * u / 3)


def test_equivalence_by_hand() -> None:
    # a − b = −0.5, se = √(1/3 + 1/3) = 0.8165, df = 4.
    a, b = [1.0, 2.0, 3.0], [1.5, 2.5, 3.5]
    se = math.sqrt(2 / 3)
    # δ = 2: lower test t = 1.5/se = 1.837 → p = 0.0700; upper t = −2.5/se → p = 0.0188
    loose = tost(a, b, 2.0)
    assert loose.difference == pytest.approx(-0.5)
    assert loose.p_value == pytest.approx(1 - _t4_cdf(1.5 / se), abs=1e-9)
    assert loose.p_value == pytest.approx(0.0700, abs=1e-4)
    assert not loose.equivalent()  # a gap of 0.5 ± that much spread is not shown to be < 2
    # δ = 3: lower t = 2.5/se → p = 0.0188 (the larger one) → equivalent at α = 0.05
    wide = tost(a, b, 3.0)
    assert wide.p_value == pytest.approx(1 - _t4_cdf(2.5 / se), abs=1e-9)
    assert wide.equivalent()


def test_no_difference_is_not_a_match() -> None:
    # Welch finds nothing (p = 0.29), yet the seeds cannot show a gap under 1 point either.
    sam, looksam = [0.95, 0.96, 0.97], [0.94, 0.95, 0.96]
    assert not welch(looksam, sam).significant()
    assert not tost(looksam, sam, 0.01).equivalent()
    assert tost(looksam, sam, 0.05).equivalent()


def test_equivalence_without_spread_or_seeds() -> None:
    assert tost([0.9, 0.9], [0.9, 0.9], 0.01).p_value == 0.0
    assert tost([0.9, 0.9], [0.95, 0.95], 0.01).p_value == 1.0
    assert tost([0.9], [0.9, 0.9], 0.01).p_value is None
    assert not tost([0.9], [0.9, 0.9], 0.01).equivalent()
    with pytest.raises(ValueError, match="margin"):
        tost([0.9, 0.9], [0.9, 0.9], 0.0)


def _point(
    opt: str, n: int, seeds: tuple[float, ...], seconds: float, **params: object
) -> TrialPoint:
    return TrialPoint(
        optimizer=opt,
        number=n,
        state="COMPLETE",
        params=dict(params),
        accuracy=sum(seeds) / len(seeds),
        seed_accuracies=seeds,
        train_seconds=seconds,
        samples_per_second=1000.0 / seconds,
        time_to_target_seconds=None,
        curve=(0.5, 0.8),
        # paired against SGD's 3 s: three rounds at exactly that ratio
        paired_ratios=(seconds / 3.0,) * 3,
        paired_costs=(seconds / 3.0,) * 3,
        cost=seconds,
    )


def _texts(data: SweepData, margin: float = 0.01) -> list[str]:
    return [f.text for f in findings(data, margin)]


def _data(*studies: StudyData) -> SweepData:
    return SweepData(
        name="hand", workload="digits-noisy", objective="pareto", base="sgd",
        target_accuracy=0.9, studies=studies, spec={}, environment={}, generated_at="now",
    )  # fmt: skip


def _study(opt: str, *trials: TrialPoint) -> StudyData:
    return StudyData(optimizer=opt, study_name=f"hand/digits-noisy/{opt}", passes_per_step=1.2,
                     trials=trials)  # fmt: skip


SGD = _study("sgd", _point("sgd", 0, (0.79, 0.80, 0.81), 3.0, lr=0.05))
SAM = _study("sam", _point("sam", 0, (0.95, 0.96, 0.97), 10.0, rho=0.5))
LOOKSAM = _study(
    "looksam",
    _point("looksam", 0, (0.94, 0.95, 0.96), 6.0, k=5, alpha=0.7),
    _point("looksam", 1, (0.90, 0.90, 0.90), 4.0, k=10, alpha=0.3),
    _point("looksam", 2, (0.85, 0.86, 0.87), 7.0, k=2, alpha=0.1),  # dominated
)


def test_findings_say_what_the_numbers_support() -> None:
    sentences = _texts(_data(SGD, SAM, LOOKSAM))
    assert (
        "LookSAM (k=5) reaches 99 % of SAM's accuracy in 0.60× its training time (paired step "
        "costs, spread 0.60–0.60)." in sentences
    )
    # 1 point apart over 3 seeds each, p = 0.29: no claim that SAM is better than LookSAM
    assert any("LookSAM and SAM are not significantly different" in s for s in sentences)
    assert not any("SAM is more accurate than LookSAM" in s for s in sentences)
    # 16 points apart, p = 4e-5: that one is said
    assert any(s.startswith("SAM is more accurate than SGD by 16.00 points") for s in sentences)


def test_a_match_is_claimed_only_when_the_equivalence_test_shows_it() -> None:
    entries = {e.optimizer: e for e in leaderboard(_data(SGD, SAM, LOOKSAM))}
    narrow = equivalence_sentence(entries["looksam"], entries["sam"], margin=0.01)
    assert narrow is not None
    assert narrow.kind == "inconclusive"
    assert narrow.text.startswith(
        "These seeds cannot show LookSAM (k=5) matching SAM within 1 point"
    )
    wide = equivalence_sentence(entries["looksam"], entries["sam"], margin=0.05)
    assert wide is not None
    assert wide.kind == "equivalence"
    assert wide.text == (
        "LookSAM (k=5) matches SAM within 5 points of accuracy at 0.60× its cost (-1.00 points, "
        "equivalence test p = 0.004)."
    )
    assert wide.p_value == pytest.approx(0.004, abs=5e-4)
    sentences = _texts(_data(SGD, SAM, LOOKSAM), margin=0.05)
    assert wide.text in sentences
    assert len(sentences) == len(set(sentences))


def test_no_difference_claims_from_single_seeds() -> None:
    one_seed_sam = _study("sam", _point("sam", 0, (0.99,), 10.0, rho=0.5))
    one_seed_sgd = _study("sgd", _point("sgd", 0, (0.50,), 3.0, lr=0.05))
    entries = {e.optimizer: e for e in leaderboard(_data(one_seed_sgd, one_seed_sam))}
    sentence = difference_sentence(entries["sam"], entries["sgd"])
    assert sentence is not None
    assert sentence.kind == "seeds"
    assert "too few seeds" in sentence.text
    assert "more accurate" not in sentence.text


def test_no_comparison_without_a_finished_trial() -> None:
    empty = _study("looksam")
    entries = {e.optimizer: e for e in leaderboard(_data(SAM, empty))}
    assert compare_sentence(entries["looksam"], entries["sam"]) is None
    assert findings(_data(empty)) == []


def test_leaderboard_rows_and_markdown() -> None:
    data = _data(SGD, SAM, LOOKSAM)
    rows = {r["optimizer"]: r for r in leaderboard_rows(data)}
    assert rows["sam"]["accuracy (95% CI)"] == "96.00 ± 2.48 % (search)"
    assert rows["sgd"]["speed vs base (IQR)"] == "1.00× (1.00–1.00)"
    assert rows["sam"]["speed vs base (IQR)"] == "0.30× (0.30–0.30)"
    assert rows["looksam"]["confirmed hyperparameters"] == "alpha=0.7 k=5"
    assert rows["looksam"]["time to target"] == "not reached"
    md = render_markdown(data, findings(data))
    assert md.count("\n| ") == 4  # header + 3 optimizers
    assert "- LookSAM (k=5) reaches 99 %" in md


# ---------------------------------------------------------------------- α = 0.05 boundaries
# Three values a side with sd 1 (se = √(2/3), df = 4): a gap of 2.0 gives t = 2.449, two-sided
# p = 0.070; a gap of 2.3 gives t = 2.817, p = 0.048. scipy's own Welch test is the oracle.


def _welch_p(a: list[float], b: list[float]) -> float:
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def _shifted(values: list[float], by: float) -> list[float]:
    return [v + by for v in values]


BASE = [1.0, 2.0, 3.0]


def test_p_between_005_and_010_is_not_significant() -> None:
    other = _shifted(BASE, 2.0)
    p = _welch_p(other, BASE)
    assert 0.05 < p < 0.10
    test = welch(other, BASE)
    assert test.p_value == pytest.approx(p, rel=1e-9)
    assert not test.significant()


def test_p_just_under_005_is_significant() -> None:
    other = _shifted(BASE, 2.3)
    p = _welch_p(other, BASE)
    assert 0.045 < p < 0.05
    test = welch(other, BASE)
    assert test.p_value == pytest.approx(p, rel=1e-9)
    assert test.significant()


def _tost_p(a: list[float], b: list[float], margin: float) -> float:
    """TOST from two one-sided scipy Welch tests (an oracle independent of stats.py)."""
    from scipy.stats import ttest_ind

    lower = ttest_ind(_shifted(a, margin), b, equal_var=False, alternative="greater").pvalue
    upper = ttest_ind(_shifted(a, -margin), b, equal_var=False, alternative="less").pvalue
    return float(max(lower, upper))


@pytest.mark.parametrize(("margin", "equivalent"), [(2.0, False), (2.25, True)])
def test_equivalence_at_the_005_boundary(margin: float, equivalent: bool) -> None:
    # a − b = −0.5 as in test_equivalence_by_hand: δ = 2.0 gives p = 0.070, δ = 2.25 p = 0.049
    a, b = BASE, _shifted(BASE, 0.5)
    p = _tost_p(a, b, margin)
    assert (0.045 < p < 0.05) if equivalent else (0.05 < p < 0.10)
    test = tost(a, b, margin)
    assert test.p_value == pytest.approx(p, rel=1e-9)
    assert test.equivalent() is equivalent


def test_the_interval_is_the_95_percent_t_interval() -> None:
    from scipy.stats import t as student_t

    values = [0.90, 0.93, 0.91, 0.97]
    sem = statistics.stdev(values) / math.sqrt(4)
    ci = mean_ci(values)
    assert ci.half_width == pytest.approx(student_t.ppf(0.975, 3) * sem, rel=1e-12)
    low, high = student_t.interval(0.95, 3, loc=ci.mean, scale=sem)
    assert ci.mean - ci.half_width == pytest.approx(low, rel=1e-12)
    assert ci.mean + ci.half_width == pytest.approx(high, rel=1e-12)
    narrower = mean_ci(values, level=0.90)
    assert narrower.half_width == pytest.approx(student_t.ppf(0.95, 3) * sem, rel=1e-12)


def _entries(a: tuple[float, ...], b: tuple[float, ...]) -> dict[str, LeaderboardEntry]:
    data = _data(
        _study("sam", _point("sam", 0, b, 10.0, rho=0.5)),
        _study("looksam", _point("looksam", 0, a, 6.0, k=5, alpha=0.7)),
    )
    return {e.optimizer: e for e in leaderboard(data)}


def _said(finding: Finding | None) -> str:
    """The sentence of a finding that must have been made."""
    assert finding is not None
    return finding.text


def test_findings_claim_a_difference_only_below_005() -> None:
    sam = (0.90, 0.91, 0.92)  # sd 0.01: gaps of 0.02 and 0.023 give p = 0.070 and 0.048
    weak, strong = tuple(v + 0.02 for v in sam), tuple(v + 0.023 for v in sam)
    assert 0.05 < _welch_p(list(weak), list(sam)) < 0.10
    assert 0.045 < _welch_p(list(strong), list(sam)) < 0.05
    entries = _entries(weak, sam)
    sentence = _said(difference_sentence(entries["looksam"], entries["sam"]))
    assert sentence.startswith("LookSAM and SAM are not significantly different")
    entries = _entries(strong, sam)
    sentence = _said(difference_sentence(entries["looksam"], entries["sam"]))
    assert sentence.startswith("LookSAM is more accurate than SAM by 2.30 points")


@pytest.mark.parametrize("seeds", [2, 3])
def test_tests_start_at_three_seeds_a_side(seeds: int) -> None:
    assert MIN_SEEDS_FOR_TESTS == 3
    sam = (0.99, 0.98, 0.97)[:seeds]
    cheap = (0.50, 0.52, 0.51)[:seeds]
    entries = _entries(cheap, sam)
    difference = _said(difference_sentence(entries["looksam"], entries["sam"]))
    equivalence = equivalence_sentence(entries["looksam"], entries["sam"])
    if seeds < 3:
        assert "too few seeds (2 and 2)" in difference
        assert equivalence is None
    else:
        assert difference.startswith("SAM is more accurate than LookSAM")
        assert _said(equivalence).startswith("These seeds cannot show LookSAM")


def test_too_few_seeds_on_either_side() -> None:
    entries = _entries((0.50, 0.52, 0.51), (0.99, 0.98))
    sentence = _said(difference_sentence(entries["looksam"], entries["sam"]))
    assert "too few seeds (3 and 2)" in sentence
    assert equivalence_sentence(entries["looksam"], entries["sam"]) is None


def test_a_shown_difference_is_not_followed_by_an_inconclusive_match() -> None:
    data = _data(
        _study("sam", _point("sam", 0, (0.95, 0.96, 0.97), 10.0, rho=0.5)),
        _study("samk", _point("samk", 0, (0.88, 0.89, 0.90), 4.0, k=5, rho=0.5)),
    )
    kinds = [f.kind for f in findings(data)]
    assert "difference" in kinds
    assert "inconclusive" not in kinds
    assert "equivalence" not in kinds
