"""Single steps checked against numbers worked out by hand, plus the degenerate-norm cases.

The losses are separable quadratics L(w) = Σ ½·c·w² + d·w, so g = c·w + d is known in closed form
and every intermediate value (g, ε, w + ε, g_s, the SGD update) is written out in the test.
All maths in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from looksam import SAM, LayerLookSAM, LookSAM, SAMk

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

F64 = torch.float64
EXACT = {"rtol": 1e-13, "atol": 1e-13}


def vec(*values: float) -> Tensor:
    return torch.tensor(values, dtype=F64)


def param(*values: float) -> nn.Parameter:
    return nn.Parameter(vec(*values))


def quadratic_loss(
    params: Sequence[Tensor], curvature: Sequence[Tensor], linear: Sequence[Tensor] | None = None
) -> Tensor:
    """L = Σ_l Σ_i ½·c_li·w_li² + d_li·w_li (so g_l = c_l·w_l + d_l)."""
    loss = torch.zeros((), dtype=F64)
    for i, (w, c) in enumerate(zip(params, curvature, strict=True)):
        loss = loss + 0.5 * (c * w * w).sum()
        if linear is not None:
            loss = loss + (linear[i] * w).sum()
    return loss


def grads(params: Sequence[Tensor]) -> list[Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in params]


def test_sam_step_by_hand_uses_global_norm_across_tensors_and_groups() -> None:
    """L = ½(3·w1² + 2·w2²) at w = (1, 2), two tensors in two param groups, ρ = 0.5, SGD lr 0.1.

    g = (3, 4), ‖g‖ = 5 (global), ε = 0.5·(3, 4)/5 = (0.3, 0.4), w + ε = (1.3, 2.4),
    g_s = (3.9, 4.8), w ← w − 0.1·g_s = (0.61, 1.52). A per-tensor norm would give ε = (0.5, 0.5).
    """
    w1, w2 = param(1.0), param(2.0)
    opt = SAM(torch.optim.SGD([{"params": [w1]}, {"params": [w2]}], lr=0.1), rho=0.5)
    c = [vec(3.0), vec(2.0)]

    opt.zero_grad()
    loss = quadratic_loss([w1, w2], c)
    loss.backward()
    assert loss.item() == pytest.approx(5.5)
    assert_close(grads([w1, w2]), [vec(3.0), vec(4.0)], **EXACT)

    opt.first_step()
    assert opt.in_second_pass
    assert_close([w1.detach(), w2.detach()], [vec(1.3), vec(2.4)], **EXACT)
    assert w1.grad is None
    assert w2.grad is None

    quadratic_loss([w1, w2], c).backward()
    assert_close(grads([w1, w2]), [vec(3.9), vec(4.8)], **EXACT)

    opt.second_step()
    assert not opt.in_second_pass
    assert_close([w1.detach(), w2.detach()], [vec(0.61), vec(1.52)], **EXACT)
    assert opt.steps_done == 1


def test_sam_step_closure_by_hand() -> None:
    """The same hand-computed SAM step through step(closure): w = (0.61, 1.52), loss 5.5."""
    w1, w2 = param(1.0), param(2.0)
    opt = SAM(torch.optim.SGD([w1, w2], lr=0.1), rho=0.5)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = quadratic_loss([w1, w2], [vec(3.0), vec(2.0)])
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.5)
    assert_close([w1.detach(), w2.detach()], [vec(0.61), vec(1.52)], **EXACT)


def test_asam_step_by_hand() -> None:
    """ASAM, L = ½(w1² + 3·w2²) at w = (−2, 1), ρ = 0.5, SGD lr 0.1.

    g = (−2, 3), T = |w| = (2, 1), T·g = (−4, 3), ‖T·g‖ = 5, T²·g = (−8, 3),
    ε = 0.5·(−8, 3)/5 = (−0.8, 0.3), w + ε = (−2.8, 1.3), g_s = (−2.8, 3.9),
    w ← w − 0.1·g_s = (−1.72, 0.61). (Plain SAM would use ε = 0.5·(−2, 3)/√13.)
    """
    w = param(-2.0, 1.0)
    opt = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5, adaptive=True)
    c = [vec(1.0, 3.0)]

    opt.zero_grad()
    quadratic_loss([w], c).backward()
    assert_close(w.grad, vec(-2.0, 3.0), **EXACT)
    opt.first_step()
    assert_close(w.detach(), vec(-2.8, 1.3), **EXACT)
    quadratic_loss([w], c).backward()
    assert_close(w.grad, vec(-2.8, 3.9), **EXACT)
    opt.second_step()
    assert_close(w.detach(), vec(-1.72, 0.61), **EXACT)


def test_layer_looksam_perturbation_by_hand() -> None:
    """Look-LayerSAM's ε_l = ρ·‖w_l‖/‖g_l‖·g_l per tensor, 0 where either norm is 0 (ρ = 0.1).

    A: w = (3, 4),    c = (−1, 1)     → g = (−3, 4),    ‖w‖/‖g‖ = 5/5 → ε = (−0.3, 0.4)
    B: w = (1, 2, 2), c = (2, −2, 2)  → g = (2, −4, 4), ‖w‖/‖g‖ = 3/6 → ε = (0.1, −0.2, 0.2)
    C: w = (0, 0),    d = (1, 1)      → g = (1, 1),     ‖w‖ = 0       → ε = 0
    D: w = (1.5,),    c = 0           → g = (0,),       ‖g‖ = 0       → ε = 0
    g_s = c·(w + ε) + d: A (−2.7, 4.4), B (2.2, −3.6, 4.4), C (1, 1), D (0,); SGD lr 0.1 then gives
    A (3.27, 3.56), B (0.78, 2.36, 1.56), C (−0.1, −0.1), D (1.5,).
    """
    ws = [param(3.0, 4.0), param(1.0, 2.0, 2.0), param(0.0, 0.0), param(1.5)]
    c = [vec(-1.0, 1.0), vec(2.0, -2.0, 2.0), vec(0.0, 0.0), vec(0.0)]
    d = [vec(0.0, 0.0), vec(0.0, 0.0, 0.0), vec(1.0, 1.0), vec(0.0)]
    opt = LayerLookSAM(torch.optim.SGD(ws, lr=0.1), rho=0.1, k=2)

    opt.zero_grad()
    quadratic_loss(ws, c, d).backward()
    opt.first_step()
    perturbed = [w.detach().clone() for w in ws]
    expected_perturbed = [vec(2.7, 4.4), vec(1.1, 1.8, 2.2), vec(0.0, 0.0), vec(1.5)]
    assert_close(perturbed, expected_perturbed, **EXACT)

    quadratic_loss(ws, c, d).backward()
    expected_gs = [vec(-2.7, 4.4), vec(2.2, -3.6, 4.4), vec(1.0, 1.0), vec(0.0)]
    assert_close(grads(ws), expected_gs, **EXACT)
    opt.second_step()
    expected = [vec(3.27, 3.56), vec(0.78, 2.36, 1.56), vec(-0.1, -0.1), vec(1.5)]
    assert_close([w.detach() for w in ws], expected, **EXACT)


WRAPPERS: dict[str, Callable[[torch.optim.Optimizer], torch.optim.Optimizer]] = {
    "sam": lambda base: SAM(base, rho=0.05),
    "asam": lambda base: SAM(base, rho=0.5, adaptive=True),
    "samk": lambda base: SAMk(base, rho=0.05, k=2),
    "looksam": lambda base: LookSAM(base, rho=0.05, k=2, alpha=0.7),
    "layerlooksam": lambda base: LayerLookSAM(base, rho=0.05, k=2, alpha=0.7),
}
BASES: dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]] = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.1),
}


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_zero_gradient_leaves_only_the_base_rule(wrapper: str, base_name: str) -> None:
    """‖g‖ = 0: no perturbation, no NaN; the weights move only by the base's weight decay.

    Four steps (look and plain steps for k = 2) must match the base optimizer run alone.
    """

    def run(wrap: bool) -> tuple[list[Tensor], torch.optim.Optimizer]:
        ws = [param(1.0, -2.0), param(0.5)]
        base = BASES[base_name](ws)
        opt = WRAPPERS[wrapper](base) if wrap else base

        def closure() -> Tensor:
            opt.zero_grad()
            loss = sum((0.0 * w).sum() for w in ws)
            loss.backward()
            return loss

        for _ in range(4):
            opt.step(closure)
        return [w.detach().clone() for w in ws], opt

    wrapped, opt = run(wrap=True)
    alone, _ = run(wrap=False)
    assert all(torch.isfinite(w).all() for w in wrapped)
    assert not torch.equal(wrapped[0], vec(1.0, -2.0)), "weight decay should have moved w"
    assert_close(wrapped, alone, **EXACT)
    if isinstance(opt, LookSAM):
        assert opt.gv_norm == 0.0


def test_zero_gv_by_hand_gives_no_reuse_term() -> None:
    """L = ‖w‖² at w = (3, 4), ρ = 5, k = 2, SGD lr 0.1: g_s ∥ g exactly, so g_v = 0.

    Look: g = (6, 8), ‖g‖ = 10, ε = 5·g/10 = (3, 4), g_s = 2·(6, 8) = (12, 16) = 2·g,
    g_v = g_s − 2·g = 0; w ← (3, 4) − 0.1·(12, 16) = (1.8, 2.4).
    Plain: g = (3.6, 4.8), reuse term 0 (not 0/0) → w ← (1.8, 2.4) − 0.1·(3.6, 4.8) = (1.44, 1.92).
    """
    w = param(3.0, 4.0)
    opt = LookSAM(torch.optim.SGD([w], lr=0.1), rho=5.0, k=2, alpha=0.7)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.gv_norm == 0.0
    assert_close(opt.state[w]["g_v"], vec(0.0, 0.0), **EXACT)
    assert_close(w.detach(), vec(1.8, 2.4), **EXACT)
    opt.step(closure)
    assert_close(w.detach(), vec(1.44, 1.92), **EXACT)


@pytest.mark.parametrize("wrapper", [LookSAM, LayerLookSAM])
def test_gs_parallel_to_g_gives_no_reuse_term_for_generic_weights(
    wrapper: type[LookSAM],
) -> None:
    """L = 1.5·‖w‖²: g = 3w and ε is a multiple of g (global and layer-wise alike), so
    g_s = 3(w + ε) is parallel to g, g_v = 0, and the plain step after the look step must be the
    plain SGD step w ← w − lr·3·w.

    Unlike the hand-picked (3, 4) case, generic weights leave rounding noise (~1e-16·‖g_s‖) in
    the computed g_v; that noise is not a direction and must not be rescaled to α·‖g‖.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(7, dtype=F64))
    opt = wrapper(torch.optim.SGD([w], lr=0.1), rho=0.05, k=2, alpha=0.7)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = 1.5 * (w * w).sum()
        loss.backward()
        return loss

    record: list[Tensor] = []

    def recording_closure() -> Tensor:
        loss = closure()
        assert w.grad is not None
        record.append(w.grad.clone())
        return loss

    opt.step(recording_closure)
    g, g_s = record
    assert_close(g_s / g_s.norm(), g / g.norm(), rtol=1e-14, atol=1e-14)  # parallel, as claimed
    gv = opt.state[w]["g_v"]
    assert gv.norm() <= 1e-12 * g_s.norm(), "g_v of parallel gradients is zero up to rounding"
    assert torch.isfinite(gv).all()

    after_look = w.detach().clone()
    opt.step(closure)
    assert torch.isfinite(w).all()
    assert_close(w.detach(), after_look - 0.1 * 3.0 * after_look, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("has_foreach_clone", [True, False])
def test_clone_all_makes_private_copies_with_or_without_foreach_clone(
    has_foreach_clone: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch 2.11 (the oldest supported) lacks ``torch._foreach_clone``: the fallback copies."""
    from looksam.optim._foreach import clone_all

    if not has_foreach_clone:
        monkeypatch.delattr(torch, "_foreach_clone", raising=False)
    base = torch.arange(6, dtype=torch.float64)
    views = [base[:4], base[4:].view(1, 2)]
    copies = clone_all(views)
    base.zero_()  # writing the shared buffer must not reach the copies
    assert [c.tolist() for c in copies] == [[0.0, 1.0, 2.0, 3.0], [[4.0, 5.0]]]
    assert all(c.dtype == torch.float64 and not c._is_view() for c in copies)
