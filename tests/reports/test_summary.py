"""The one definition of each summary: best trial, front, knee, headline, paired speed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from looksam.reports.model import TrialPoint
from looksam.reports.summary import (
    best_trial,
    cheapest_within,
    confirm_choice,
    confirm_choices,
    confirmation_runs,
    estimated_seconds,
    headline_accuracy,
    knee,
    pareto_front,
    quiet_seconds_per_sample,
    relative_time,
    speed_vs_base,
)


def point(number: int, accuracy: float | None, cost: float | None, **extra: Any) -> TrialPoint:
    base = TrialPoint(
        optimizer="looksam",
        number=number,
        state="COMPLETE",
        params={},
        accuracy=accuracy,
        seed_accuracies=() if accuracy is None else (accuracy,),
        train_seconds=1.0,
        samples_per_second=1.0,
        time_to_target_seconds=None,
        curve=(),
        cost=cost,
    )
    return replace(base, **extra)


def test_best_is_most_accurate_then_cheaper_then_earlier() -> None:
    points = [point(0, 0.9, 5.0), point(1, 0.95, 9.0), point(2, 0.95, 7.0), point(3, 0.95, 7.0)]
    assert best_trial(points).number == 2
    failed = point(4, 0.99, 1.0, state="FAIL")
    confirm = point(5, 0.99, 1.0, stage="confirm")
    assert best_trial([*points, failed, confirm]).number == 2  # only completed search trials
    assert best_trial([]) is None


def test_time_to_target_best_is_the_cheapest_to_target() -> None:
    points = [
        point(0, 0.99, 5.0, cost_to_target=None),
        point(1, 0.95, 9.0, cost_to_target=3.0),
        point(2, 0.96, 9.0, cost_to_target=3.0),
    ]
    assert best_trial(points, "time-to-target").number == 2


def test_front_holds_only_completed_costed_trials_cheapest_first() -> None:
    points = [
        point(0, 0.90, 1.0),
        point(1, 0.92, 2.0),
        point(2, 0.91, 3.0),  # dominated by 1
        point(3, 0.99, 0.5, state="RUNNING"),  # not complete: never on the front
        point(4, 0.97, None),  # no paired cost
        point(5, 0.95, 4.0),
    ]
    assert [p.number for p in pareto_front(points)] == [0, 1, 5]


def test_knee_is_the_point_farthest_above_the_chord() -> None:
    front = [point(0, 0.80, 1.0), point(1, 0.95, 2.0), point(2, 0.96, 10.0)]
    assert knee(front).number == 1
    assert knee(front[:2]).number == 1  # two points: the more accurate
    assert knee([]) is None
    assert confirm_choice(front, "pareto", "knee").number == 1
    assert confirm_choice(front, "pareto", "best").number == 2
    assert confirm_choice(front, "accuracy", "knee").number == 2  # no front without time
    with pytest.raises(ValueError, match="pick"):
        confirm_choice(front, "pareto", "middle")


def test_headline_uses_the_chosen_trials_confirmation_runs_only() -> None:
    chosen = point(3, 0.99, 1.0, seeds=(0,))
    runs = [
        point(0, 0.90, 1.0, stage="confirm", source_trial=3, seeds=(1,)),
        point(1, 0.92, 1.0, stage="confirm", source_trial=3, seeds=(2,)),
        point(2, 0.50, 1.0, stage="confirm", source_trial=7, seeds=(1,)),  # another choice
        point(
            4,
            None,
            None,
            stage="confirm",
            source_trial=3,
            seeds=(3,),
            state="FAIL",
            failure_reason="diverged",
        ),
        point(
            5,
            None,
            None,
            stage="confirm",
            source_trial=3,
            seeds=(3,),
            state="FAIL",
            failure_reason="interrupted",
        ),
    ]
    mine = confirmation_runs(chosen, runs)
    assert [r.number for r in mine] == [0, 1, 4]
    headline = headline_accuracy(chosen, mine)
    assert headline is not None
    assert headline.confirmed
    assert headline.values == (0.90, 0.92)
    assert headline.mean == pytest.approx(0.91)
    assert headline.failed_runs == 1
    search_only = headline_accuracy(chosen, [])
    assert search_only is not None
    assert not search_only.confirmed
    assert search_only.values == (0.99,)


def test_speed_pools_paired_rounds_of_uncontended_runs_only() -> None:
    chosen = point(0, 0.9, 1.0, paired_ratios=(2.0, 2.0, 10.0), contended=True)
    runs = [
        point(1, 0.9, 1.0, stage="confirm", paired_ratios=(1.9, 2.1)),
        point(2, 0.9, 1.0, stage="confirm", paired_ratios=(2.0,)),
    ]
    speed = speed_vs_base(chosen, runs)
    assert speed is not None
    assert speed.value == pytest.approx(0.5)  # median 2.0 of (1.9, 2.1, 2.0)
    assert speed.rounds == 3
    assert speed.trials == 2
    assert speed.low == pytest.approx(1 / 2.05)
    assert speed.high == pytest.approx(1 / 1.95)
    assert speed_vs_base(chosen, []) is None  # its only timing is contended


def test_relative_time_is_a_ratio_of_paired_costs() -> None:
    a = (point(0, 0.9, 1.0, paired_costs=(1.2, 1.2, 1.2)), [])
    b = (point(1, 0.9, 1.0, paired_costs=(2.0, 2.4, 2.0)), [])
    rel = relative_time(a, b)
    assert rel is not None
    assert rel.ratio == pytest.approx(0.6)
    assert rel.low <= rel.ratio <= rel.high
    assert relative_time(a, (point(2, 0.9, 1.0, contended=True, paired_costs=(1.0,)), [])) is None


def test_quiet_speed_is_the_first_quartile_so_a_long_busy_stretch_cannot_move_it() -> None:
    # three of five pairings busy: a median would say 10; the first quartile stays quiet
    speeds = [1.0, 0.9, 10.0, 12.0, 11.0]
    points = [point(i, 0.9, 1.0, reference_seconds_per_sample=s) for i, s in enumerate(speeds)]
    assert quiet_seconds_per_sample(points) == pytest.approx(1.0)
    one = [point(0, 0.9, 1.0, reference_seconds_per_sample=2.0)]
    assert quiet_seconds_per_sample(one) == pytest.approx(2.0)
    assert quiet_seconds_per_sample([point(0, 0.9, 1.0)]) is None
    assert estimated_seconds(100.0, 1e-3, 64) == pytest.approx(6.4)
    assert estimated_seconds(None, 1e-3, 64) is None
    assert estimated_seconds(float("inf"), 1e-3, 64) is None


def _studies() -> dict[str, list[TrialPoint]]:
    return {
        "sam": [point(0, 0.96, 10.0), point(1, 0.95, 8.0)],
        "sgd": [point(0, 0.90, 3.0), point(1, 0.92, 6.0)],
        "looksam": [
            point(0, 0.97, 9.0),  # the most accurate
            point(1, 0.95, 5.0),  # exactly one point below SAM's best: still within
            point(2, 0.949, 2.0),  # cheapest, but beyond the margin
            point(3, 0.955, 5.0),  # as cheap as #1 and more accurate: wins the tie
        ],
        "samk": [point(0, 0.90, 2.0), point(1, 0.93, 3.0)],  # never within: its best
    }


def test_cheapest_pick_answers_which_configuration_is_as_good_as_sam() -> None:
    chosen = confirm_choices(_studies(), "pareto", "cheapest", reference="sam", base="sgd")
    assert chosen["sam"].number == 0  # the reference: its most accurate
    assert chosen["sgd"].number == 1  # the base: its most accurate
    assert chosen["looksam"].number == 3  # cheapest within 1 point, accuracy breaks the tie
    assert chosen["samk"].number == 1  # nothing within: its most accurate
    wider = confirm_choices(
        _studies(), "pareto", "cheapest", reference="sam", base="sgd", margin=0.0111
    )
    assert wider["looksam"].number == 2  # 0.949 is within 1.11 points of 0.96
    best = confirm_choices(_studies(), "pareto", "best", reference="sam", base="sgd")
    assert best["looksam"].number == 0
    no_reference = confirm_choices(_studies(), "pareto", "cheapest", reference=None, base="sgd")
    assert no_reference["looksam"].number == 0  # no bar: the best trial


def test_exactly_at_the_margin_counts_as_within() -> None:
    # 0.95 = 0.96 - 0.01 in accuracy, though not in floating point
    assert cheapest_within([point(1, 0.95, 5.0)], 0.96 - 0.01) is not None
    assert cheapest_within([point(1, 0.9499, 5.0)], 0.96 - 0.01) is None
