"""Late-phase SAM: the base optimizer until step ⌈start_fraction·total_steps⌉, SAM from there.

Zhou et al., ICLR 2025. Checked against a literal float64 reference, at the switch boundary,
against SAM and the bare base optimizer, under GradScaler and across a checkpoint.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from _models import (
    BASES,
    Closure,
    MakeBatch,
    MakeClosure,
    MakeMLP,
    TwoGroupNet,
    assert_tensors_equal,
    base_step_with,
    build_closure,
    check_gs_overflow_skips,
    check_scaled_matches_unscaled,
    checkpoint_round_trip,
    first_gradient,
    grads_at_offset,
    make_base,
    readme_recipe_step,
    runner_recipe_step,
    step_side_by_side,
    tiny_sgd,
)
from torch import Tensor, nn

from looksam.optim import SAM
from looksam.optim.late_phase import LatePhaseSAM, switch_step_for

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 20


class ReferenceLatePhaseSAM:
    """The base step with g while t < ⌈f·T⌉ (integer arithmetic), SAM's step with g_s after."""

    def __init__(self, base: torch.optim.Optimizer, *, rho: float, switch_step: int) -> None:
        self.base, self.rho, self.switch_step = base, rho, switch_step
        self.t = 0

    def step(self, closure: Closure) -> Tensor:
        loss = closure()
        if self.t >= self.switch_step:
            params, g, g_norm = first_gradient(self.base)
            offsets = None
            if self.rho > 0.0 and g_norm > 0.0:
                offsets = [self.rho * gi / g_norm for gi in g]
            base_step_with(self.base, params, grads_at_offset(params, offsets, closure))
        else:
            self.base.step()
        self.t += 1
        return loss


@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(base_name: str, make_mlp: MakeMLP) -> None:
    """20 steps (start_fraction 0.4 of 20: base for steps 0–7, SAM for 8–19) side by side with
    the reference, two param groups and a parameter without a gradient: ~1e-10."""
    lib_net, ref_net = TwoGroupNet(make_mlp()), TwoGroupNet(make_mlp())
    lib = LatePhaseSAM(
        lib_net.make_base(base_name), rho=0.1, start_fraction=0.4, total_steps=STEPS
    )
    ref = ReferenceLatePhaseSAM(ref_net.make_base(base_name), rho=0.1, switch_step=8)
    assert lib.switch_step == 8

    for t in range(STEPS):
        assert lib.is_look_step == (t >= 8)
        step_side_by_side(t, lib, lib_net, ref, ref_net)
    lib_net.assert_never_used_untouched()
    assert lib.steps_done == STEPS


# ---------------------------------------------------------------------- the switch step

SWITCHES = [
    # (start_fraction, total_steps, first SAM step)
    (0.0, 7, 0),  # SAM throughout
    (1.0, 7, 7),  # never SAM within the run
    (0.5, 10, 5),  # exact product: the switch step itself is SAM
    (0.3, 7, 3),  # 2.1 rounds up
    (0.875, 200, 175),  # the paper's Fig. 1a: epochs 175–199 of 200
    (0.07, 100, 7),  # binary 0.07 is a hair above 0.07: a float product would give 8
    (0.14, 100, 14),  # 0.14 * 100 == 14.000000000000002 in floats
    (0.29, 100, 29),  # 0.29 * 100 == 28.999999999999996 in floats (int() would give 28)
    (1e-9, 10, 1),  # any positive fraction delays SAM by at least one step
    (0.5, 1, 1),  # a one-step run: ⌈0.5⌉ = 1, no SAM step
    (0.999, 1000, 999),
    (0.9991, 1000, 1000),
]


@pytest.mark.parametrize(("start_fraction", "total_steps", "switch"), SWITCHES)
def test_switch_step(start_fraction: float, total_steps: int, switch: int) -> None:
    assert switch_step_for(start_fraction, total_steps) == switch
    opt = LatePhaseSAM(tiny_sgd(), start_fraction=start_fraction, total_steps=total_steps)
    assert opt.switch_step == switch
    assert switch == math.ceil(Fraction(str(start_fraction)) * total_steps)


@pytest.mark.parametrize(
    ("start_fraction", "total_steps"), [(0.5, 6), (0.0, 4), (1.0, 4), (0.3, 7), (0.34, 3)]
)
def test_closure_calls_per_step(
    start_fraction: float,
    total_steps: int,
    make_mlp: MakeMLP,
    make_batch: MakeBatch,
    make_closure: MakeClosure,
) -> None:
    """One closure call before the switch, two from the switch step on (and past total_steps);
    ``is_look_step`` says which before the step's first pass; the run's passes per step are
    1 + (T − t_s)/T."""
    model = make_mlp()
    opt = LatePhaseSAM(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        rho=0.1,
        start_fraction=start_fraction,
        total_steps=total_steps,
    )
    switch = math.ceil(Fraction(str(start_fraction)) * total_steps)
    record: list[Tensor] = []
    closure = make_closure(model, opt, *make_batch(), record)
    calls = []
    for t in range(total_steps + 2):
        assert opt.is_look_step == (t >= switch)
        record.clear()
        loss = opt.step(closure)
        assert loss is record[0]
        calls.append(len(record))
    assert calls == [1] * switch + [2] * (total_steps + 2 - switch)
    assert sum(calls[:total_steps]) / total_steps == 1 + (total_steps - switch) / total_steps


# ---------------------------------------------------------------------- equivalences


@pytest.mark.parametrize(
    ("start_fraction", "twin"),
    [(0.0, "sam"), (1.0, "base")],
    ids=["start_fraction_zero_is_sam", "start_fraction_one_is_the_base"],
)
@pytest.mark.parametrize("base_name", BASES)
def test_start_fraction_at_the_ends_is_bit_for_bit(
    base_name: str,
    start_fraction: float,
    twin: str,
    make_mlp: MakeMLP,
    make_batch: MakeBatch,
    make_closure: MakeClosure,
) -> None:
    """start_fraction 0 is SAM from the first step, 1 the bare base for the whole run (steps
    past total_steps are SAM steps): same losses and weights, exactly, over 10 steps."""
    late_model, twin_model = make_mlp(), make_mlp()
    late = LatePhaseSAM(
        make_base(base_name, late_model.parameters()),
        rho=0.1,
        start_fraction=start_fraction,
        total_steps=10,
    )
    base = make_base(base_name, twin_model.parameters())
    other: Any = SAM(base, rho=0.1) if twin == "sam" else base
    for t in range(10):
        x, y = make_batch(300 + t % 3)
        assert torch.equal(
            late.step(make_closure(late_model, late, x, y)),
            other.step(make_closure(twin_model, other, x, y)),
        )
        assert_tensors_equal(late_model.parameters(), twin_model.parameters())
    assert late.steps_done == 10
    assert late.switch_step == 10 * start_fraction
    assert late.is_look_step


def test_switch_hands_the_base_state_to_sam_bit_for_bit(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """start 0.5 of 8: four plain base steps, then SAM wrapping that same base (its momentum
    carried over), exactly."""
    late_model, manual_model = make_mlp(), make_mlp()
    late = LatePhaseSAM(
        torch.optim.SGD(late_model.parameters(), lr=0.1, momentum=0.9),
        rho=0.1,
        start_fraction=0.5,
        total_steps=8,
    )
    base = torch.optim.SGD(manual_model.parameters(), lr=0.1, momentum=0.9)
    sam = SAM(base, rho=0.1)
    for t in range(8):
        x, y = make_batch(500 + t)
        late.step(make_closure(late_model, late, x, y))
        if t < 4:
            make_closure(manual_model, base, x, y)()
            base.step()
        else:
            sam.step(make_closure(manual_model, sam, x, y))
        assert_tensors_equal(late_model.parameters(), manual_model.parameters())


# ---------------------------------------------------------------------- two-phase API


def test_plain_steps_accept_manual_backward_and_sam_steps_need_a_closure(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    model = make_mlp()
    opt = LatePhaseSAM(
        torch.optim.SGD(model.parameters(), lr=0.1), start_fraction=0.5, total_steps=4
    )
    closure = make_closure(model, opt, *make_batch())
    for _ in range(2):  # before the switch: backward, then step() with no closure
        closure()
        with pytest.raises(RuntimeError, match=r"not a look step.*until step 2"):
            opt.first_step()
        assert opt.step() is None
    closure()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    assert opt.steps_done == 2
    opt.first_step()  # the two-phase API from the switch on
    closure()
    opt.second_step()
    assert opt.steps_done == 3


# ---------------------------------------------------------------------- mixed precision


RECIPES = {"runner": runner_recipe_step, "readme": readme_recipe_step}


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_matches_unscaled_steps_across_the_switch(recipe: str) -> None:
    """Six fp16-recipe steps (base for 0–2, SAM for 3–5) == six unscaled steps."""

    def make(model: nn.Module) -> LatePhaseSAM:
        base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return LatePhaseSAM(base, rho=0.1, start_fraction=0.5, total_steps=6)

    check_scaled_matches_unscaled(make, RECIPES[recipe])


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_gs_after_the_switch_skips_the_step(recipe: str) -> None:
    """Base steps 0–1, then an overflowing g_s on the first SAM step: skipped, w and the
    momentum untouched, the scale halved, and training goes on."""

    def make(model: nn.Module) -> LatePhaseSAM:
        base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return LatePhaseSAM(base, start_fraction=0.5, total_steps=4)

    check_gs_overflow_skips(make, RECIPES[recipe], steps_before=2)


# ---------------------------------------------------------------------- checkpointing


def _build(total_steps: int = 10, start_fraction: float = 0.5) -> tuple[nn.Module, LatePhaseSAM]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    opt = LatePhaseSAM(base, rho=0.1, start_fraction=start_fraction, total_steps=total_steps)
    return model, opt


def _train(
    model: nn.Module, opt: LatePhaseSAM, make_batch: MakeBatch, start: int, stop: int
) -> list[int]:
    calls = []
    for t in range(start, stop):
        record: list[Tensor] = []
        opt.step(build_closure(model, opt, *make_batch(600 + t), record))
        calls.append(len(record))
    return calls


@pytest.mark.parametrize("save_at", [3, 5, 7])
def test_state_dict_round_trip_resumes_bit_for_bit(save_at: int, make_batch: MakeBatch) -> None:
    """Saved before, at and after the switch (step 5 of 10) and resumed into an optimizer built
    for a different run (total_steps 100, start 0.1): the checkpoint's schedule is restored, the
    resumed run switches at step 5 and follows the uninterrupted one exactly to step 12."""
    model, opt = _build()
    _train(model, opt, make_batch, 0, save_at)
    checkpoint = checkpoint_round_trip(model, opt)
    assert checkpoint["opt"]["sam_family"] == {
        "steps_done": save_at,
        "start_fraction": 0.5,
        "total_steps": 10,
    }

    fresh_model, fresh = _build(total_steps=100, start_fraction=0.1)
    assert fresh.switch_step == 10
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(copy.deepcopy(checkpoint["opt"]))
    assert (fresh.steps_done, fresh.switch_step, fresh.total_steps) == (save_at, 5, 10)
    assert fresh.start_fraction == 0.5
    assert fresh.param_groups is fresh.base.param_groups

    expected_calls = [1 if t < 5 else 2 for t in range(save_at, 12)]
    assert _train(model, opt, make_batch, save_at, 12) == expected_calls
    assert _train(fresh_model, fresh, make_batch, save_at, 12) == expected_calls
    assert_tensors_equal(model.parameters(), fresh_model.parameters())


@pytest.mark.parametrize(("key", "value"), [("total_steps", 0), ("start_fraction", 1.5)])
def test_load_state_dict_validates_the_schedule_first(key: str, value: Any) -> None:
    """A checkpoint with an impossible schedule is refused before anything is loaded."""
    _, opt = _build()
    sd = copy.deepcopy(opt.state_dict())
    sd["sam_family"][key] = value
    sd["sam_family"]["steps_done"] = 4
    with pytest.raises(ValueError, match=key):
        opt.load_state_dict(sd)
    assert (opt.steps_done, opt.switch_step, opt.total_steps) == (0, 5, 10)


# ---------------------------------------------------------------------- validation


BAD_START = [-1e-12, -0.5, 1.0 + 1e-12, 1.5, math.nan, math.inf, -math.inf, "0.5", None, True]
GOOD_START = [0, 0.0, 1, 1.0, 0.5, Fraction(1, 3), np.float64(0.25)]
BAD_TOTAL = [0, -1, 1.5, 2.0, True, False, "10", None, np.float64(3.0), math.inf]
GOOD_TOTAL = [1, 2, np.int64(5), 10**9]


@pytest.mark.parametrize("start_fraction", BAD_START, ids=repr)
def test_bad_start_fraction(start_fraction: Any) -> None:
    with pytest.raises(ValueError, match=r"start_fraction must be a finite number in \[0, 1\]"):
        LatePhaseSAM(tiny_sgd(), start_fraction=start_fraction, total_steps=10)


@pytest.mark.parametrize("start_fraction", GOOD_START, ids=repr)
def test_good_start_fraction(start_fraction: Any) -> None:
    opt = LatePhaseSAM(tiny_sgd(), start_fraction=start_fraction, total_steps=12)
    assert opt.start_fraction == float(start_fraction)
    assert 0 <= opt.switch_step <= 12


@pytest.mark.parametrize("total_steps", BAD_TOTAL, ids=repr)
def test_bad_total_steps(total_steps: Any) -> None:
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        LatePhaseSAM(tiny_sgd(), total_steps=total_steps)


@pytest.mark.parametrize("total_steps", GOOD_TOTAL, ids=repr)
def test_good_total_steps(total_steps: Any) -> None:
    opt = LatePhaseSAM(tiny_sgd(), total_steps=total_steps)
    assert opt.total_steps == int(total_steps)
    assert isinstance(opt.total_steps, int)


def test_total_steps_is_required() -> None:
    with pytest.raises(TypeError, match="total_steps"):
        LatePhaseSAM(tiny_sgd())  # type: ignore[call-arg]


@pytest.mark.parametrize("rho", [-1e-12, math.nan, math.inf, "0.05", None, True], ids=repr)
def test_bad_rho(rho: Any) -> None:
    with pytest.raises(ValueError, match="rho"):
        LatePhaseSAM(tiny_sgd(), rho=rho, total_steps=10)


def test_bad_base() -> None:
    with pytest.raises(ValueError, match="base"):
        LatePhaseSAM(None, total_steps=10)  # type: ignore[arg-type]


def test_defaults_and_repr() -> None:
    """ρ = 0.05 and start_fraction = 0.875 (the paper's Fig. 1a switch) by default; ρ = 0 is
    allowed (the late phase is then the base optimizer with an extra pass)."""
    opt = LatePhaseSAM(tiny_sgd(), total_steps=200)
    assert (opt.rho, opt.start_fraction, opt.switch_step) == (0.05, 0.875, 175)
    assert repr(opt) == (
        "LatePhaseSAM(base=SGD, rho=0.05, start_fraction=0.875, total_steps=200, "
        "switch_step=175, steps_done=0)"
    )
    assert LatePhaseSAM(tiny_sgd(), rho=0.0, total_steps=1).rho == 0.0
