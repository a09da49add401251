"""The answer ``advise`` gives, by one published rule (README: "Which SAM should I use?").

Every output (terminal, HTML, Markdown, JSON) and ``advise``'s own loop call :func:`decide`:

1. A candidate is *non-inferior* to the reference (SAM) when a one-sided Welch test rejects
   "candidate ≤ reference − margin" on confirmed per-seed accuracies (:func:`one_sided_welch`;
   with no spread on either side it rejects exactly when the difference is beyond the margin).
2. The recommendation is the cheapest, by paired cost, among the reference and its non-inferior
   candidates (the reference wins ties: it needs no claim).
3. The base recommended: verdict ``base`` (SAM does not pay on this model). Another candidate:
   ``variant``. The reference: ``sam`` when a one-sided Welch test shows it more accurate than
   the base, else ``inconclusive``, with the seeds that would likely settle it.

Seeds are added while ``advise`` runs, and only where they can change the answer, so the tests
are corrected for looking more than once and for testing several candidates. Tests happen only
at fixed *looks* (:data:`LOOKS` seeds per arm, each arm's first seeds). Each look spends
α / L (Bonferroni over the L looks): the reference-vs-base test at that level, the m candidates'
non-inferiority tests by Holm's step-down at that level. A candidate is non-inferior once any
look rejects for it. By the union bound the chance that any truly inferior candidate is declared
non-inferior is at most α, however seeds were allotted between looks, since each look's test of
an arm uses a fixed number of its first seeds (an arm not tested at a look counts as p = 1,
which only makes Holm stricter). ``tests/reports/test_advice.py`` checks this by simulation.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from looksam.reports.leaderboard import format_params, leaderboard, optimizer_label
from looksam.reports.model import SweepData, TrialPoint
from looksam.reports.summary import best_trial, cost_vs_base
from looksam.stats import (
    EXACT_TOLERANCE,
    MeanCI,
    mean_ci,
    one_sided_welch,
    seeds_to_show,
)

#: Seeds per arm at which the tests look; the last is the most seeds ``advise`` gives an arm.
LOOKS = (3, 6, 10)
#: A candidate whose best search accuracy trails the reference's search best by more than this
#: many margins is not confirmed: fresh seeds are better spent where they can decide. The
#: choice uses only the search's seeds, so the confirmation's tests stay exact.
SCREEN_MARGINS = 3.0
#: The error rate the whole procedure is held to (every look and candidate together).
ALPHA = 0.05
VERDICTS = ("base", "variant", "sam", "inconclusive", "none")
ROLES = ("reference", "base", "candidate")


@dataclass(frozen=True)
class Arm:
    """One candidate's confirmed configuration: what the rule needs to know of it."""

    optimizer: str
    label: str  # how sentences name it ("LookSAM")
    params: dict[str, Any]  # everything it trained with
    accuracies: tuple[float, ...]  # confirmed per-seed accuracies, in seed order (fractions)
    cost: float | None  # paired per-sample cost against the base (median), None: unknown
    cost_spread: tuple[float, float] | None = None  # its quartiles
    failed_runs: int = 0  # confirmation runs that diverged: such a configuration is not advised
    cost_source: str = "paired"  # "paired" (its own trials) or "bench" (advise's cost bench)

    @property
    def mean(self) -> float | None:
        """Mean confirmed accuracy."""
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def accuracy(self) -> MeanCI | None:
        """Mean ± 95 % t-interval of the confirmed accuracies."""
        return mean_ci(self.accuracies) if self.accuracies else None


@dataclass(frozen=True)
class Judged:
    """One arm after the rule: its role, its non-inferiority test and the level it was held to."""

    arm: Arm
    role: str  # one of ROLES
    p_noninferior: float | None  # at the look that decided it, else at its last look
    alpha: float | None  # the corrected level that p was compared with
    noninferior: bool
    look: int | None  # seeds per arm at that look (None: never tested)


@dataclass(frozen=True)
class Advice:
    """The verdict, the recommended arm and every arm's evidence."""

    verdict: str  # one of VERDICTS
    recommended: str | None
    reference: str
    base: str
    margin: float  # accuracy as a fraction: 0.01 is one point
    judged: tuple[Judged, ...]
    p_sam_vs_base: float | None
    alpha_sam_vs_base: float
    sam_beats_base: bool
    #: inconclusive: seeds per arm that would likely show the reference better than the base.
    seeds_to_settle: int | None
    looks: tuple[int, ...] = LOOKS
    family_size: int = 0
    alpha: float = ALPHA
    #: Candidates the confirmation left out (:func:`screen`), with why.
    screened: tuple[tuple[str, str], ...] = field(default=())

    def arm(self, optimizer: str) -> Judged | None:
        """The judged arm of ``optimizer``."""
        return next((j for j in self.judged if j.arm.optimizer == optimizer), None)

    @property
    def chosen(self) -> Judged | None:
        """The recommended arm."""
        return None if self.recommended is None else self.arm(self.recommended)


def screen(
    search_best: Mapping[str, float | None], *, reference: str, base: str, margin: float
) -> dict[str, str]:
    """The candidates the confirmation leaves out, with why: those with no finished search
    trial, and those whose best search accuracy trails the reference's by more than
    :data:`SCREEN_MARGINS` margins. The reference and the base are always confirmed."""
    bar = search_best.get(reference)
    out = {}
    for name, accuracy in search_best.items():
        if name in (reference, base):
            continue
        if accuracy is None:
            out[name] = "no search trial finished"
        elif bar is not None and accuracy < bar - SCREEN_MARGINS * margin - EXACT_TOLERANCE:
            out[name] = (
                f"its search best {100 * accuracy:.2f} % trails {reference}'s "
                f"{100 * bar:.2f} % by {100 * (bar - accuracy):.2f} points"
            )
    return out


def _holm(
    pvalues: Mapping[str, float], level: float, family: int
) -> dict[str, tuple[bool, float]]:
    """Holm's step-down at ``level`` over a family of ``family`` hypotheses, of which
    ``pvalues`` are the tested ones (the others count as p = 1): name -> (rejected, threshold)."""
    out: dict[str, tuple[bool, float]] = {}
    going = True
    for rank, (name, p) in enumerate(sorted(pvalues.items(), key=lambda kv: (kv[1], kv[0]))):
        threshold = level / max(1, family - rank)
        going = going and p <= threshold
        out[name] = (going, threshold)
    return out


def _cost_key(arm: Arm) -> float:
    return float("inf") if arm.cost is None else arm.cost


def decide(
    arms: Sequence[Arm],
    *,
    reference: str,
    base: str,
    margin: float,
    looks: Sequence[int] = LOOKS,
    alpha: float = ALPHA,
    family_size: int | None = None,
) -> Advice:
    """Apply the rule to the confirmed seeds of ``arms`` (see the module docstring).

    Args:
        arms: every candidate, the reference and the base included.
        margin: accuracy as a fraction (0.01 is one point), > 0.
        looks: seeds per arm at which tests look, increasing.
        family_size: candidates whose non-inferiority is tested (fixed before any seed was
            seen: ``advise``'s plan); default: every arm but the reference.
    """
    if not margin > 0:
        raise ValueError(f"the margin must be > 0, got {margin!r}")
    by_name = {a.optimizer: a for a in arms}
    if reference not in by_name or base not in by_name:
        raise ValueError("the reference and the base must both be among the arms")
    ref = by_name[reference]
    others = [a for a in arms if a.optimizer != reference]
    family = len(others) if family_size is None else max(family_size, len(others))
    level = alpha / len(looks)
    state: dict[str, tuple[float | None, float | None, bool, int | None]] = {
        a.optimizer: (None, None, False, None) for a in others
    }
    p_sam: float | None = None
    beats = False
    for n in looks:
        if len(ref.accuracies) < n:
            break
        head = ref.accuracies[:n]
        tested = {
            a.optimizer: one_sided_welch(a.accuracies[:n], head, margin).p_value
            for a in others
            if len(a.accuracies) >= n
        }
        holm = _holm({k: v for k, v in tested.items() if v is not None}, level, family)
        for name, (rejected, threshold) in holm.items():
            if state[name][2]:
                continue  # shown at an earlier look: that look's numbers stand
            state[name] = (tested[name], threshold, rejected, n)
        base_arm = by_name[base]
        if len(base_arm.accuracies) >= n and not beats:
            p_sam = one_sided_welch(head, base_arm.accuracies[:n]).p_value
            beats = p_sam is not None and p_sam <= level
    judged = [
        Judged(ref, "reference", None, None, False, None),
        *(
            Judged(a, "base" if a.optimizer == base else "candidate", *state[a.optimizer])
            for a in others
        ),
    ]
    eligible = [ref] + [
        j.arm for j in judged if j.noninferior and j.arm.failed_runs == 0 and j.arm.accuracies
    ]
    order = {a.optimizer: i for i, a in enumerate(eligible)}
    if not ref.accuracies:
        verdict, recommended = "none", None
    else:
        best = min(eligible, key=lambda a: (_cost_key(a), order[a.optimizer]))
        recommended = best.optimizer
        if recommended == base:
            verdict = "base"
        elif recommended != reference:
            verdict = "variant"
        else:
            verdict = "sam" if beats else "inconclusive"
    settle = None
    if verdict == "inconclusive":
        settle = seeds_to_show(ref.accuracies, by_name[base].accuracies, 0.0, level)
    return Advice(
        verdict=verdict,
        recommended=recommended,
        reference=reference,
        base=base,
        margin=margin,
        judged=tuple(judged),
        p_sam_vs_base=p_sam,
        alpha_sam_vs_base=level,
        sam_beats_base=beats,
        seeds_to_settle=settle,
        looks=tuple(looks),
        family_size=family,
        alpha=alpha,
    )


def _next_look(have: int, looks: Sequence[int]) -> int | None:
    return next((n for n in looks if n > have), None)


def _promise(p: float | None, alpha: float | None) -> float:
    """How far a test is from rejecting: p over its level (below 1 would reject)."""
    return float("inf") if p is None or not alpha else p / alpha


def open_comparisons(advice: Advice) -> list[str]:
    """The arms whose next look could still change the answer, the closest to deciding first.

    A candidate is open when it is cheaper than the recommendation, not yet shown non-inferior,
    below the last look, free of failed runs, and its observed accuracy lies within the margin
    of the reference's (more seeds are unlikely to show one that is behind by more). When the
    reference is recommended without beating the base, the base is open too while the reference
    is ahead of it. The order is by p-value over the level it must reach (ties: cheaper
    first): seeds go where they most likely settle the answer, not evenly.
    """
    chosen = advice.chosen
    ref = advice.arm(advice.reference)
    if chosen is None or ref is None or ref.arm.mean is None:
        return []
    limit = advice.looks[-1]
    promise: dict[str, float] = {}
    for j in advice.judged:
        a = j.arm
        if j.role == "reference" or j.noninferior or a.failed_runs or a.mean is None:
            continue
        if len(a.accuracies) >= limit or _cost_key(a) >= _cost_key(chosen.arm):
            continue
        if a.mean - ref.arm.mean + advice.margin > 0:
            promise[a.optimizer] = _promise(j.p_noninferior, j.alpha)
    base = advice.arm(advice.base)
    if (
        advice.verdict == "inconclusive"
        and base is not None
        and base.arm.mean is not None
        and ref.arm.mean > base.arm.mean
        and len(base.arm.accuracies) < limit
    ):
        settle = _promise(advice.p_sam_vs_base, advice.alpha_sam_vs_base)
        promise[advice.base] = min(promise.get(advice.base, float("inf")), settle)
    arms = {name: advice.arm(name) for name in promise}
    return sorted(
        promise,
        key=lambda name: (promise[name], _cost_key(arms[name].arm)),  # type: ignore[union-attr]
    )


def next_seed_counts(
    advice: Advice, affordable: Callable[[Mapping[str, int]], bool]
) -> dict[str, int]:
    """Seeds per arm for the next look, only where they can change the answer; {} to stop.

    The reference takes part in every comparison, so it always moves to the next look; the open
    comparisons (:func:`open_comparisons`) join it cheapest first while ``affordable`` accepts
    the targets. Once no comparison is open the answer is shown, and seeds left in the budget
    go to the recommended arm and the reference (and the base when SAM is recommended), which
    narrows the intervals the answer quotes without changing it.
    """
    ref = advice.arm(advice.reference)
    if ref is None or advice.chosen is None:
        return {}
    look = _next_look(len(ref.arm.accuracies), advice.looks)
    if look is None:
        return {}
    wanted = open_comparisons(advice)
    narrowing = not wanted
    if narrowing:
        wanted = [advice.recommended or advice.reference]
        if advice.verdict == "sam":
            wanted.append(advice.base)
    targets = {advice.reference: look}
    for name in dict.fromkeys(wanted):
        arm = advice.arm(name)
        if arm is None or len(arm.arm.accuracies) >= look:
            continue
        trial = {**targets, name: look}
        if affordable(trial):
            targets = trial
    if len(targets) == 1 and not (narrowing and advice.recommended == advice.reference):
        return {}  # seeds for the reference alone would decide nothing
    return targets if affordable(targets) else {}


# ---------------------------------------------------------------------- sentences


def _p(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.4f}"


def _points(value: float) -> str:
    return f"{100 * value:g} point{'s' if abs(100 * value - 1) > 1e-9 else ''}"


def cost_vs_reference(advice: Advice, arm: Arm) -> float | None:
    """``arm``'s paired cost over the reference's (both paired against the base)."""
    ref = advice.arm(advice.reference)
    if ref is None or ref.arm.cost is None or arm.cost is None or ref.arm.cost <= 0:
        return None
    return arm.cost / ref.arm.cost


def sentence(advice: Advice) -> str:
    """The answer in one sentence, with the hyperparameters to train with."""
    ref = advice.arm(advice.reference)
    base = advice.arm(advice.base)
    chosen = advice.chosen
    if chosen is None or ref is None or base is None:
        return (
            f"No answer yet: {advice.reference} has no confirmed run (the confirmation has not "
            "run, or its runs failed), so nothing can be compared with it."
        )
    within = _points(advice.margin)
    params = format_params(chosen.arm.params)
    if advice.verdict in ("base", "variant"):
        relative = cost_vs_reference(advice, chosen.arm)
        at = "" if relative is None else f" at {relative:.2f}× {ref.arm.label}'s cost"
        evidence = (
            f"is within {within} of {ref.arm.label}'s accuracy{at} (non-inferiority "
            f"{_p(chosen.p_noninferior)} ≤ α {chosen.alpha:.4f}, {len(chosen.arm.accuracies)} "
            "seeds each)"
        )
        if advice.verdict == "base":
            return (
                f"{ref.arm.label} does not pay on this model: {chosen.arm.label} ({params}) "
                f"{evidence}."
            )
        return f"Use {chosen.arm.label} ({params}): it {evidence}."
    lead = (ref.arm.mean or 0.0) - (base.arm.mean or 0.0)
    if advice.verdict == "sam":
        return (
            f"Use {ref.arm.label} ({params}): it beats {base.arm.label} by {100 * lead:.2f} "
            f"points ({_p(advice.p_sam_vs_base)} ≤ α {advice.alpha_sam_vs_base:.4f}), and no "
            f"cheaper variant was shown within {within} of it."
        )
    settle = advice.seeds_to_settle
    if settle is None:
        more = " More seeds are unlikely to settle it: SAM is not ahead on these seeds."
    else:
        beyond = settle > advice.looks[-1]
        more = f" About {settle} seeds each would likely settle it" + (
            f" (advise stops at {advice.looks[-1]}: run a sweep with more)." if beyond else "."
        )
    return (
        f"{ref.arm.label} ({params}) is not shown more accurate than {base.arm.label} "
        f"({100 * lead:+.2f} points, {_p(advice.p_sam_vs_base)} > α "
        f"{advice.alpha_sam_vs_base:.4f}), and no cheaper variant was shown within {within} of "
        f"it: the answer is inconclusive.{more}"
    )


def paste_line(advice: Advice) -> str | None:
    """The recommended configuration as the call that builds it (and its batch size)."""
    chosen = advice.chosen
    if chosen is None:
        return None
    from looksam.optim import get_optimizer_info

    params = {k: v for k, v in chosen.arm.params.items() if k != "batch_size"}
    try:
        wraps = get_optimizer_info(chosen.arm.optimizer).wraps_base
    except ValueError:  # a stored run's optimizer this version lacks
        wraps = chosen.arm.optimizer != advice.base
    args = [f'"{chosen.arm.optimizer}"', "model"]
    if wraps:
        args.append(f'base="{advice.base}"')
    args += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in params.items()]
    batch = chosen.arm.params.get("batch_size")
    tail = "" if batch is None else f"  # batch size {batch}"
    return f"create_optimizer({', '.join(args)}){tail}"


def status(advice: Advice, judged: Judged) -> str:
    """One word or two for a table: recommended, non-inferior, not shown, ..."""
    if judged.arm.optimizer == advice.recommended:
        return "recommended"
    if judged.role == "reference":
        return "reference"
    if judged.arm.failed_runs:
        return f"{judged.arm.failed_runs} run(s) failed"
    if not judged.arm.accuracies:
        return "no confirmed run"
    return "non-inferior" if judged.noninferior else "not shown"


def advice_rows(advice: Advice) -> list[dict[str, str]]:
    """The evidence table, one row per arm (terminal, HTML and Markdown print these)."""
    rows = []
    for j in advice.judged:
        a = j.arm
        ci = a.accuracy
        relative = cost_vs_reference(advice, a)
        spread = a.cost_spread
        cost = "-" if a.cost is None else f"{a.cost:.2f}×"
        if a.cost_source != "paired" and a.cost is not None:
            cost += f" ({a.cost_source})"
        test = "-"
        if j.p_noninferior is not None:
            test = f"{_p(j.p_noninferior).removeprefix('p ').removeprefix('= ')}"
            test += "" if j.alpha is None else f" ({j.alpha:.4f})"
        rows.append(
            {
                "optimizer": a.label,
                "accuracy (95% CI)": "-" if ci is None else ci.format(),
                "seeds": str(len(a.accuracies)),
                "× base": cost,
                "× base IQR": "-" if spread is None else f"{spread[0]:.2f}–{spread[1]:.2f}",
                "× ref": "-" if relative is None else f"{relative:.2f}×",
                "p (α)": test,
                "status": status(advice, j),
                "hyperparameters": format_params(a.params),
            }
        )
    for name, why in advice.screened:
        rows.append({"optimizer": optimizer_label(name), "status": f"not confirmed: {why}"})
    return rows


#: Every column of :func:`advice_rows`; "p (α)": the non-inferiority p-value against the
#: reference and, in brackets, the corrected level it was held to.
ADVICE_COLUMNS = (
    "optimizer", "accuracy (95% CI)", "seeds", "× base", "× base IQR", "× ref", "p (α)",
    "status", "hyperparameters",
)  # fmt: skip


def advice_json(advice: Advice) -> dict[str, Any]:
    """The machine-readable part of ``advise --json`` that the rule produces."""
    chosen = advice.chosen
    candidates = []
    for j in advice.judged:
        a = j.arm
        ci = a.accuracy
        low_high = (
            None
            if ci is None or ci.half_width is None
            else [ci.mean - ci.half_width, ci.mean + ci.half_width]
        )
        candidates.append(
            {
                "optimizer": a.optimizer,
                "role": j.role,
                "params": a.params,
                "accuracies": list(a.accuracies),
                "accuracy_mean": a.mean,
                "accuracy_ci95": low_high,
                "seeds": len(a.accuracies),
                "failed_runs": a.failed_runs,
                "cost_vs_base": a.cost,
                "cost_vs_base_iqr": None if a.cost_spread is None else list(a.cost_spread),
                "cost_source": a.cost_source,
                "cost_vs_reference": cost_vs_reference(advice, a),
                "p_noninferior": j.p_noninferior,
                "alpha": j.alpha,
                "look": j.look,
                "noninferior": j.noninferior,
                "status": status(advice, j),
            }
        )
    for name, why in advice.screened:
        candidates.append(
            {
                "optimizer": name,
                "role": "candidate",
                "accuracies": [],
                "seeds": 0,
                "status": "not confirmed",
                "reason": why,
            }
        )
    return {
        "recommendation": {
            "verdict": advice.verdict,
            "optimizer": advice.recommended,
            "params": {} if chosen is None else chosen.arm.params,
            "sentence": sentence(advice),
            "python": paste_line(advice),
        },
        "reference": advice.reference,
        "base": advice.base,
        "margin": 100 * advice.margin,
        "alpha": advice.alpha,
        "looks": list(advice.looks),
        "family_size": advice.family_size,
        "p_sam_vs_base": advice.p_sam_vs_base,
        "alpha_sam_vs_base": advice.alpha_sam_vs_base,
        "sam_beats_base": advice.sam_beats_base,
        "seeds_to_settle": advice.seeds_to_settle,
        "candidates": candidates,
    }


# ---------------------------------------------------------------------- from a stored sweep


def arms_from(data: SweepData) -> list[Arm]:
    """Each study's confirmed configuration as an arm: its confirmation seeds' accuracies and
    its paired cost (from its own uncontended trials; else ``advise``'s cost bench)."""
    bench = (data.advise_settings or {}).get("costs") or {}
    arms = []
    for e in leaderboard(data):
        runs = e.confirmations
        cost = cost_vs_base(e.chosen, runs)
        fallback = bench.get(e.optimizer) or {}
        q1, q3 = fallback.get("q1"), fallback.get("q3")
        spread = None if q1 is None or q3 is None else (float(q1), float(q3))
        arms.append(
            Arm(
                optimizer=e.optimizer,
                label=optimizer_label(e.optimizer),
                # what a confirmation run trained with (the rate scaled to its batch size)
                params=dict(runs[0].params if runs else e.chosen.params if e.chosen else {}),
                accuracies=tuple(r.accuracy for r in runs if r.accuracy is not None),
                cost=cost.ratio if cost is not None else fallback.get("ratio"),
                cost_spread=(cost.low, cost.high) if cost is not None else spread,
                failed_runs=sum(r.state == "FAIL" for r in runs),
                cost_source="paired" if cost is not None else "bench",
            )
        )
    return arms


def search_bests(points: Mapping[str, Iterable[TrialPoint]]) -> dict[str, float | None]:
    """Each optimizer's best search accuracy (what :func:`screen` reads), from its trials."""
    return {
        name: None if (b := best_trial(trials)) is None else b.accuracy
        for name, trials in points.items()
    }


def advice_from(data: SweepData) -> Advice | None:
    """The rule applied to a stored ``advise`` run (None for a plain sweep).

    The confirmed candidates are those :func:`screen` keeps, and they make the family the
    non-inferiority tests are corrected for.
    """
    settings = data.advise_settings
    if not settings:
        return None
    reference, base = settings["reference"], settings["base"]
    margin = float(settings["margin"])
    bests = search_bests({s.optimizer: s.trials for s in data.studies})
    left_out = screen(bests, reference=reference, base=base, margin=margin)
    arms = [a for a in arms_from(data) if a.optimizer not in left_out]
    names = {a.optimizer for a in arms}
    if reference not in names or base not in names:
        return None  # the run stopped before both had a study
    advice = decide(
        arms,
        reference=reference,
        base=base,
        margin=margin,
        looks=tuple(settings.get("looks") or LOOKS),
        alpha=float(settings.get("alpha", ALPHA)),
        family_size=len(arms) - 1,
    )
    return dataclasses.replace(advice, screened=tuple(left_out.items()))
