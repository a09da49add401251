"""Mixed precision on CPU: bf16 autocast, and the documented GradScaler recipe.

The scaler applies the final update through the base optimizer::

    scaler.scale(loss).backward()
    if opt.is_look_step:
        scaler.unscale_(opt); opt.first_step(); scaler.scale(loss2).backward()
    opt.second_step(lambda: scaler.step(opt.base)); scaler.update()

It must match unscaled ``step(closure)`` training and, on overflow in either pass, leave the
weights exactly as they were (never at w + ε, never NaN) while the scale backs off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _models import (
    F32,
    SCALE,
    MakeBatch,
    MakeClosure,
    MakeMLP,
    check_g_overflow_skips,
    check_gs_overflow_skips,
    check_scaled_matches_unscaled,
    readme_recipe_step,
    snapshot,
)
from torch import Tensor, nn
from torch.testing import assert_close

from looksam import SAM, LookSAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

RECIPES = {"readme": readme_recipe_step}
WRAPPERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "looksam": lambda b: LookSAM(b, rho=0.05, k=3, alpha=0.7),
    "sam": lambda b: SAM(b, rho=0.05),
}


def _wrapped_sgd(wrapper: str) -> Callable[[nn.Module], Any]:
    """The wrapper around SGD(lr 0.05, momentum 0.9) over a model's parameters."""
    return lambda model: WRAPPERS[wrapper](
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    )


def test_bf16_autocast_looksam_steps_are_finite(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """Under CPU bf16 autocast (fp32 master weights) look and reuse steps run, the weights stay
    fp32, finite and move, and ‖g_v‖ is finite and positive."""
    model = make_mlp(dtype=F32)
    x, y = make_batch(dtype=F32)
    opt = LookSAM(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.05, k=2)
    before = snapshot(model)

    def closure() -> Tensor:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            assert out.dtype == torch.bfloat16
            loss = nn.functional.mse_loss(out.float(), y)
        loss.backward()
        return loss

    for _ in range(4):
        loss = opt.step(closure)
        assert torch.isfinite(loss)
    assert opt.steps_done == 4
    assert 0.0 < opt.gv_norm < float("inf")
    for p, w in zip(model.parameters(), before, strict=True):
        assert p.dtype == F32
        assert torch.isfinite(p).all()
        assert not torch.equal(p, w)


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_recipe_matches_unscaled_steps(recipe: str, wrapper: str) -> None:
    """Six steps of the recipe (scale 2¹⁶; look and reuse steps for LookSAM k=3) == six unscaled
    ``step(closure)`` steps."""
    check_scaled_matches_unscaled(_wrapped_sgd(wrapper), RECIPES[recipe])


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_g_skips_the_step(recipe: str) -> None:
    """init_scale 3e38 overflows the first backward of a look step: the update is skipped, the
    weights are bit-identical (not left at w + ε), the base has no state, the scale backs off."""
    check_g_overflow_skips(
        lambda model: LookSAM(
            torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.05, k=3
        ),
        RECIPES[recipe],
    )


def _gv(opt: LookSAM, model: nn.Module) -> list[Tensor]:
    return [opt.state[p]["g_v"] for p in model.parameters()]


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_overflow_in_gs_only_restores_and_skips(recipe: str, wrapper: str) -> None:
    """g finite but g_s overflows (second loss × 1e37) on the look step at t = 3: w is restored
    bit-for-bit and not updated, the base's momentum is untouched, LookSAM keeps the g_v of t = 0,
    update() lowers the scale, and the next step trains normally."""
    kept = _gv if wrapper == "looksam" else None
    check_gs_overflow_skips(_wrapped_sgd(wrapper), RECIPES[recipe], steps_before=3, kept=kept)


@pytest.mark.parametrize("recipe", RECIPES)
def test_grad_scaler_recipe_keeps_gv_direction(
    recipe: str, make_mlp: MakeMLP, make_batch: MakeBatch, make_closure: MakeClosure
) -> None:
    """The g_v LookSAM stores on a look step under the recipe (scale 2¹⁶) points the same way as
    the g_v of an unscaled step: only its direction is used later, so a scale may change its
    length but must not rotate it (cosine ≥ 1 − 1e-6)."""
    x, y = make_batch(dtype=F32)
    scaled_model, plain_model = make_mlp(dtype=F32), make_mlp(dtype=F32)
    scaled = LookSAM(torch.optim.SGD(scaled_model.parameters(), lr=0.05), rho=0.05, k=3)
    plain = LookSAM(torch.optim.SGD(plain_model.parameters(), lr=0.05), rho=0.05, k=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    RECIPES[recipe](scaled_model, scaled, scaler, x, y)
    plain.step(make_closure(plain_model, plain, x, y))

    def stored_gv(opt: LookSAM, model: nn.Module) -> Tensor:
        return torch.cat([opt.state[p]["g_v"].reshape(-1) for p in model.parameters()]).double()

    a, b = stored_gv(scaled, scaled_model), stored_gv(plain, plain_model)
    cosine = (torch.dot(a, b) / (a.norm() * b.norm())).item()
    assert cosine >= 1 - 1e-6


def test_an_overflow_in_gs_keeps_the_old_gv_for_the_next_plain_steps(
    make_mlp: MakeMLP, make_batch: MakeBatch, flatten: Callable[[Any], Tensor]
) -> None:
    """float64 and power-of-two scales (the scaler's arithmetic is exact). The look step at
    t = 2 overflows in g_s only; the plain step at t = 3 must still add α‖g‖/‖g_v‖·g_v with the
    g_v and ‖g_v‖ of t = 0. Zeroing ‖g_v‖ on the overflow would silently make it SAM-k's step."""
    model = make_mlp()
    x, y = make_batch()
    lr, alpha = 0.1, 0.7
    opt = LookSAM(torch.optim.SGD(model.parameters(), lr=lr), rho=0.05, k=2, alpha=alpha)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    params = list(model.parameters())
    readme_recipe_step(model, opt, scaler, x, y)  # t = 0: look, stores g_v
    old_gv = [opt.state[p]["g_v"].clone() for p in params]
    old_norm = opt.gv_norm
    assert old_norm == pytest.approx(flatten(old_gv).norm().item(), rel=1e-12)
    assert old_norm > 0.0
    readme_recipe_step(model, opt, scaler, x, y)  # t = 1: plain
    before = [p.detach().clone() for p in params]

    readme_recipe_step(model, opt, scaler, x, y, second_loss_factor=math.inf)  # t = 2

    assert scaler.get_scale() == 0.5  # the overflow was seen and the step skipped
    assert all(torch.equal(p, w) for p, w in zip(params, before, strict=True))
    assert opt.gv_norm == old_norm
    for p, v in zip(params, old_gv, strict=True):
        assert torch.equal(opt.state[p]["g_v"], v)

    g = torch.autograd.grad(nn.functional.mse_loss(model(x), y), params)
    coef = alpha * flatten(g).norm().item() / old_norm
    expected = [w - lr * (gi + coef * v) for w, gi, v in zip(before, g, old_gv, strict=True)]
    readme_recipe_step(model, opt, scaler, x, y)  # t = 3: plain, reuses the g_v of t = 0
    assert_close(params, expected, rtol=1e-12, atol=1e-14)
