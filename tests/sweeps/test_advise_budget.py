"""advise's budget with a fake clock: parsing, the split, the refusal, re-planning."""

from __future__ import annotations

import pytest

from looksam.sweeps._budget import (
    BETWEEN_RUNS_SECONDS,
    EXTRA_SHARE,
    FINAL_SECONDS,
    SAFETY,
    BudgetClock,
    BudgetTooSmallError,
    format_duration,
    minimum_seconds,
    parse_duration,
    plan_budget,
)

RUNS = {"sgd": 2.0, "sam": 4.0, "looksam": 2.5, "msam": 1.5}  # 10 s a round


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("45", 45), (" 2.5m ", 150)],
)
def test_budgets_people_write(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "-5m", "10x", "1m1m", "m"])
def test_unreadable_budgets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="budget"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0", "0m0s"])
def test_a_budget_of_nothing_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        parse_duration(text)


def test_durations_read_back() -> None:
    assert [format_duration(s) for s in (0, 42.4, 75, 3600, 5400, 3661)] == [
        "0s", "42s", "1m15s", "1h", "1h30m", "1h1m1s",
    ]  # fmt: skip


def test_the_split_gives_each_candidate_equal_trials_and_keeps_a_reserve() -> None:
    plan = plan_budget(300.0, RUNS, spent_seconds=10.0, confirm_seeds=3)
    usable = 300 * SAFETY - 10 - FINAL_SECONDS  # 269
    flexible = usable - 4 * 10.0  # one trial and three seeds of every candidate: 229
    # trials = 1 + ⌊(flexible − 15 % of it) / round⌋ = 1 + ⌊194.65 / 10⌋
    assert plan.search_trials == 1 + int((flexible - EXTRA_SHARE * flexible) // 10)
    assert plan.search_trials == 20
    assert plan.confirm_seconds == pytest.approx(30.0)
    assert plan.search_seconds == pytest.approx(200.0)
    assert plan.extra_seconds == pytest.approx(usable - 40 - 19 * 10)
    assert plan.predicted_seconds == pytest.approx(300 * SAFETY)


def test_a_budget_too_small_is_refused_with_the_budget_it_needs() -> None:
    need = minimum_seconds(RUNS, spent=10.0, confirm_seeds=3)  # (10 + 40 + 6) / 0.95
    assert need == pytest.approx(56 / SAFETY)
    with pytest.raises(BudgetTooSmallError, match="give --budget 1m or more") as refused:
        plan_budget(need - 1, RUNS, 10.0, confirm_seeds=3)
    assert refused.value.needed_seconds == pytest.approx(need)
    just = plan_budget(need + 0.01, RUNS, 10.0, confirm_seeds=3)  # the boundary: one round
    assert just.search_trials == 1


def test_the_search_shrinks_when_runs_take_longer_than_planned() -> None:
    clock = FakeClock()
    plan = plan_budget(300.0, RUNS, 10.0, confirm_seeds=3)
    budget = BudgetClock(plan, clock=clock, spent_before=10.0)
    confirm = dict.fromkeys(RUNS, 3)
    taken = dict.fromkeys(RUNS, 0)
    assert budget.search_trials(taken, confirm, plan.search_trials) == plan.search_trials
    # The first round took twice the prediction: every run is now expected at twice its plan.
    for name, seconds in RUNS.items():
        budget.record(name, 2 * seconds)
        taken[name] = 1
    clock.now += 20.0
    assert budget.pace() == pytest.approx(2.0)
    shrunk = budget.search_trials(taken, confirm, plan.search_trials)
    # what is left after 30 s, the three seeds at 20 s a round and the final 6 s: 20 s rounds
    left = 300 * SAFETY - 30 - FINAL_SECONDS - 3 * 20
    assert shrunk == 1 + int(left // 20)
    assert shrunk < plan.search_trials
    assert budget.affords({"sam": 1})
    assert not budget.affords({"sam": 100})


def test_the_search_never_drops_below_what_a_candidate_has() -> None:
    clock = FakeClock()
    plan = plan_budget(300.0, RUNS, 10.0, confirm_seeds=3)
    budget = BudgetClock(plan, clock=clock, spent_before=10.0)
    clock.now += 400.0  # far beyond the budget
    taken = {"sgd": 5, "sam": 4, "looksam": 4, "msam": 4}
    assert budget.search_trials(taken, dict.fromkeys(RUNS, 3), plan.search_trials) == 5


def test_a_pace_near_the_plan_does_not_flicker() -> None:
    clock = FakeClock()
    plan = plan_budget(300.0, RUNS, 10.0, confirm_seeds=3)
    budget = BudgetClock(plan, clock=clock, spent_before=10.0)
    taken = dict.fromkeys(RUNS, 0)
    trials = plan.search_trials
    for round_ in range(5):
        for name, seconds in RUNS.items():
            wobble = 1.03 if round_ % 2 else 0.97  # ±3 % around the prediction
            budget.record(name, seconds * wobble)
            clock.now += seconds * wobble
            taken[name] += 1
            trials = budget.search_trials(taken, dict.fromkeys(RUNS, 3), trials)
            assert trials == plan.search_trials


def test_a_faster_machine_grows_the_search_but_keeps_the_reserve() -> None:
    clock = FakeClock()
    plan = plan_budget(300.0, RUNS, 10.0, confirm_seeds=3)
    budget = BudgetClock(plan, clock=clock, spent_before=10.0)
    for name, seconds in RUNS.items():
        budget.record(name, seconds / 2)
    clock.now += 5.0
    grown = budget.search_trials(dict.fromkeys(RUNS, 1), dict.fromkeys(RUNS, 3), 20)
    left = 300 * SAFETY - 15 - FINAL_SECONDS - 3 * 5 - plan.extra_seconds
    assert grown == 1 + int(left // 5)
    assert grown > plan.search_trials


def test_elapsed_counts_earlier_attempts_and_the_eta_stops_at_the_budget() -> None:
    clock = FakeClock()
    plan = plan_budget(300.0, RUNS, 10.0, confirm_seeds=3)
    budget = BudgetClock(plan, clock=clock, spent_before=120.0)
    clock.now += 30.0
    assert budget.elapsed() == pytest.approx(150.0)
    assert budget.left() == pytest.approx(150.0)
    assert budget.eta({"sam": 1}) == pytest.approx(4.0 + FINAL_SECONDS)
    assert budget.eta({"sam": 1000}) == pytest.approx(150.0)


def test_affords_counts_the_runs_the_gaps_between_them_and_the_report() -> None:
    clock = FakeClock()
    plan = plan_budget(300.0, RUNS, 10.0, confirm_seeds=3)
    budget = BudgetClock(plan, clock=clock, spent_before=10.0)
    # three runs of SAM at the plan's 4 s, the gaps between them and the final report
    edge = SAFETY * 300 - 3 * 4.0 - 3 * BETWEEN_RUNS_SECONDS - FINAL_SECONDS
    clock.now += edge - 10.0 - 1e-6
    assert budget.affords({"sam": 3})
    clock.now += 1e-3
    assert not budget.affords({"sam": 3})
    assert budget.affords({"sam": 3}, share=1.06)  # the minimum's runs may run a little over
