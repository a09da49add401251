"""GSAM against a literal float64 reference, its special cases, GradScaler and checkpointing.

GSAM (Zhuang et al., ICLR 2022): g = ∇L(w), g_s = ∇L(w + ρg/‖g‖),
g_⊥ = g − (⟨g, g_s⟩/‖g_s‖²)·g_s, and the base steps with g_s − α·g_⊥.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from looksam.optim import SAM
from looksam.optim.gsam import GSAM

STEPS = 20
CLOSE: dict[str, Any] = {"rtol": 1e-10, "atol": 1e-12}
F32 = torch.float32
F32_CLOSE: dict[str, Any] = {"rtol": 1e-5, "atol": 1e-6}
SCALE = 2.0**16
LR_FACTOR = 0.3  # the second param group's learning rate, relative to the first

BASES: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda groups: torch.optim.SGD(
        groups, lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True
    ),
    "adamw": lambda groups: torch.optim.AdamW(
        groups, lr=1e-2, weight_decay=1e-2, betas=(0.9, 0.999)
    ),
}


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


class ReferenceGSAM:
    """GSAM written straight from the formulas: per-tensor loops, flattened norms and dots,
    the weights restored by copying a saved clone."""

    def __init__(self, base: torch.optim.Optimizer, *, rho: float, alpha: float) -> None:
        self.base, self.rho, self.alpha = base, rho, alpha

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        loss = closure()
        params = [p for grp in self.base.param_groups for p in grp["params"] if p.grad is not None]
        g = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]
        g_norm = _flat(g).norm().item()
        saved = [p.detach().clone() for p in params]
        if self.rho > 0.0 and g_norm > 0.0:
            with torch.no_grad():
                for p, gi in zip(params, g, strict=True):
                    p.add_(self.rho * gi / g_norm)
        closure()
        g_s = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)
        gs_sq = _flat(g_s).norm().item() ** 2
        beta = torch.dot(_flat(g), _flat(g_s)).item() / gs_sq if gs_sq > 0.0 else 0.0
        g_perp = [gi - beta * gsi for gi, gsi in zip(g, g_s, strict=True)]
        for p, gsi, gpi in zip(params, g_s, g_perp, strict=True):
            p.grad = gsi - self.alpha * gpi
        self.base.step()
        return loss


class TwoGroupNet(nn.Module):
    """The conftest MLP plus a parameter the forward pass never touches (its grad stays None)."""

    def __init__(self, mlp: nn.Sequential) -> None:
        super().__init__()
        self.mlp = mlp
        dtype = next(mlp.parameters()).dtype
        self.never_used = nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)

    def groups(self, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": list(self.mlp[0].parameters())},
            {"params": [*self.mlp[2].parameters(), self.never_used], "lr": lr * LR_FACTOR},
        ]


def _closure(model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(
    base_name: str,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
) -> None:
    """20 steps side by side with the literal reference (ρ = 0.2, α = 0.5), two param groups
    with different learning rates and a parameter that never has a gradient: ~1e-10."""
    lib_net, ref_net, sam_net = (TwoGroupNet(make_mlp()) for _ in range(3))
    unused_before = lib_net.never_used.detach().clone()
    make_base = BASES[base_name]
    lr = make_base([torch.zeros(1, requires_grad=True)]).defaults["lr"]
    lib = GSAM(make_base(lib_net.groups(lr)), rho=0.2, alpha=0.5)
    ref = ReferenceGSAM(make_base(ref_net.groups(lr)), rho=0.2, alpha=0.5)
    sam = SAM(make_base(sam_net.groups(lr)), rho=0.2)
    assert [g["lr"] for g in lib.param_groups] == [lr, lr * LR_FACTOR]

    for t in range(STEPS):
        x, y = make_batch(100 + t % 4)
        lib_loss = lib.step(_closure(lib_net, lib, x, y))
        ref_loss = ref.step(_closure(ref_net, ref.base, x, y))
        sam.step(_closure(sam_net, sam, x, y))
        assert_close(lib_loss, ref_loss, **CLOSE, msg=f"loss differs at step {t}")
        assert_close(
            list(lib_net.parameters()),
            list(ref_net.parameters()),
            **CLOSE,
            msg=f"weights differ after step {t}",
        )
    assert lib_net.never_used.grad is None
    assert torch.equal(lib_net.never_used, unused_before)
    assert lib.steps_done == STEPS
    # Not vacuous: the ascent along g_⊥ moved GSAM well away from SAM's trajectory.
    gap = (_flat(list(lib_net.parameters())) - _flat(list(sam_net.parameters()))).abs().max()
    assert gap.item() > 1e-4


def test_matches_reference_across_dtypes(
    make_batch: Callable[..., tuple[Tensor, Tensor]],
) -> None:
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
    make_mlp: Callable[..., nn.Sequential], make_batch: Callable[..., tuple[Tensor, Tensor]]
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
    g_norm = _flat(list(g_all)).norm().item()  # ε uses every parameter with g
    with torch.no_grad():
        for p, gi in zip(params, g_all, strict=True):
            p.add_(rho * gi / g_norm)
    g_s = torch.autograd.grad(loss_at(False), mlp_params)
    with torch.no_grad():
        for p, w in zip(params, before, strict=True):
            p.copy_(w)
    g = g_all[: len(mlp_params)]
    beta = torch.dot(_flat(list(g)), _flat(list(g_s))).item() / _flat(list(g_s)).norm().item() ** 2
    expected = [
        w - lr * (gs - alpha * (gi - beta * gs)) for w, gi, gs in zip(before, g, g_s, strict=False)
    ]

    opt.step(closure)
    assert extra.grad is None
    assert torch.equal(extra.detach(), before[-1])
    assert_close(mlp_params, expected, **CLOSE)


def test_rho_zero_is_the_base_optimizer(
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
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
    base_name: str,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
) -> None:
    """α = 0 follows SAM's trajectory exactly (torch.equal) over 10 steps."""
    gsam_model, sam_model = make_mlp(), make_mlp()
    gsam = GSAM(BASES[base_name](gsam_model.parameters()), rho=0.1, alpha=0.0)
    sam = SAM(BASES[base_name](sam_model.parameters()), rho=0.1)
    for t in range(10):
        x, y = make_batch(300 + t % 3)
        gsam_loss = gsam.step(make_closure(gsam_model, gsam, x, y))
        sam_loss = sam.step(make_closure(sam_model, sam, x, y))
        assert torch.equal(gsam_loss, sam_loss)
        for a, b in zip(gsam_model.parameters(), sam_model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_closure_called_twice_every_step(
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
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
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
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
        for a, b in zip(closure_model.parameters(), manual_model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_step_without_closure_raises(
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
) -> None:
    model = make_mlp()
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.1))
    make_closure(model, opt, *make_batch())()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    assert opt.steps_done == 0


def test_gradient_views_are_copied_before_the_second_pass(
    make_mlp: Callable[..., nn.Sequential], make_batch: Callable[..., tuple[Tensor, Tensor]]
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
        plain.step(_closure(plain_model, plain, x, y))
        viewed.step(bucket_closure)
    assert_close(list(view_model.parameters()), list(plain_model.parameters()), **CLOSE)


# ---------------------------------------------------------------------- mixed precision


def _runner_step(
    model: nn.Module,
    opt: GSAM,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    second_loss_factor: float = 1.0,
) -> None:
    """The runner's fp16 path: the optimizer runs both passes and is handed the scaler."""

    def closure() -> Tensor:
        opt.zero_grad()
        factor = second_loss_factor if opt.in_second_pass else 1.0
        loss = factor * nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        return loss.detach()

    opt.step(
        closure,
        base_step=lambda: scaler.step(opt.base),
        unscale=lambda: scaler.unscale_(opt),
    )
    scaler.update()


def _two_phase_step(
    model: nn.Module,
    opt: GSAM,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    second_loss_factor: float = 1.0,
) -> None:
    """The README recipe, telling GSAM the scale g_s comes at (g was unscaled before)."""
    opt.zero_grad()
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    scaler.unscale_(opt)
    opt.first_step(grad_scale=scaler.get_scale())
    loss2 = second_loss_factor * nn.functional.mse_loss(model(x), y)
    scaler.scale(loss2).backward()
    opt.second_step(lambda: scaler.step(opt.base))
    scaler.update()


RECIPES = {"runner": _runner_step, "two_phase": _two_phase_step}


@pytest.mark.parametrize("init_scale", [SCALE, 1000.0])
@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_matches_unscaled_steps(
    recipe: str,
    init_scale: float,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
) -> None:
    """Six fp16-recipe steps == six unscaled steps (fp32). Without telling GSAM the scale the α
    term would be off by the scale factor; the runner's path measures it (exactly for a power
    of two), the two-phase API is given it. 1000 is not a power of two."""
    x, y = make_batch(dtype=F32)
    scaled_model, plain_model = make_mlp(dtype=F32), make_mlp(dtype=F32)

    def make(model: nn.Module) -> GSAM:
        return GSAM(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.1, alpha=0.5)

    scaled, plain = make(scaled_model), make(plain_model)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    for _ in range(6):
        RECIPES[recipe](scaled_model, scaled, scaler, x, y)
        plain.step(make_closure(plain_model, plain, x, y))
        if init_scale == SCALE:
            assert scaled._grad_scale == SCALE  # measured exactly, not approximately
    assert scaler.get_scale() == init_scale
    assert scaled.steps_done == plain.steps_done == 6
    assert_close(list(scaled_model.parameters()), list(plain_model.parameters()), **F32_CLOSE)


@pytest.mark.parametrize("factor", [1e37, math.inf])
@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_gs_skips_the_step(
    recipe: str,
    factor: float,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
) -> None:
    """g finite, g_s overflows: w restored bit-for-bit and not updated, the momentum untouched,
    the scale backs off, and the next step trains normally."""
    model = make_mlp(dtype=F32)
    x, y = make_batch(dtype=F32)
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.1, alpha=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    RECIPES[recipe](model, opt, scaler, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    momentum = [opt.base.state[p]["momentum_buffer"].clone() for p in model.parameters()]

    RECIPES[recipe](model, opt, scaler, x, y, second_loss_factor=factor)

    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w)
    for p, m in zip(model.parameters(), momentum, strict=True):
        assert torch.equal(opt.base.state[p]["momentum_buffer"], m)
    assert not opt.in_second_pass
    assert scaler.get_scale() == 2.0**7
    RECIPES[recipe](model, opt, scaler, x, y)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(p, w) for p, w in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_g_skips_the_step(
    recipe: str,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
) -> None:
    """init_scale 3e38 overflows the first backward: no perturbation, no update, the base has no
    state, the scale backs off."""
    model = make_mlp(dtype=F32)
    x, y = make_batch(dtype=F32)
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.1, alpha=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)
    before = [p.detach().clone() for p in model.parameters()]
    RECIPES[recipe](model, opt, scaler, 1e3 * x, y)
    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w)
    assert len(opt.base.state) == 0
    assert scaler.get_scale() < 3e38


def test_bf16_autocast_steps_are_finite(
    make_mlp: Callable[..., nn.Sequential], make_batch: Callable[..., tuple[Tensor, Tensor]]
) -> None:
    """CPU bf16 autocast (fp32 master weights): the steps run, stay fp32 and finite, and move."""
    model = make_mlp(dtype=F32)
    x, y = make_batch(dtype=F32)
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.1, alpha=0.5)
    before = [p.detach().clone() for p in model.parameters()]

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
    base_name: str,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
) -> None:
    """5 steps, torch.save of model and optimizer, a fresh model and GSAM load it, and both
    runs continue identically for 5 more steps."""
    model = make_mlp()
    opt = GSAM(BASES[base_name](model.parameters()), rho=0.1, alpha=0.4)

    def train(model: nn.Module, opt: GSAM, start: int, stop: int) -> None:
        for t in range(start, stop):
            x, y = make_batch(400 + t)
            opt.step(make_closure(model, opt, x, y))

    train(model, opt, 0, 5)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    assert checkpoint["opt"]["sam_family"] == {"steps_done": 5}

    fresh_model = make_mlp(seed=11)
    fresh = GSAM(BASES[base_name](fresh_model.parameters()), rho=0.1, alpha=0.4)
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(copy.deepcopy(checkpoint["opt"]))
    assert fresh.steps_done == 5
    assert fresh.param_groups is fresh.base.param_groups
    train(model, opt, 5, 10)
    train(fresh_model, fresh, 5, 10)
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------- validation


def _base() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=0.1)


@pytest.mark.parametrize("alpha", [-1e-12, -0.5, math.nan, math.inf, "0.2", None, True], ids=repr)
def test_bad_alpha(alpha: Any) -> None:
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0"):
        GSAM(_base(), alpha=alpha)


@pytest.mark.parametrize("rho", [-1e-12, -0.1, math.nan, math.inf, "0.05", None, True], ids=repr)
def test_bad_rho(rho: Any) -> None:
    with pytest.raises(ValueError, match="rho"):
        GSAM(_base(), rho=rho)


def test_boundary_values_are_accepted() -> None:
    """α = 0 (SAM) and ρ = 0 (the base) are valid; the defaults are ρ = 0.05, α = 0.2."""
    opt = GSAM(_base(), rho=0.0, alpha=0.0)
    assert (opt.rho, opt.alpha) == (0.0, 0.0)
    default = GSAM(_base())
    assert (default.rho, default.alpha, default.k) == (0.05, 0.2, 1)
    assert repr(default) == "GSAM(base=SGD, rho=0.05, alpha=0.2, steps_done=0)"


@pytest.mark.parametrize("base", [None, torch.optim.SGD, [nn.Parameter(torch.zeros(2))]])
def test_bad_base(base: Any) -> None:
    with pytest.raises(ValueError, match="base"):
        GSAM(base)


def test_nested_wrapper_is_rejected() -> None:
    with pytest.raises(ValueError, match="plain optimizer"):
        GSAM(SAM(_base()))  # type: ignore[arg-type]


@pytest.mark.parametrize("grad_scale", [0.0, -1.0, math.nan, math.inf, True, "2"], ids=repr)
def test_bad_grad_scale_raises_before_moving(
    grad_scale: Any,
    make_mlp: Callable[..., nn.Sequential],
    make_batch: Callable[..., tuple[Tensor, Tensor]],
    make_closure: Callable[..., Any],
) -> None:
    model = make_mlp()
    opt = GSAM(torch.optim.SGD(model.parameters(), lr=0.1))
    make_closure(model, opt, *make_batch())()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="grad_scale must be a finite number > 0"):
        opt.first_step(grad_scale=grad_scale)
    assert not opt.in_second_pass
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
