"""RST / ``GRST`` (Zhao, Zhang & Hu, arXiv:2203.09962): SAM on the steps a scheduled coin picks.

The reference below is written from the rule: its own CPU generator seeded like the optimizer's,
one uniform draw per step, p(t) from the schedule's formula, then SAM's step (per-tensor loops,
the weights moved in place and copied back) or the bare base step. It runs side by side with the
library in float64 on two param groups and a parameter that never gets a gradient.
"""

from __future__ import annotations

import copy
import itertools
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
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

from looksam.bench.host_reads import count_step_host_reads
from looksam.optim import SAM
from looksam.optim.grst import GRST

#: The numerical tests run on both scalar paths (conftest's ``scalar_path``).
both_paths = pytest.mark.usefixtures("scalar_path")

STEPS = 20
SEED = 1234


class ReferenceRST:
    """RST as stated: X_t ~ Bernoulli(p(t)) from a generator of its own; SAM's step when X_t = 1,
    the base step with g when X_t = 0."""

    def __init__(
        self,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        p_start: float,
        p_end: float,
        schedule: str,
        total_steps: int,
        seed: int,
    ) -> None:
        self.base, self.rho = base, rho
        self.p_start, self.p_end, self.schedule, self.T = p_start, p_end, schedule, total_steps
        self.generator = torch.Generator().manual_seed(seed)
        self.t = 0
        self.coins: list[bool] = []

    def p(self, t: int) -> float:
        a, b, T = self.p_start, self.p_end, self.T
        if a == b:
            return a
        if self.schedule == "piecewise":
            return a if t < T / 2 else b
        u = min(t, T) / T
        if self.schedule == "linear":
            return a + (b - a) * u
        return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * u))  # cosine

    def step(self, closure: Closure) -> Tensor:
        loss = closure()
        u = torch.rand((), generator=self.generator, dtype=torch.float64).item()
        sam = u < self.p(self.t)
        self.coins.append(sam)
        if sam:
            params, g, g_norm = first_gradient(self.base)
            offsets = None
            if self.rho > 0.0 and g_norm > 0.0:
                offsets = [self.rho * gi / g_norm for gi in g]
            base_step_with(self.base, params, grads_at_offset(params, offsets, closure))
        else:
            self.base.step()
        self.t += 1
        return loss


SCHEDULE_CASES = [
    # (schedule, p_start, p_end)
    ("linear", 0.2, 0.9),
    ("cosine", 0.9, 0.1),
    ("piecewise", 0.2, 0.8),
    ("linear", 0.5, 0.5),  # constant
]


@both_paths
@pytest.mark.parametrize(("schedule", "p_start", "p_end"), SCHEDULE_CASES)
@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(
    base_name: str, schedule: str, p_start: float, p_end: float, make_mlp: MakeMLP
) -> None:
    """20 steps side by side with the reference (same seed): the same coins, losses and weights
    to ~1e-10, both kinds of step taken, a parameter without a gradient untouched."""
    lib_net, ref_net = TwoGroupNet(make_mlp()), TwoGroupNet(make_mlp())
    kwargs: dict[str, Any] = {"p_start": p_start, "p_end": p_end, "schedule": schedule}
    lib = GRST(lib_net.make_base(base_name), rho=0.1, total_steps=STEPS, seed=SEED, **kwargs)
    ref = ReferenceRST(
        ref_net.make_base(base_name), rho=0.1, total_steps=STEPS, seed=SEED, **kwargs
    )
    looks = []
    for t in range(STEPS):
        assert lib.probability() == pytest.approx(ref.p(t), abs=1e-15)
        looks.append(lib.is_look_step)
        step_side_by_side(t, lib, lib_net, ref, ref_net)
    assert looks == ref.coins
    assert True in looks
    assert False in looks
    assert lib.sam_steps == sum(ref.coins)
    assert lib.steps_done == STEPS
    lib_net.assert_never_used_untouched()


# ---------------------------------------------------------------------- the boundaries of p


@both_paths
@pytest.mark.parametrize(("p", "twin"), [(0.0, "base"), (1.0, "sam")], ids=["p0_base", "p1_sam"])
@pytest.mark.parametrize("base_name", BASES)
def test_p_zero_is_the_base_and_p_one_is_sam_bit_for_bit(
    base_name: str,
    p: float,
    twin: str,
    make_mlp: MakeMLP,
    make_batch: MakeBatch,
    make_closure: MakeClosure,
) -> None:
    """p = 0: never a SAM step, the bare base optimizer; p = 1: SAM on every step. Same losses
    and weights, exactly, over 10 steps; the closure runs 1 or 2 times per step."""
    rst_model, twin_model = make_mlp(), make_mlp()
    rst = GRST(make_base(base_name, rst_model.parameters()), rho=0.1, p_start=p, p_end=p)
    base = make_base(base_name, twin_model.parameters())
    other: Any = SAM(base, rho=0.1) if twin == "sam" else base
    for t in range(10):
        x, y = make_batch(300 + t % 3)
        record: list[Tensor] = []
        assert torch.equal(
            rst.step(make_closure(rst_model, rst, x, y, record)),
            other.step(make_closure(twin_model, other, x, y)),
        )
        assert len(record) == (2 if p == 1.0 else 1)
        assert_tensors_equal(rst_model.parameters(), twin_model.parameters())
    assert rst.sam_steps == (10 if p == 1.0 else 0)


@pytest.mark.parametrize(
    ("p", "draw", "sam"),
    [
        (0.5, 0.5, False),  # u < p strictly: the coin at p itself is a plain step
        (0.5, math.nextafter(0.5, 0.0), True),
        (0.0, 0.0, False),  # p = 0 never (the smallest draw is 0)
        (1.0, math.nextafter(1.0, 0.0), True),  # p = 1 always (draws are below 1)
    ],
)
def test_the_coin_threshold(p: float, draw: float, sam: bool) -> None:
    opt = GRST(tiny_sgd(), p_start=p, p_end=p, seed=0)
    opt._draw = lambda: draw  # type: ignore[method-assign]
    assert opt.is_look_step is sam


@pytest.mark.parametrize(
    ("schedule", "T", "expected"),
    [
        # p_start = 0.2, p_end = 0.8; (t, p(t)) pairs, including t = 0, T and past T
        ("linear", 10, [(0, 0.2), (5, 0.5), (10, 0.8), (25, 0.8)]),
        ("cosine", 10, [(0, 0.2), (5, 0.5), (10, 0.8), (25, 0.8)]),
        ("piecewise", 10, [(0, 0.2), (4, 0.2), (5, 0.8), (10, 0.8), (11, 0.8)]),
        ("piecewise", 7, [(3, 0.2), (4, 0.8)]),  # 2t < T: step 3 of 7 is still the first half
        ("piecewise", 1, [(0, 0.2), (1, 0.8)]),  # a one-step run: step 0 is the first half
    ],
)
def test_schedule_values(schedule: str, T: int, expected: list[tuple[int, float]]) -> None:
    opt = GRST(tiny_sgd(), p_start=0.2, p_end=0.8, schedule=schedule, total_steps=T)
    for t, p in expected:
        assert opt.probability(t) == pytest.approx(p, abs=1e-12), t
    assert opt.probability() == opt.probability(0) == 0.2


def test_cosine_is_monotone_and_symmetric() -> None:
    opt = GRST(tiny_sgd(), p_start=1.0, p_end=0.0, schedule="cosine", total_steps=100)
    values = [opt.probability(t) for t in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert all(values[t] + values[100 - t] == pytest.approx(1.0) for t in range(101))


def test_constant_schedule_needs_no_total_steps() -> None:
    opt = GRST(tiny_sgd(), p_start=0.3, p_end=0.3, schedule="cosine")
    assert opt.total_steps is None
    assert {opt.probability(t) for t in (0, 10, 10**9)} == {0.3}


# ---------------------------------------------------------------------- the coin


def _spin(opt: GRST, steps: int) -> list[int]:
    """``steps`` steps on a one-parameter quadratic; the closure calls of each."""
    (w,) = opt.param_groups[0]["params"]
    calls = []
    for _ in range(steps):
        n = 0

        def closure() -> Tensor:
            nonlocal n
            n += 1
            opt.zero_grad()
            loss = (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        calls.append(n)
    return calls


def _quadratic(seed: int | None = None, **kwargs: Any) -> GRST:
    w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    return GRST(torch.optim.SGD([w], lr=0.01), seed=seed, **kwargs)


def test_share_of_sam_steps_follows_p() -> None:
    """Over 1500 steps at p = 0.3 the share of SAM steps (and of second closure calls) is within
    4.5 standard deviations of 0.3; the linear 0 → 1 schedule spends about half."""
    opt = _quadratic(seed=7, p_start=0.3, p_end=0.3)
    calls = _spin(opt, 1500)
    assert set(calls) == {1, 2}
    assert opt.sam_steps == calls.count(2)
    assert abs(opt.sam_fraction - 0.3) < 4.5 * math.sqrt(0.3 * 0.7 / 1500)
    ramp = _quadratic(seed=7, p_start=0.0, p_end=1.0, total_steps=1500)
    ramp_calls = _spin(ramp, 1500)
    assert ramp_calls[0] == 1
    assert abs(ramp.sam_fraction - 0.5) < 0.06
    assert sum(c - 1 for c in ramp_calls[:750]) < sum(c - 1 for c in ramp_calls[750:])


def test_one_coin_per_step_however_often_asked() -> None:
    """``is_look_step`` asked many times in a step draws the coin once; the generator advances by
    one draw per step taken, exactly as the reference's."""
    opt = _quadratic(seed=3)
    reference = torch.Generator().manual_seed(3)
    for _ in range(6):
        answers = {opt.is_look_step for _ in range(5)}
        assert len(answers) == 1
        _spin(opt, 1)
        torch.rand((), generator=reference, dtype=torch.float64)
        assert torch.equal(opt._generator.get_state(), reference.get_state())


def test_seeds() -> None:
    """Same seed, same coins; different seeds differ; seed None draws from torch's global RNG, so
    ``torch.manual_seed`` makes a run repeatable and different global seeds differ."""
    coins = {}
    for name, seed in [("a", 11), ("b", 11), ("c", 12)]:
        coins[name] = _spin(_quadratic(seed=seed), 64)
    assert coins["a"] == coins["b"]
    assert coins["a"] != coins["c"]
    runs = []
    for global_seed in (5, 5, 6):
        torch.manual_seed(global_seed)
        opt = _quadratic()
        runs.append((opt.seed, _spin(opt, 64)))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    assert runs[0][1] != runs[2][1]


def test_replay_overrides_the_answer_but_still_draws_the_coin() -> None:
    """Timing's ``replay_look_schedule``: second passes on the steps it names; the coin is drawn
    every step all the same (the generator ends where a plain run's does); None hands back."""
    opt, plain = _quadratic(seed=9), _quadratic(seed=9)
    opt.replay_look_schedule(lambda t: t % 2 == 0)
    assert _spin(opt, 6) == [2, 1, 2, 1, 2, 1]
    assert opt.sam_steps == 3
    _spin(plain, 6)
    assert torch.equal(opt._generator.get_state(), plain._generator.get_state())
    opt.replay_look_schedule(None)
    assert _spin(opt, 20) == _spin(plain, 20)


# ---------------------------------------------------------------------- two-phase API


def test_two_phase_api(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """A plain step takes a manual backward and ``step()``; ``first_step`` on it raises; a SAM
    step needs the closure or ``first_step`` → backward → ``second_step``; both match
    ``step(closure)`` exactly."""
    model, twin = make_mlp(), make_mlp()
    opt = GRST(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.1, seed=4)
    other = GRST(torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9), rho=0.1, seed=4)
    for t in range(12):
        x, y = make_batch(400 + t)
        closure = build_closure(model, opt, x, y)
        closure()
        if opt.is_look_step:
            with pytest.raises(RuntimeError, match="closure"):
                opt.step()
            opt.first_step()
            closure()
            opt.second_step()
        else:
            with pytest.raises(RuntimeError, match="not a look step"):
                opt.first_step()
            assert opt.step() is None
        other.step(build_closure(twin, other, x, y))
        assert_tensors_equal(model.parameters(), twin.parameters())
    assert opt.sam_steps == other.sam_steps
    assert 0 < opt.sam_steps < 12


# ---------------------------------------------------------------------- host reads, GradScaler


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_no_host_read_in_a_step(p: float, make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """The device path (``scalars="device"``) reads nothing back in a step, SAM step or not: the
    coin comes from a CPU generator."""
    model = make_mlp()
    opt = GRST(torch.optim.SGD(model.parameters(), lr=0.1), p_start=p, p_end=p, seed=2)
    opt.scalars = "device"
    with count_step_host_reads(opt) as counter:
        for t in range(8):
            opt.step(build_closure(model, opt, *make_batch(t)))
    assert [s.host_reads for s in counter.steps] == [0] * 8
    if p in (0.0, 1.0):
        assert opt.sam_steps == 8 * p
    else:
        assert 0 < opt.sam_steps < 8


RECIPES = {"runner": runner_recipe_step, "readme": readme_recipe_step}


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_matches_unscaled_steps(recipe: str) -> None:
    """Six fp16-recipe steps == six unscaled steps (same seed: the same coins)."""

    def make(model: nn.Module) -> GRST:
        base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return GRST(base, rho=0.1, seed=21)

    check_scaled_matches_unscaled(make, RECIPES[recipe])


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_gs_skips_the_step(recipe: str) -> None:
    def make(model: nn.Module) -> GRST:
        base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return GRST(base, p_start=1.0, p_end=1.0, seed=0)

    check_gs_overflow_skips(make, RECIPES[recipe], steps_before=2)


# ---------------------------------------------------------------------- checkpointing


def _build(seed: int, **kwargs: Any) -> tuple[nn.Module, GRST]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    return model, GRST(base, rho=0.1, seed=seed, **kwargs)


def _train(model: nn.Module, opt: GRST, make_batch: MakeBatch, start: int, stop: int) -> list[int]:
    calls = []
    for t in range(start, stop):
        record: list[Tensor] = []
        opt.step(build_closure(model, opt, *make_batch(600 + t), record))
        calls.append(len(record))
    return calls


@both_paths
@pytest.mark.parametrize("save_at", [0, 5, 9])
@pytest.mark.parametrize("asked_first", [False, True])
def test_state_dict_round_trip_resumes_bit_for_bit(
    save_at: int, asked_first: bool, make_batch: MakeBatch
) -> None:
    """N = 14 steps straight vs ``save_at`` steps, a checkpoint (``asked_first``: with the next
    step's coin already drawn) loaded into a fresh model and an optimizer built with another
    seed and schedule, then the rest: the same coins and weights, bit for bit."""
    schedule = {"p_start": 0.1, "p_end": 0.9, "schedule": "cosine", "total_steps": 14}
    model, opt = _build(seed=99, **schedule)
    straight_model, straight = _build(seed=99, **schedule)
    expected = _train(straight_model, straight, make_batch, 0, 14)
    assert 1 in expected
    assert 2 in expected

    before = _train(model, opt, make_batch, 0, save_at)
    if asked_first:
        assert opt.is_look_step == (expected[save_at] == 2)
    checkpoint = checkpoint_round_trip(model, opt)
    extra = checkpoint["opt"]["sam_family"]
    assert (extra["steps_done"], extra["seed"], extra["schedule"]) == (save_at, 99, "cosine")
    assert extra["pending_coin"] == ((expected[save_at] == 2) if asked_first else None)

    fresh_model, fresh = _build(seed=5, p_start=0.7, p_end=0.7)
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(copy.deepcopy(checkpoint["opt"]))
    assert (fresh.p_start, fresh.p_end, fresh.total_steps, fresh.seed) == (0.1, 0.9, 14, 99)
    assert fresh.param_groups is fresh.base.param_groups
    after = _train(fresh_model, fresh, make_batch, save_at, 14)
    assert before + after == expected
    assert fresh.sam_steps == straight.sam_steps
    assert_tensors_equal(fresh_model.parameters(), straight_model.parameters())


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("rng_state", None, "rng_state"),
        ("seed", -1, "seed"),
        ("p_start", 1.5, "p_start"),
        ("schedule", "exp", "schedule"),
        ("total_steps", 0, "total_steps"),
    ],
)
def test_load_state_dict_validates_first(key: str, value: Any, match: str) -> None:
    """A checkpoint with an impossible entry is refused before anything is loaded."""
    _, opt = _build(seed=1, p_start=0.2, p_end=0.4, total_steps=10)
    sd = copy.deepcopy(opt.state_dict())
    sd["sam_family"]["steps_done"] = 4
    if value is None:
        del sd["sam_family"][key]
    else:
        sd["sam_family"][key] = value
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    assert (opt.steps_done, opt.p_start, opt.seed) == (0, 0.2, 1)


# ---------------------------------------------------------------------- data-parallel seed


def _seed_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update({"GLOO_SOCKET_IFNAME": "lo"} if os.uname().sysname == "Linux" else {})
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(1000 + rank)  # as the runner does: every rank's global RNG differs
        lines = []
        for seed in (None, 50 + rank):  # drawn from the global RNG, then explicit and different
            opt = GRST(tiny_sgd(), seed=seed)
            lines.append(f"{opt.seed} {[opt.is_look_step, *_spin_coins(opt, 31)]}")
        (Path(out_dir) / f"rank{rank}.txt").write_text("\n".join(lines))
    finally:
        dist.destroy_process_group()


def _spin_coins(opt: GRST, n: int) -> list[bool]:
    coins = []
    for _ in range(n):
        opt.steps_done += 1  # only the coins matter here
        coins.append(opt.is_look_step)
    return coins


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_ranks_share_rank_zeros_seed(tmp_path: Path) -> None:
    """Two gloo ranks whose global RNGs (or explicit seeds) differ: every rank gets rank 0's seed,
    so every rank flips the same coins and takes the same branch."""
    # fork, not spawn: the ranks inherit the imported torch instead of importing it again (seconds)
    mp.start_processes(
        _seed_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork"
    )
    zero, one = ((tmp_path / f"rank{r}.txt").read_text().splitlines() for r in range(2))
    assert zero == one
    assert zero[1].startswith("50 ")
    assert zero[0] != zero[1]


# ---------------------------------------------------------------------- validation

BAD_P = [-1e-12, 1.0 + 1e-12, 2.0, math.nan, math.inf, "0.5", None, True]


@pytest.mark.parametrize("name", ["p_start", "p_end"])
@pytest.mark.parametrize("value", BAD_P, ids=repr)
def test_bad_probability(name: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"p_start": 0.5, "p_end": 0.5, "total_steps": 10, name: value}
    with pytest.raises(ValueError, match=rf"{name} must be a finite number in \[0, 1\]"):
        GRST(tiny_sgd(), **kwargs)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, np.float64(0.25)], ids=repr)
def test_good_probability(value: Any) -> None:
    opt = GRST(tiny_sgd(), p_start=value, p_end=value)
    assert opt.p_start == opt.p_end == float(value)


@pytest.mark.parametrize("schedule", ["constant", "Linear", "", None, 1])
def test_bad_schedule(schedule: Any) -> None:
    with pytest.raises(ValueError, match="schedule must be one of"):
        GRST(tiny_sgd(), schedule=schedule)


def test_total_steps_needed_only_for_a_moving_schedule() -> None:
    with pytest.raises(ValueError, match=r"total_steps must be an integer >= 1.*p_start != p_end"):
        GRST(tiny_sgd(), p_start=0.2, p_end=0.3)
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
            GRST(tiny_sgd(), p_start=0.2, p_end=0.3, total_steps=bad)
    assert GRST(tiny_sgd(), p_start=0.2, p_end=0.3, total_steps=1).total_steps == 1


@pytest.mark.parametrize("seed", [-1, 2**64, 1.0, True, "1"], ids=repr)
def test_bad_seed(seed: Any) -> None:
    with pytest.raises(ValueError, match="seed must be None"):
        GRST(tiny_sgd(), seed=seed)


def test_seed_boundaries_accepted() -> None:
    assert GRST(tiny_sgd(), seed=0).seed == 0
    assert GRST(tiny_sgd(), seed=2**64 - 1).seed == 2**64 - 1


@pytest.mark.parametrize("rho", [-1e-12, math.nan, math.inf, "0.05", None, True], ids=repr)
def test_bad_rho(rho: Any) -> None:
    with pytest.raises(ValueError, match="rho"):
        GRST(tiny_sgd(), rho=rho)


def test_bad_base() -> None:
    with pytest.raises(ValueError, match="base"):
        GRST(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="plain optimizer"):
        GRST(SAM(tiny_sgd()))  # type: ignore[arg-type]


def test_defaults_and_repr() -> None:
    """ρ = 0.05 and p = 0.5 throughout (1.5 passes per step: the paper's headline cost)."""
    opt = GRST(tiny_sgd(), seed=3)
    assert (opt.rho, opt.p_start, opt.p_end, opt.schedule) == (0.05, 0.5, 0.5, "linear")
    assert repr(opt) == (
        "GRST(base=SGD, rho=0.05, p_start=0.5, p_end=0.5, schedule='linear', total_steps=None, "
        "seed=3, steps_done=0, sam_steps=0)"
    )
