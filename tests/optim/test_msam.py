"""MSAM: one pass per step, the gradient taken at w̃ = w − ρ·v/‖v‖, w restored exactly.

The reference below is written straight from the formulas: per-tensor Python loops, the global
norm of the momentum by flattening and concatenating, the weights moved in place and restored by
copying a saved clone. It runs 20 steps side by side with the library in float64 on a model with
two param groups (different learning rates) and one parameter that never receives a gradient.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
from _models import (
    BASES,
    CLOSE,
    MOMENTUM_KEY,
    SECOND_GROUP_LR_FACTOR,
    Closure,
    MakeBatch,
    MakeClosure,
    MakeMLP,
    TwoGroupNet,
    assert_tensors_equal,
    build_closure,
    checkpoint_round_trip,
    flat,
    global_norm,
    make_base,
    snapshot,
    step_side_by_side,
)
from torch import Tensor, nn
from torch.testing import assert_close

from looksam import MSAM, SAM, frozen_bn_stats

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 20


class ReferenceMSAM:
    """MSAM as the paper states it, with the weights moved in place and copied back."""

    def __init__(self, base: torch.optim.Optimizer, key: str, rho: float) -> None:
        self.base, self.key, self.rho = base, key, rho
        self.perturbed_steps = 0

    def step(self, closure: Closure) -> Tensor:
        params = [p for g in self.base.param_groups for p in g["params"]]
        saved = [p.detach().clone() for p in params]
        with_v = [(p, self.base.state[p][self.key]) for p in params if p in self.base.state]
        if with_v and self.rho > 0.0:
            v_norm = global_norm(v for _, v in with_v)
            if v_norm > 0.0:
                self.perturbed_steps += 1
                with torch.no_grad():
                    for p, v in with_v:
                        p.sub_(self.rho * v / v_norm)  # w̃ = w − ρ·v/‖v‖
        loss = closure()  # g = ∇L(w̃)
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)
        self.base.step()  # from w, with g
        return loss


def _sgd(params: Any, **kw: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, **{"lr": 0.05, "momentum": 0.9, **kw})


def _momentum(opt: MSAM, model: nn.Module, key: str = "momentum_buffer") -> list[Tensor]:
    return [opt.base.state[p][key] for p in model.parameters()]


# ---------------------------------------------------------------------- the reference trajectory
@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(base_name: str, make_mlp: MakeMLP) -> None:
    """20 steps of MSAM(ρ = 0.5) follow the literal reference to ~1e-10, on SGD (Nesterov,
    weight decay) and AdamW, two groups with different lr and a parameter without gradient."""
    lib_net, ref_net, plain_net = (TwoGroupNet(make_mlp()) for _ in range(3))
    lib = MSAM(lib_net.make_base(base_name), rho=0.5)
    ref = ReferenceMSAM(ref_net.make_base(base_name), MOMENTUM_KEY[base_name], rho=0.5)
    plain = plain_net.make_base(base_name)
    lr = BASES[base_name]["lr"]
    assert [g["lr"] for g in lib.param_groups] == [lr, lr * SECOND_GROUP_LR_FACTOR]

    for t in range(STEPS):
        x, y = step_side_by_side(t, lib, lib_net, ref, ref_net)
        plain.step(build_closure(plain_net, plain, x, y))

    assert ref.perturbed_steps == STEPS - 1  # every step but the first was perturbed
    assert lib.steps_done == STEPS
    lib_net.assert_never_used_untouched()
    assert lib_net.never_used not in lib.base.state
    # Not vacuous: MSAM left the plain optimizer's trajectory.
    gap = (flat(lib_net.parameters()) - flat(plain_net.parameters())).norm()
    assert gap > 1e-3


# ---------------------------------------------------------------------- closure and passes
def test_one_closure_call_per_step(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """The closure runs exactly once per step, outside any "second pass"; ``step`` returns that
    call's loss and the schedule never asks for a look step."""
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=1.0)
    x, y = make_batch()
    record: list[Tensor] = []
    inner = make_closure(model, opt, x, y, record)
    flags: list[tuple[bool, bool]] = []

    def closure() -> Tensor:
        flags.append((opt.in_second_pass, opt.is_perturbed))
        return inner()

    for t in range(6):
        assert opt.steps_done == t
        assert not opt.is_look_step
        record.clear()
        loss = opt.step(closure)
        assert len(record) == 1
        assert loss is record[0]
        assert not opt.is_perturbed
    assert flags == [(False, True)] * 6


def test_first_step_has_no_perturbation(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """Step 0 (no momentum yet) takes the gradient at w itself, in w's own storage, and equals
    the base optimizer's first step bit for bit."""
    model, twin = make_mlp(), make_mlp()
    opt, plain = MSAM(_sgd(model.parameters()), rho=3.0), _sgd(twin.parameters())
    x, y = make_batch()
    w0 = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    seen: list[bool] = []
    inner = build_closure(model, opt, x, y)

    def closure() -> Tensor:
        seen.append(
            all(torch.equal(p, w) for p, w in zip(model.parameters(), w0, strict=True))
            and [p.data_ptr() for p in model.parameters()] == pointers
        )
        return inner()

    opt.step(closure)
    plain.step(build_closure(twin, plain, x, y))
    assert seen == [True]
    assert_tensors_equal(model.parameters(), twin.parameters())


@pytest.mark.parametrize("base_name", BASES)
def test_rho_zero_is_the_base_optimizer(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """ρ = 0 (the lower boundary) reproduces the base optimizer bit for bit."""
    model, twin = make_mlp(), make_mlp()
    opt = MSAM(make_base(base_name, model.parameters()), rho=0.0)
    plain = make_base(base_name, twin.parameters())
    for t in range(10):
        x, y = make_batch(100 + t % 3)
        loss = opt.step(build_closure(model, opt, x, y))
        assert torch.equal(loss, plain.step(build_closure(twin, plain, x, y)))
    assert_tensors_equal(model.parameters(), twin.parameters())


# ---------------------------------------------------------------------- w after the step
def _warm(model: nn.Module, opt: MSAM, make_batch: MakeBatch, steps: int = 3) -> None:
    for t in range(steps):
        x, y = make_batch(200 + t)
        opt.step(build_closure(model, opt, x, y))


@pytest.mark.parametrize("base_name", BASES)
def test_gradient_at_w_tilde_update_from_w(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """Inside the closure the weights are w − ρ·v/‖v‖ (new storage); after ``step`` they are
    exactly what the base optimizer computes from w with that gradient, in w's own storage."""
    key = MOMENTUM_KEY[base_name]
    rho = 0.7
    model = make_mlp()
    opt = MSAM(make_base(base_name, model.parameters()), rho=rho)
    _warm(model, opt, make_batch)

    w = snapshot(model)
    v = [t.clone() for t in _momentum(opt, model, key)]
    v_norm = flat(v).norm().item()
    expected_tilde = [wi - rho * vi / v_norm for wi, vi in zip(w, v, strict=True)]
    pointers = [p.data_ptr() for p in model.parameters()]
    twin = copy.deepcopy(model)
    twin_base = make_base(base_name, twin.parameters())
    twin_base.load_state_dict(copy.deepcopy(opt.base.state_dict()))  # no aliasing

    x, y = make_batch(7)
    grads: list[Tensor] = []
    inner = build_closure(model, opt, x, y)

    def closure() -> Tensor:
        now = snapshot(model)
        assert_close(now, expected_tilde, **CLOSE)
        assert all(p.data_ptr() != q for p, q in zip(model.parameters(), pointers, strict=True))
        loss = inner()
        grads.extend(p.grad.detach().clone() for p in model.parameters())  # type: ignore[union-attr]
        return loss

    opt.step(closure)
    assert [p.data_ptr() for p in model.parameters()] == pointers
    for p, g in zip(twin.parameters(), grads, strict=True):
        p.grad = g
    twin_base.step()
    assert_tensors_equal(model.parameters(), twin.parameters())


def test_closure_raising_restores_w(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """An exception in the (perturbed) pass leaves w bit-identical in its own storage, no step
    taken, the momentum untouched; the next step runs normally."""
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=1.0)
    _warm(model, opt, make_batch)
    w, v = snapshot(model), [t.clone() for t in _momentum(opt, model)]
    pointers = [p.data_ptr() for p in model.parameters()]
    x, y = make_batch(5)
    inner = build_closure(model, opt, x, y)

    def failing() -> Tensor:
        assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), w, strict=True))
        inner()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        opt.step(failing)
    assert not opt.is_perturbed
    assert opt.steps_done == 3
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert_tensors_equal(model.parameters(), w)
    assert_tensors_equal(_momentum(opt, model), v)
    opt.step(inner)
    assert opt.steps_done == 4


def test_rho_is_read_at_every_step(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """A warm-up assigns ``opt.rho`` between steps: the perturbation has exactly that length."""
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=5.0)
    _warm(model, opt, make_batch)
    lengths: list[float] = []
    for rho in (0.0, 0.25, 2.0):
        opt.rho = rho
        w = snapshot(model)
        x, y = make_batch(9)
        inner = build_closure(model, opt, x, y)

        def closure(w: list[Tensor] = w, inner: Callable[[], Tensor] = inner) -> Tensor:
            lengths.append((flat(snapshot(model)) - flat(w)).norm().item())
            return inner()

        opt.step(closure)
    assert lengths[0] == 0.0
    assert lengths[1:] == pytest.approx([0.25, 2.0], rel=1e-12)
    opt.rho = -1.0
    with pytest.raises(ValueError, match="rho"):
        opt.step(build_closure(model, opt, *make_batch(9)))
    assert not opt.is_perturbed


# ---------------------------------------------------------------------- ‖v‖ thresholds
def _step_and_measure(model: nn.Module, opt: MSAM, batch: tuple[Tensor, Tensor]) -> list[float]:
    """Run one step; return ‖w̃ − w‖ and whether the storage was swapped (1.0) or not (0.0)."""
    w = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    out: list[float] = []
    inner = build_closure(model, opt, *batch)

    def closure() -> Tensor:
        out.append((flat(snapshot(model)) - flat(w)).norm().item())
        moved = [p.data_ptr() for p in model.parameters()] != pointers
        out.append(1.0 if moved else 0.0)
        return inner()

    opt.step(closure)
    return out


def test_zero_momentum_norm_means_no_perturbation(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """‖v‖ = 0 exactly: w̃ = w, no NaN (the zero guard is taken on the device, so w̃ is a copy of
    w rather than w itself: no host read decides it); a tiny ‖v‖ = 1e-150·√n still gives a
    perturbation of length exactly ρ (no epsilon in the denominator)."""
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=0.5)
    _warm(model, opt, make_batch, steps=1)
    for buf in _momentum(opt, model):
        buf.zero_()
    assert _step_and_measure(model, opt, make_batch(3))[0] == 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())

    for buf in _momentum(opt, model):
        buf.fill_(1e-150)
    length, moved = _step_and_measure(model, opt, make_batch(3))
    assert moved == 1.0
    assert length == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_momentum_means_no_perturbation_elsewhere(
    bad: float, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """A non-finite ‖v‖ scales the perturbation by 0 on the device: every finite entry of v
    leaves its weight exactly at w. (The entry that is not finite gives a NaN there; a run whose
    momentum is not finite has already diverged, and its base step would be NaN anyway.)"""
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=0.5)
    _warm(model, opt, make_batch, steps=1)
    _momentum(opt, model)[0].view(-1)[0] = bad
    w = [p.detach().clone() for p in model.parameters()]
    seen: list[list[Tensor]] = []
    inner = build_closure(model, opt, *make_batch(3))

    def closure() -> Tensor:
        seen.append([p.detach().clone() for p in model.parameters()])
        return inner()

    opt.step(closure)
    (at_pass,) = seen
    assert torch.isnan(at_pass[0].view(-1)[0])
    assert torch.equal(at_pass[0].view(-1)[1:], w[0].view(-1)[1:])
    assert all(torch.equal(a, b) for a, b in zip(at_pass[1:], w[1:], strict=True))


def test_group_without_momentum_is_not_moved(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """Momentum 0 in one group (allowed while another group has some): only the group with a
    momentum is perturbed, and ‖v‖ runs over it alone."""
    model = make_mlp()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    groups: list[dict[str, Any]] = [{"params": first}, {"params": second, "momentum": 0.0}]
    base = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    opt = MSAM(base, rho=0.5)
    _warm(model, opt, make_batch)
    w_first, w_second = [p.detach().clone() for p in first], [p.detach().clone() for p in second]
    inner = build_closure(model, opt, *make_batch(4))
    seen: list[tuple[float, bool]] = []

    def closure() -> Tensor:
        length = (flat([p.detach() for p in first]) - flat(w_first)).norm().item()
        same = all(torch.equal(p, w) for p, w in zip(second, w_second, strict=True))
        seen.append((length, same))
        return inner()

    opt.step(closure)
    assert seen[0][0] == pytest.approx(0.5, rel=1e-12)
    assert seen[0][1]


# ---------------------------------------------------------------------- two-phase API
def test_two_phase_api_matches_closure(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """perturb() → forward/backward → step() is step(closure), bit for bit; perturb() twice is
    perturb() once."""
    model, twin = make_mlp(), make_mlp()
    opt, other = MSAM(_sgd(model.parameters()), rho=1.0), MSAM(_sgd(twin.parameters()), rho=1.0)
    for t in range(5):
        x, y = make_batch(300 + t)
        opt.step(build_closure(model, opt, x, y))
        other.perturb()
        if t % 2:
            other.perturb()
        assert other.is_perturbed
        build_closure(twin, other, x, y)()
        assert other.step() is None
    assert other.steps_done == 5
    assert_tensors_equal(model.parameters(), twin.parameters())


def test_step_without_closure_or_perturb_raises(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """Gradients from a plain backward (at w) are not MSAM's: ``step()`` refuses, says what to
    do, and changes nothing; ``restore()`` undoes a perturbation without stepping."""
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=1.0)
    _warm(model, opt, make_batch)
    w = snapshot(model)
    build_closure(model, opt, *make_batch(1))()
    with pytest.raises(RuntimeError, match=r"closure.*perturb\(\)"):
        opt.step()
    assert opt.steps_done == 3
    opt.perturb()
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), w, strict=True))
    opt.restore()
    opt.restore()  # a no-op the second time
    assert_tensors_equal(model.parameters(), w)
    with pytest.raises(RuntimeError, match="perturb"):
        opt.step()


def test_first_step_is_not_part_of_msam(make_mlp: MakeMLP) -> None:
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=1.0)
    with pytest.raises(RuntimeError, match="first_step"):
        opt.first_step()
    assert not opt.is_look_step
    assert not opt.in_second_pass


def test_base_step_is_used_and_unscale_never_called(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    model, twin = make_mlp(), make_mlp()
    opt, other = MSAM(_sgd(model.parameters()), rho=1.0), MSAM(_sgd(twin.parameters()), rho=1.0)
    calls: list[str] = []

    def base_step() -> None:
        calls.append("base_step")
        opt.base.step()

    for t in range(3):
        x, y = make_batch(t)
        opt.step(
            build_closure(model, opt, x, y), base_step=base_step, unscale=lambda: calls.append("x")
        )
        other.step(build_closure(twin, other, x, y))
    assert calls == ["base_step"] * 3
    assert_tensors_equal(model.parameters(), twin.parameters())


def test_grad_scaler_recipe(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """The runner's fp16 recipe (scaled backward, ``base_step=scaler.step(base)``) equals the
    unscaled run exactly (power-of-two scale), and an overflowing pass skips the update with w
    restored."""
    model, twin = make_mlp(), make_mlp()
    opt, other = MSAM(_sgd(model.parameters()), rho=1.0), MSAM(_sgd(twin.parameters()), rho=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)

    def scaled_closure(x: Tensor, y: Tensor, poison: bool = False) -> Callable[[], Tensor]:
        def closure() -> Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss * (float("inf") if poison else 1.0)).backward()
            return loss.detach()

        return closure

    def fp16_step(closure: Callable[[], Tensor]) -> None:
        opt.step(
            closure,
            base_step=lambda: scaler.step(opt.base),
            unscale=lambda: scaler.unscale_(opt),
        )
        scaler.update()

    for t in range(5):
        x, y = make_batch(t)
        fp16_step(scaled_closure(x, y))
        other.step(build_closure(twin, other, x, y))
    assert_tensors_equal(model.parameters(), twin.parameters())

    w, v = snapshot(model), [t.clone() for t in _momentum(opt, model)]
    fp16_step(scaled_closure(*make_batch(0), poison=True))
    assert scaler.get_scale() == 2.0**11
    assert_tensors_equal(model.parameters(), w)
    assert_tensors_equal(_momentum(opt, model), v)


# ---------------------------------------------------------------------- BatchNorm
def test_batchnorm_stats_update_on_the_single_pass() -> None:
    """The runner's closure freezes BN only when ``in_second_pass``: for MSAM that is never, so
    every step's (perturbed) pass updates the running statistics once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2)).double()
    opt = MSAM(_sgd(model.parameters()), rho=1.0)
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d)
    gen = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(32, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    means: list[Tensor] = []

    def closure() -> Tensor:
        opt.zero_grad()
        with frozen_bn_stats(model, enabled=opt.in_second_pass):
            loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(4):
        means.append(cast(Tensor, bn.running_mean).clone())
        opt.step(closure)
    means.append(cast(Tensor, bn.running_mean).clone())
    assert int(cast(Tensor, bn.num_batches_tracked)) == 4
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(means))


# ---------------------------------------------------------------------- checkpointing
@pytest.mark.parametrize("base_name", BASES)
def test_state_dict_resume_is_bit_identical(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """7 steps, serialise model + optimizer, load into fresh objects, 7 more steps on both: the
    resumed run equals the uninterrupted one bit for bit."""
    key = MOMENTUM_KEY[base_name]
    model = make_mlp()
    opt = MSAM(make_base(base_name, model.parameters()), rho=0.8)
    _warm(model, opt, make_batch, steps=7)
    checkpoint = checkpoint_round_trip(model, opt)
    assert checkpoint["opt"]["sam_family"]["steps_done"] == 7
    assert all(key in s for s in checkpoint["opt"]["base"]["state"].values())

    fresh_model = make_mlp(seed=5)
    fresh = MSAM(make_base(base_name, fresh_model.parameters()), rho=0.8)
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(checkpoint["opt"])
    assert fresh.steps_done == 7
    assert fresh.param_groups is fresh.base.param_groups

    for t in range(7, 14):
        x, y = make_batch(200 + t)
        opt.step(build_closure(model, opt, x, y))
        fresh.step(build_closure(fresh_model, fresh, x, y))
    assert_tensors_equal(model.parameters(), fresh_model.parameters())


def test_load_state_dict_undoes_a_pending_perturbation(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    model = make_mlp()
    opt = MSAM(_sgd(model.parameters()), rho=1.0)
    _warm(model, opt, make_batch)
    w, sd = snapshot(model), opt.state_dict()
    opt.perturb()
    opt.load_state_dict(sd)
    assert not opt.is_perturbed
    assert_tensors_equal(model.parameters(), w)


# ---------------------------------------------------------------------- validation
def _param() -> nn.Parameter:
    return nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize("rho", [-1e-12, -1.0, float("nan"), float("inf"), "1", None, True])
def test_bad_rho(rho: Any) -> None:
    with pytest.raises(ValueError, match="rho"):
        MSAM(_sgd([_param()]), rho=rho)


def test_rho_boundaries_accepted() -> None:
    assert MSAM(_sgd([_param()]), rho=0.0).rho == 0.0
    assert MSAM(_sgd([_param()])).rho == 3.0  # the official code's experiments


def test_sgd_without_momentum_rejected() -> None:
    with pytest.raises(ValueError, match=r"momentum=0.*momentum > 0"):
        MSAM(torch.optim.SGD([_param()], lr=0.1), rho=1.0)
    # Boundary: the smallest momentum, or momentum in one group only, is enough.
    mixed: list[dict[str, Any]] = [{"params": [_param()]}, {"params": [_param()], "momentum": 0.9}]
    MSAM(torch.optim.SGD([_param()], lr=0.1, momentum=1e-12), rho=1.0)
    MSAM(
        torch.optim.SGD(mixed, lr=0.1),
        rho=1.0,
    )


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_without_first_moment_rejected(cls: Any) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*betas\[0\]=0"):
        MSAM(cls([_param()], betas=(0.0, 0.999)), rho=1.0)
    MSAM(cls([_param()], betas=(1e-12, 0.999)), rho=1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.optim.RMSprop([_param()], momentum=0.9),
        lambda: torch.optim.Adagrad([_param()]),
        lambda: torch.optim.NAdam([_param()]),
    ],
)
def test_unsupported_base_rejected(make: Callable[[], torch.optim.Optimizer]) -> None:
    base = make()
    with pytest.raises(ValueError, match=rf"SGD.*Adam.*AdamW.*got {type(base).__name__}"):
        MSAM(base, rho=1.0)


def test_not_an_optimizer_or_a_wrapper_rejected() -> None:
    with pytest.raises(ValueError, match=r"torch\.optim\.Optimizer"):
        MSAM([_param()], rho=1.0)
    with pytest.raises(ValueError, match="plain optimizer"):
        MSAM(SAM(_sgd([_param()])), rho=1.0)


def test_repr() -> None:
    assert repr(MSAM(_sgd([_param()]), rho=0.5)) == "MSAM(base=SGD, rho=0.5, steps_done=0)"
