"""GSAM against a literal float64 reference, its special cases, GradScaler and checkpointing.

GSAM (Zhuang et al., ICLR 2022): g = ∇L(w), g_s = ∇L(w + ρg/‖g‖),
g_⊥ = g − (⟨g, g_s⟩/‖g_s‖²)·g_s, and the base steps with g_s − α·g_⊥.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _models import (
    BASES,
    CLOSE,
    F32,
    SCALE,
    SECOND_GROUP_LR_FACTOR,
    Closure,
    MakeBatch,
    MakeClosure,
    MakeMLP,
    TwoGroupNet,
    assert_tensors_equal,
    base_step_with,
    build_closure,
    check_g_overflow_skips,
    check_gs_overflow_skips,
    check_scaled_matches_unscaled,
    checkpoint_round_trip,
    first_gradient,
    flat,
    global_norm,
    grads_at_offset,
    make_base,
    readme_recipe_step,
    runner_recipe_step,
    snapshot,
    step_side_by_side,
    tiny_sgd,
)
from torch import Tensor, nn
from torch.testing import assert_close

from looksam import GSAM
from looksam.optim import SAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 20


class ReferenceGSAM:
    """GSAM written straight from the formulas: per-tensor loops, flattened norms and dots,
    the weights restored by copying a saved clone."""

    def __init__(self, base: torch.optim.Optimizer, *, rho: float, alpha: float) -> None:
        self.base, self.rho, self.alpha = base, rho, alpha

    def step(self, closure: Closure) -> Tensor:
        loss = closure()
        params, g, g_norm = first_gradient(self.base)
        offsets = None
        if self.rho > 0.0 and g_norm > 0.0:
            offsets = [self.rho * gi / g_norm for gi in g]
        g_s = grads_at_offset(params, offsets, closure)
        gs_sq = global_norm(g_s) ** 2
        beta = torch.dot(flat(g), flat(g_s)).item() / gs_sq if gs_sq > 0.0 else 0.0
        g_perp = [gi - beta * gsi for gi, gsi in zip(g, g_s, strict=True)]
        used = [gsi - self.alpha * gpi for gsi, gpi in zip(g_s, g_perp, strict=True)]
        base_step_with(self.base, params, used)
        return loss


@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(base_name: str, make_mlp: MakeMLP) -> None:
    """20 steps side by side with the literal reference (ρ = 0.2, α = 0.5), two param groups
    with different learning rates and a parameter that never has a gradient: ~1e-10."""
    lib_net, ref_net, sam_net = (TwoGroupNet(make_mlp()) for _ in range(3))
    lib = GSAM(lib_net.make_base(base_name), rho=0.2, alpha=0.5)
    ref = ReferenceGSAM(ref_net.make_base(base_name), rho=0.2, alpha=0.5)
    sam = SAM(sam_net.make_base(base_name), rho=0.2)
    lr = BASES[base_name]["lr"]
    assert [g["lr"] for g in lib.param_groups] == [lr, lr * SECOND_GROUP_LR_FACTOR]

    for t in range(STEPS):
        x, y = step_side_by_side(t, lib, lib_net, ref, ref_net)
        sam.step(build_closure(sam_net, sam, x, y))
    lib_net.assert_never_used_untouched()
    assert lib.steps_done == STEPS
    # Not vacuous: the ascent along g_⊥ moved GSAM well away from SAM's trajectory.
    gap = (flat(lib_net.parameters()) - flat(sam_net.parameters())).abs().max()
    assert gap.item() > 1e-4


def test_matches_reference_across_dtypes(make_batch: MakeBatch) -> None:
    """A float64 layer feeding a float32 one: two (device, dtype) buckets whose norms and dot
    products must be summed into one global value."""

    def build() -> nn.Sequential:
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(5, 8).double(), nn.Tanh(), nn.Linear(8, 3).float())

    def forward(model: nn.Sequential, x: Tensor) -> Tensor:
        return model[2](model[1](model[0](x)).float()).double()

    lib_net, ref_net = build(), build()
    lib = GSAM(torch.optim.SGD(lib_net.parameters(), lr=0.1, momentum=0.9), rho=0.3, alpha=0.6)
    ref = ReferenceGSAM(
        torch.optim.SGD(ref_net.parameters(), lr=0.1, momentum=0.9), rho=0.3, alpha=0.6
    )
    for t in range(6):
        x, y = make_batch(200 + t)

        def closure_for(net: nn.Sequential, opt: Any) -> Callable[[], Tensor]:
            def closure() -> Tensor:
                opt.zero_grad()
                loss = nn.functional.mse_loss(forward(net, x), y)  # noqa: B023
                loss.backward()
                return loss

            return closure

        lib.step(closure_for(lib_net, lib))
        ref.step(closure_for(ref_net, ref.base))
    assert_close(list(lib_net.parameters()), list(ref_net.parameters()), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- special cases


def _problem() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    return a, b, torch.randn(3, generator=gen, dtype=torch.float64)


def _one_param_setup(
    scale_first: float = 1.0, scale_second: float = 1.0
) -> tuple[nn.Parameter, Callable[[], Tensor], GSAM]:
    """w ∈ R³, L = ‖A w − b‖²; the closure multiplies the loss of the first/second pass."""
    a, b, w0 = _problem()
    w = nn.Parameter(w0)
    opt = GSAM(torch.optim.SGD([w], lr=0.1), rho=0.2, alpha=0.4)

    def closure() -> Tensor:
        opt.zero_grad()
        factor = scale_second if opt.in_second_pass else scale_first
        loss = factor * ((a @ w - b) ** 2).sum()
        loss.backward()
        return loss

    return w, closure, opt


def test_zero_gs_takes_g_perp_equal_to_g() -> None:
    """‖g_s‖ = 0: ⟨g, g_s⟩/‖g_s‖² is taken as 0, so g_⊥ = g and the base steps with −α·g."""
    w, closure, opt = _one_param_setup(scale_second=0.0)
    a, b, before = _problem()
    g = 2.0 * a.T @ (a @ before - b)
    opt.step(closure)
    assert_close(w.detach(), before - 0.1 * (-0.4 * g), rtol=1e-14, atol=1e-15)


def test_zero_g_is_a_plain_step_at_w() -> None:
    """‖g‖ = 0: no perturbation, g_⊥ = 0, the base steps with g_s = ∇L(w)."""
    w, closure, opt = _one_param_setup(scale_first=0.0)
    a, b, before = _problem()
    g_at_w = 2.0 * a.T @ (a @ before - b)
    opt.step(closure)
    assert_close(w.detach(), before - 0.1 * g_at_w, rtol=1e-14, atol=1e-15)


def test_gs_parallel_to_g_gives_sam() -> None:
    """g_s ∥ g makes g_⊥ = 0: a 1-D problem, where every vector is parallel, steps like SAM."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(8, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 1, generator=gen, dtype=torch.float64)
    weights = []
    for wrap in (lambda b: GSAM(b, rho=0.3, alpha=0.9), lambda b: SAM(b, rho=0.3)):
        w = nn.Parameter(torch.tensor([0.7], dtype=torch.float64))
        opt = wrap(torch.optim.SGD([w], lr=0.1))

        def closure(w: nn.Parameter = w, opt: Any = opt) -> Tensor:
            opt.zero_grad()
            loss = (torch.tanh(x * w) - y).pow(2).mean()
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(closure)
        weights.append(w.detach().clone())
    assert_close(weights[0], weights[1], rtol=1e-13, atol=1e-15)


def test_parameter_without_gs_keeps_no_grad_and_is_left_out(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """A parameter used in the first pass only has g but no g_s: it is not stepped, and the
    norms and the dot product run over the parameters that have both gradients."""
    model = make_mlp()
    extra = nn.Parameter(torch.full((3,), 0.5, dtype=torch.float64))
    params = [*model.parameters(), extra]
    lr, rho, alpha = 0.1, 0.2, 0.5
    opt = GSAM(torch.optim.SGD(params, lr=lr), rho=rho, alpha=alpha)
    x, y = make_batch()

    def loss_at(with_extra: bool) -> Tensor:
        out = model(x)
        if with_extra:
            out = out + extra
        return nn.functional.mse_loss(out, y)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_at(with_extra=not opt.in_second_pass)
        loss.backward()
        return loss

    mlp_params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    g_all = torch.autograd.grad(loss_at(True), params)
    g_norm = flat(list(g_all)).norm().item()  # ε uses every parameter with g
    with torch.no_grad():
        for p, gi in zip(params, g_all, strict=True):
            p.add_(rho * gi / g_norm)
    g_s = torch.autograd.grad(loss_at(False), mlp_params)
    with torch.no_grad():
        for p, w in zip(params, before, strict=True):
            p.copy_(w)
    g = g_all[: len(mlp_params)]
    beta = torch.dot(flat(list(g)), flat(list(g_s))).item() / flat(list(g_s)).norm().item() ** 2
    expected = [
        w - lr * (gs - alpha * (gi - beta * gs)) for w, gi, gs in zip(before, g, g_s, strict=False)
    ]

    opt.step(closure)
    assert extra.grad is None
    assert torch.equal(extra.detach(), before[-1])
    assert_close(mlp_params, expected, **CLOSE)


def test_rho_zero_is_the_base_optimizer(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """ρ = 0: g_s = g, so g_⊥ = 0 up to rounding and the step is the base optimizer's."""
    x, y = make_batch()
    gsam_model, base_model = make_mlp(), make_mlp()
    opt = GSAM(torch.optim.SGD(gsam_model.parameters(), lr=0.1, momentum=0.9), rho=0.0, alpha=0.5)
    base = torch.optim.SGD(base_model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        opt.step(make_closure(gsam_model, opt, x, y))
        make_closure(base_model, base, x, y)()
        base.step()
    assert_close(list(gsam_model.parameters()), list(base_model.parameters()), **CLOSE)


# ---------------------------------------------------------------------- SAM equivalence, API


@pytest.mark.parametrize("base_name", BASES)
def test_alpha_zero_is_sam_bit_for_bit(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """α = 0 follows SAM's trajectory exactly (torch.equal) over 10 steps."""
    gsam_model, sam_model = make_mlp(), make_mlp()
    gsam = GSAM(make_base(base_name, gsam_model.parameters()), rho=0.1, alpha=0.0)
    sam = SAM(make_base(base_name, sam_model.parameters()), rho=0.1)
    for t in range(10):
        x, y = make_batch(300 + t % 3)
        gsam_loss = gsam.step(make_closure(gsam_model, gsam, x, y))
        sam_loss = sam.step(make_closure(sam_model, sam, x, y))
        assert torch.equal(gsam_loss, sam_loss)
        assert_tensors_equal(gsam_model.parameters(), sam_model.parameters())


def test_closure_called_twice_every_step(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """Exactly two closure calls per step; ``step`` returns the first (the loss at w)."""
    model = make_mlp()
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, alpha=0.3)
    x, y = make_batch()
    record: list[Tensor] = []
    closure = make_closure(model, opt, x, y, record)
    for t in range(6):
        assert opt.is_look_step
        assert opt.steps_done == t
        record.clear()
        loss = opt.step(closure)
        assert len(record) == 2
        assert loss is record[0]
        assert record[1].item() != record[0].item()
    assert opt.steps_done == 6


def test_two_phase_api_matches_step_closure(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """backward → first_step → backward → second_step is bit-identical to step(closure)."""
    x, y = make_batch()
    closure_model, manual_model = make_mlp(), make_mlp()
    by_closure = GSAM(torch.optim.SGD(closure_model.parameters(), lr=0.1, momentum=0.9))
    manual = GSAM(torch.optim.SGD(manual_model.parameters(), lr=0.1, momentum=0.9))
    closure = make_closure(closure_model, by_closure, x, y)
    manual_closure = make_closure(manual_model, manual, x, y)
    for _ in range(5):
        by_closure.step(closure)
        manual_closure()
        manual.first_step()
        assert manual.in_second_pass
        manual_closure()
        manual.second_step()
        assert_tensors_equal(closure_model.parameters(), manual_model.parameters())


def test_step_without_closure_raises(
    make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    model = make_mlp()
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.1))
    make_closure(model, opt, *make_batch())()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    assert opt.steps_done == 0


def test_gradient_views_are_copied_before_the_second_pass(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """DDP(gradient_as_bucket_view=True) by hand: the gradients are views of one flat buffer
    that every backward pass overwrites. GSAM still needs g after the second pass, so the
    result must equal the ordinary run's."""
    x, y = make_batch()
    plain_model, view_model = make_mlp(), make_mlp()
    plain = GSAM(torch.optim.SGD(plain_model.parameters(), lr=0.1), rho=0.2, alpha=0.5)
    viewed = GSAM(torch.optim.SGD(view_model.parameters(), lr=0.1), rho=0.2, alpha=0.5)
    params = list(view_model.parameters())
    buffer = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)

    def bucket_closure() -> Tensor:
        loss = nn.functional.mse_loss(view_model(x), y)
        grads = torch.autograd.grad(loss, params)
        offset = 0
        for p, gi in zip(params, grads, strict=True):
            view = buffer[offset : offset + p.numel()].view_as(p)
            view.copy_(gi)  # the bucket is written in place, as DDP's all-reduce does
            p.grad = view
            offset += p.numel()
        return loss

    for _ in range(4):
        plain.step(build_closure(plain_model, plain, x, y))
        viewed.step(bucket_closure)
    assert_close(list(view_model.parameters()), list(plain_model.parameters()), **CLOSE)


# ---------------------------------------------------------------------- mixed precision


#: The runner's path, and the documented two-phase recipe telling GSAM the scale g_s comes at.
RECIPES = {
    "runner": runner_recipe_step,
    "two_phase": functools.partial(readme_recipe_step, tell_grad_scale=True),
}


def _gsam(model: nn.Module) -> GSAM:
    return GSAM(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.1, alpha=0.5)


@pytest.mark.parametrize("init_scale", [SCALE, 1000.0])
@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_matches_unscaled_steps(recipe: str, init_scale: float) -> None:
    """Six fp16-recipe steps == six unscaled steps (fp32). Without telling GSAM the scale the α
    term would be off by the scale factor; the runner's path measures it (exactly for a power
    of two), the two-phase API is given it. 1000 is not a power of two."""

    def measured_exactly(opt: GSAM) -> None:
        if init_scale == SCALE:
            assert opt._grad_scale == SCALE  # measured exactly, not approximately

    check_scaled_matches_unscaled(_gsam, RECIPES[recipe], init_scale, each_step=measured_exactly)


@pytest.mark.parametrize("factor", [1e37, math.inf])
@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_gs_skips_the_step(recipe: str, factor: float) -> None:
    """g finite, g_s overflows: w restored bit-for-bit and not updated, the momentum untouched,
    the scale backs off, and the next step trains normally."""
    check_gs_overflow_skips(_gsam, RECIPES[recipe], steps_before=1, factor=factor)


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_g_skips_the_step(recipe: str) -> None:
    """init_scale 3e38 overflows the first backward: no perturbation, no update, the base has no
    state, the scale backs off."""
    check_g_overflow_skips(_gsam, RECIPES[recipe])


def test_bf16_autocast_steps_are_finite(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """CPU bf16 autocast (fp32 master weights): the steps run, stay fp32 and finite, and move."""
    model = make_mlp(dtype=F32)
    x, y = make_batch(dtype=F32)
    opt = _gsam(model)
    before = snapshot(model)

    def closure() -> Tensor:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        return loss

    for _ in range(4):
        assert torch.isfinite(opt.step(closure))
    for p, w in zip(model.parameters(), before, strict=True):
        assert p.dtype == F32
        assert torch.isfinite(p).all()
        assert not torch.equal(p, w)


# ---------------------------------------------------------------------- checkpointing


@pytest.mark.parametrize("base_name", BASES)
def test_state_dict_round_trip_resumes_bit_for_bit(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """5 steps, torch.save of model and optimizer, a fresh model and GSAM load it, and both
    runs continue identically for 5 more steps."""
    model = make_mlp()
    opt = GSAM(make_base(base_name, model.parameters()), rho=0.1, alpha=0.4)

    def train(model: nn.Module, opt: GSAM, start: int, stop: int) -> None:
        for t in range(start, stop):
            x, y = make_batch(400 + t)
            opt.step(make_closure(model, opt, x, y))

    train(model, opt, 0, 5)
    checkpoint = checkpoint_round_trip(model, opt)
    assert checkpoint["opt"]["sam_family"] == {"steps_done": 5}

    fresh_model = make_mlp(seed=11)
    fresh = GSAM(make_base(base_name, fresh_model.parameters()), rho=0.1, alpha=0.4)
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(copy.deepcopy(checkpoint["opt"]))
    assert fresh.steps_done == 5
    assert fresh.param_groups is fresh.base.param_groups
    train(model, opt, 5, 10)
    train(fresh_model, fresh, 5, 10)
    assert_tensors_equal(model.parameters(), fresh_model.parameters())


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize("alpha", [-1e-12, -0.5, math.nan, math.inf, "0.2", None, True], ids=repr)
def test_bad_alpha(alpha: Any) -> None:
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0"):
        GSAM(tiny_sgd(), alpha=alpha)


@pytest.mark.parametrize("rho", [-1e-12, -0.1, math.nan, math.inf, "0.05", None, True], ids=repr)
def test_bad_rho(rho: Any) -> None:
    with pytest.raises(ValueError, match="rho"):
        GSAM(tiny_sgd(), rho=rho)


def test_boundary_values_are_accepted() -> None:
    """α = 0 (SAM) and ρ = 0 (the base) are valid; the defaults are ρ = 0.05, α = 0.2."""
    opt = GSAM(tiny_sgd(), rho=0.0, alpha=0.0)
    assert (opt.rho, opt.alpha) == (0.0, 0.0)
    default = GSAM(tiny_sgd())
    assert (default.rho, default.alpha, default.k) == (0.05, 0.2, 1)
    assert repr(default) == "GSAM(base=SGD, rho=0.05, alpha=0.2, steps_done=0)"


@pytest.mark.parametrize("base", [None, torch.optim.SGD, [nn.Parameter(torch.zeros(2))]])
def test_bad_base(base: Any) -> None:
    with pytest.raises(ValueError, match="base"):
        GSAM(base)


def test_nested_wrapper_is_rejected() -> None:
    with pytest.raises(ValueError, match="plain optimizer"):
        GSAM(SAM(tiny_sgd()))  # type: ignore[arg-type]


@pytest.mark.parametrize("grad_scale", [0.0, -1.0, math.nan, math.inf, True, "2"], ids=repr)
def test_bad_grad_scale_raises_before_moving(
    grad_scale: Any, make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    model = make_mlp()
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.1))
    make_closure(model, opt, *make_batch())()
    before = snapshot(model)
    with pytest.raises(ValueError, match="grad_scale must be a finite number > 0"):
        opt.first_step(grad_scale=grad_scale)
    assert not opt.in_second_pass
    assert_tensors_equal(model.parameters(), before)
