"""AE-SAM and AE-LookSAM (Jiang et al., ICLR 2023): the adaptive rule, step by step.

* A slow float64 reference written from the formulas (per-tensor loops, norms by flattening, the
  weights restored from a saved clone, μ, σ² and c_t computed on their own) runs side by side with
  both optimizers for 36 steps, on SGD (Nesterov, weight decay) and AdamW, two param groups and a
  parameter without gradient; both branches of the rule occur.
* A linear model whose gradient is exactly the loss scale forces a known sequence of decisions,
  with ‖g‖² landing exactly on the threshold μ_t + c_t·σ_t (dyadic numbers: no rounding at all).
* The schedule c_t, checkpoint round trips, the "ask only after the first backward" contract, the
  two-phase API and the argument checks.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _models import (
    BASES,
    Closure,
    MakeBatch,
    MakeMLP,
    ReferenceGv,
    TwoGroupNet,
    assert_tensors_equal,
    base_step_with,
    build_closure,
    checkpoint_round_trip,
    first_gradient,
    grads_at_offset,
    make_base,
    snapshot,
    step_side_by_side,
)
from torch import Tensor, nn

from looksam import AESAM, AELookSAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 36
CLASSES = {"aesam": AESAM, "aelooksam": AELookSAM}


class ReferenceAE:
    """AE-SAM (``reuse=False``) and AE-LookSAM (``reuse=True``) as the paper states them."""

    def __init__(
        self,
        base: torch.optim.Optimizer,
        *,
        reuse: bool,
        rho: float,
        alpha: float,
        total_steps: int,
        delta: float,
        lambda1: float,
        lambda2: float,
    ) -> None:
        self.base, self.rho = base, rho
        self.T, self.delta, self.lambda1, self.lambda2 = total_steps, delta, lambda1, lambda2
        self.t = 0
        self.mu = 0.0  # μ_{-1}
        self.var = 0.0  # σ²_{-1}
        self.decisions: list[bool] = []
        self.gv = ReferenceGv(alpha, reused=reuse)

    def c(self, t: int) -> float:
        frac = min(t, self.T) / self.T
        return frac * self.lambda1 + (1 - frac) * self.lambda2

    def step(self, closure: Closure) -> Tensor:
        loss = closure()
        params, g, g_norm = first_gradient(self.base)
        x = g_norm**2
        self.mu = self.delta * self.mu + (1 - self.delta) * x
        self.var = self.delta * self.var + (1 - self.delta) * (x - self.mu) ** 2
        use_sam = x >= self.mu + self.c(self.t) * math.sqrt(self.var)
        self.decisions.append(use_sam)
        g_s = None
        if use_sam:
            g_s = grads_at_offset(params, [self.rho * gi / g_norm for gi in g], closure)
        base_step_with(self.base, params, self.gv.gradient(g, g_norm, g_s))
        self.t += 1
        return loss


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("name", CLASSES)
def test_matches_reference(name: str, base_name: str, make_mlp: MakeMLP) -> None:
    """36 steps side by side (paper defaults δ = 0.9, λ₁ = −1, λ₂ = 1, T = 36): same losses,
    weights (1e-10), decisions, closure calls (1 or 2), μ, σ² and SAM-step count."""
    hp = {"rho": 0.05, "total_steps": STEPS, "delta": 0.9, "lambda1": -1.0, "lambda2": 1.0}
    lib_net, ref_net = TwoGroupNet(make_mlp()), TwoGroupNet(make_mlp())
    extra = {"alpha": 0.7} if name == "aelooksam" else {}
    lib = CLASSES[name](lib_net.make_base(base_name), **hp, **extra)
    ref = ReferenceAE(
        ref_net.make_base(base_name),
        reuse=name == "aelooksam",
        alpha=extra.get("alpha", 0.0),
        **hp,  # type: ignore[arg-type]
    )

    for t in range(STEPS):
        record: list[Tensor] = []
        step_side_by_side(t, lib, lib_net, ref, ref_net, record)
        assert len(record) == 1 + ref.decisions[-1], f"closure calls at step {t}"
        assert lib.grad_sq_mean == pytest.approx(ref.mu, rel=1e-9)
        assert lib.grad_sq_var == pytest.approx(ref.var, rel=1e-9)
        assert lib.sam_steps == sum(ref.decisions)

    assert True in ref.decisions, ref.decisions
    assert False in ref.decisions, ref.decisions
    assert lib.steps_done == STEPS
    assert lib.sam_fraction == sum(ref.decisions) / STEPS
    lib_net.assert_never_used_untouched()
    if name == "aelooksam":
        assert isinstance(lib, AELookSAM)
        assert ref.gv.norm > 0.0
        assert lib.gv_norm == pytest.approx(ref.gv.norm, rel=1e-9)
        # a reuse step after a SAM step occurred, so g_v was really used
        pairs = zip(ref.decisions, ref.decisions[1:], strict=False)
        assert any(a and not b for a, b in pairs)


# ---------------------------------------------------------------------- exact decisions


def _linear_run(
    cls: type[AESAM | AELookSAM], norms: list[float], **hp: Any
) -> tuple[list[int], Any]:
    """loss = n_t·w on a one-element w: g_t = [n_t] exactly, so ‖g_t‖² = n_t² exactly."""
    w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = cls(torch.optim.SGD([w], lr=0.1), rho=0.05, **hp)
    calls = []
    for n in norms:
        record: list[Tensor] = []

        def closure(n: float = n, record: list[Tensor] = record) -> Tensor:
            opt.zero_grad()
            loss = n * w.sum()
            loss.backward()
            record.append(loss)
            return loss

        opt.step(closure)
        calls.append(len(record))
    return calls, opt


@pytest.mark.parametrize("name", CLASSES)
def test_known_decisions_with_exact_boundary(name: str) -> None:
    """δ = 3/4, λ = (−1, 1), T = 4 (c_t = 1, ½, 0, −½) and ‖g‖ = 3.5, 1.25, 2.75, 1.25: every
    number is dyadic, so the arithmetic is exact. Step 3 lands exactly on the threshold
    (‖g‖² = μ₃ + c₃σ₃ = 1.5625): the paper's ≥ makes it a SAM step."""
    calls, opt = _linear_run(
        CLASSES[name], [3.5, 1.25, 2.75, 1.25], total_steps=4, delta=0.75, lambda1=-1, lambda2=1
    )
    assert calls == [2, 1, 2, 2]
    assert opt.sam_steps == 3
    # μ₃ and σ₃² by hand: σ₃ = 3.515625, μ₃ − ½σ₃ = 1.5625 = ‖g₃‖²
    assert opt.grad_sq_mean == 3.3203125
    assert opt.grad_sq_var == 12.359619140625
    assert math.sqrt(opt.grad_sq_var) == 3.515625
    assert opt.grad_sq_mean + opt.threshold_coefficient(3) * 3.515625 == 1.25**2


@pytest.mark.parametrize("name", CLASSES)
def test_first_step_boundary_both_sides(name: str) -> None:
    """At t = 0 (μ₋₁ = σ²₋₁ = 0) the threshold is ‖g‖²·((1−δ) + λ₂·δ·√(1−δ)); with δ = 3/4 it
    equals ‖g‖² exactly when λ₂ = 2 (SAM), and one ulp more of λ₂ makes it a plain step."""
    on, _ = _linear_run(CLASSES[name], [3.0], total_steps=2, delta=0.75, lambda1=0, lambda2=2)
    above, opt = _linear_run(
        CLASSES[name],
        [3.0],
        total_steps=2,
        delta=0.75,
        lambda1=0,
        lambda2=math.nextafter(2.0, math.inf),
    )
    assert on == [2]
    assert above == [1]
    assert opt.sam_steps == 0
    assert opt.grad_sq_mean == 0.25 * 9.0  # the statistics still moved on the plain step


@pytest.mark.parametrize("name", CLASSES)
def test_loss_scaling_forces_decisions(
    name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """With c_t ∈ [0, 1] a loss ×100 always crosses the threshold (‖g‖² ≥ (0.1 + 0.9·√0.1)·‖g‖²
    > μ + c·σ whatever the history) and a loss ×10⁻³ after a few normal steps never does."""
    model = make_mlp()
    opt = CLASSES[name](
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        rho=0.05,
        total_steps=20,
        lambda1=0.0,
        lambda2=1.0,
    )
    scales = {4: 100.0, 5: 1e-3, 6: 1e-3, 9: 100.0, 10: 1e-3, 15: 100.0, 16: 100.0, 17: 1e-3}
    x, y = make_batch()
    for t in range(20):
        scale = scales.get(t, 1.0)
        record: list[Tensor] = []

        def closure(scale: float = scale, record: list[Tensor] = record) -> Tensor:
            opt.zero_grad()
            loss = scale * nn.functional.mse_loss(model(x), y)
            loss.backward()
            record.append(loss)
            return loss

        sam_before = opt.sam_steps
        opt.step(closure)
        assert opt.sam_steps - sam_before == len(record) - 1
        if scale == 100.0:
            assert len(record) == 2, f"step {t}: a ×100 loss must take SAM"
        elif scale == 1e-3:
            assert len(record) == 1, f"step {t}: a ×1e-3 loss must take a plain step"


# ---------------------------------------------------------------------- schedule


def test_threshold_schedule(make_mlp: MakeMLP) -> None:
    """c_t = (t/T)λ₁ + (1 − t/T)λ₂: λ₂ at t = 0, the midpoint at T/2, λ₁ + (λ₂−λ₁)/T at the
    last step T − 1, λ₁ from T on (a run longer than announced)."""
    opt = AESAM(
        torch.optim.SGD(make_mlp().parameters(), lr=0.1),
        total_steps=10,
        lambda1=-1.0,
        lambda2=1.0,
    )
    assert opt.threshold_coefficient(0) == 1.0
    assert opt.threshold_coefficient(5) == 0.0
    assert opt.threshold_coefficient(9) == pytest.approx(-0.8, abs=1e-15)
    assert opt.threshold_coefficient(10) == -1.0
    assert opt.threshold_coefficient(25) == -1.0
    flat = AESAM(
        torch.optim.SGD(make_mlp().parameters(), lr=0.1),
        total_steps=1,
        lambda1=0.5,
        lambda2=0.5,
    )
    assert [flat.threshold_coefficient(t) for t in range(3)] == [0.5, 0.5, 0.5]


def test_defaults_follow_the_paper(make_mlp: MakeMLP) -> None:
    for cls in CLASSES.values():
        opt = cls(torch.optim.SGD(make_mlp().parameters(), lr=0.1), total_steps=5)
        assert (opt.rho, opt.delta, opt.lambda1, opt.lambda2) == (0.05, 0.9, -1.0, 1.0)
        assert (opt.grad_sq_mean, opt.grad_sq_var, opt.sam_steps, opt.sam_fraction) == (
            0.0,
            0.0,
            0,
            0.0,
        )
    assert AELookSAM(torch.optim.SGD(make_mlp().parameters(), lr=0.1), total_steps=5).alpha == 0.7


# ---------------------------------------------------------------------- checkpointing


def _train(model: nn.Module, opt: Any, start: int, stop: int, make_batch: MakeBatch) -> list[int]:
    calls = []
    for t in range(start, stop):
        x, y = make_batch(200 + t % 5)
        record: list[Tensor] = []
        opt.step(build_closure(model, opt, x, y, record))
        calls.append(len(record))
    return calls


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("name", CLASSES)
def test_state_dict_round_trip_resumes_bit_for_bit(
    name: str, base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """Saved at step 11 of 24 (through torch.save) and loaded into a fresh model and optimizer,
    the run continues exactly: same decisions, weights, μ, σ² and SAM-step count."""
    total, save_at = 24, 11

    def build() -> tuple[nn.Module, Any]:
        model = make_mlp()
        return model, CLASSES[name](
            make_base(base_name, model.parameters()), rho=0.05, total_steps=total
        )

    straight_model, straight = build()
    straight_calls = _train(straight_model, straight, 0, total, make_batch)
    assert 1 in straight_calls[save_at:]
    assert 2 in straight_calls[save_at:]

    model, opt = build()
    first = _train(model, opt, 0, save_at, make_batch)
    checkpoint = checkpoint_round_trip(model, opt)
    del model, opt
    resumed_model, resumed = build()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed.load_state_dict(checkpoint["opt"])
    assert resumed.steps_done == save_at
    rest = _train(resumed_model, resumed, save_at, total, make_batch)

    assert first + rest == straight_calls
    assert_tensors_equal(resumed_model.parameters(), straight_model.parameters())
    assert resumed.grad_sq_mean == straight.grad_sq_mean
    assert resumed.grad_sq_var == straight.grad_sq_var
    assert resumed.sam_steps == straight.sam_steps == straight_calls.count(2)


def test_load_state_dict_without_statistics_is_refused(make_mlp: MakeMLP) -> None:
    """A LookSAM checkpoint lacks μ, σ² and the SAM-step count: refused before anything loads."""
    from looksam.optim import LookSAM

    model = make_mlp()
    looksam = LookSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, k=2)
    opt = AELookSAM(torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)
    with pytest.raises(ValueError, match="grad_sq_mean"):
        opt.load_state_dict(looksam.state_dict())
    assert opt.steps_done == 0


# ---------------------------------------------------------------------- the decision contract


@pytest.mark.parametrize("name", CLASSES)
def test_is_look_step_before_any_gradient(
    name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """No gradient yet: False, with nothing cached or updated; after the backward it decides
    once, however often it is asked, and the statistics move once, when the step completes."""
    model = make_mlp()
    opt = CLASSES[name](torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)
    assert opt.is_look_step is False
    assert (opt.grad_sq_mean, opt.grad_sq_var, opt.steps_done) == (0.0, 0.0, 0)
    x, y = make_batch()
    nn.functional.mse_loss(model(x), y).backward()
    answers = {opt.is_look_step for _ in range(3)}
    assert answers == {True}  # step 0 with the defaults: threshold ≈ 0.385‖g‖²
    assert opt.grad_sq_mean == 0.0  # nothing committed before the step completes
    g_sq = sum(float(p.grad.pow(2).sum()) for p in model.parameters())  # type: ignore[union-attr]
    opt.first_step()
    nn.functional.mse_loss(model(x), y).backward()
    assert opt.is_look_step is True  # mid-step, g replaced by g_s: still the same decision
    opt.second_step()
    assert opt.grad_sq_mean == pytest.approx(0.1 * g_sq, rel=1e-12)
    assert opt.sam_steps == 1


@pytest.mark.parametrize("name", CLASSES)
def test_stale_query_before_step_changes_nothing(
    name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """Asking ``is_look_step`` between steps (the previous step's gradients still in .grad)
    caches a guess that ``step(closure)`` discards: the run is bit-for-bit the same."""
    runs = []
    for ask_between in (False, True):
        model = make_mlp()
        opt = CLASSES[name](
            torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), total_steps=15
        )
        calls = []
        for t in range(15):
            if ask_between:
                _ = opt.is_look_step
            x, y = make_batch(300 + t % 3)
            record: list[Tensor] = []
            opt.step(build_closure(model, opt, x, y, record))
            calls.append(len(record))
        runs.append((calls, snapshot(model), opt.grad_sq_var))
    assert runs[0][0] == runs[1][0]
    assert 1 in runs[0][0]
    assert 2 in runs[0][0]
    assert_tensors_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]


@pytest.mark.parametrize("name", CLASSES)
def test_two_phase_api_matches_step_closure(
    name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """backward; ``if is_look_step: first_step(); backward``; ``second_step()`` reproduces
    ``step(closure)`` exactly, and ``first_step()`` on a plain step is refused."""
    results = []
    for manual in (False, True):
        model = make_mlp()
        opt = CLASSES[name](
            torch.optim.SGD(model.parameters(), lr=0.05), total_steps=12, delta=0.5
        )
        calls = []
        for t in range(12):
            x, y = make_batch(400 + t % 3)
            closure = build_closure(model, opt, x, y)
            if not manual:
                record: list[Tensor] = []
                opt.step(build_closure(model, opt, x, y, record))
                calls.append(len(record))
                continue
            closure()
            if opt.is_look_step:
                opt.first_step()
                closure()
                calls.append(2)
            else:
                with pytest.raises(RuntimeError, match="plain step"):
                    opt.first_step()
                calls.append(1)
            opt.second_step()
        results.append((calls, snapshot(model)))
    assert results[0][0] == results[1][0]
    assert 1 in results[0][0]
    assert 2 in results[0][0]
    assert_tensors_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("name", CLASSES)
def test_non_finite_gradient_is_a_plain_step_that_keeps_the_statistics(name: str) -> None:
    """An overflowed ‖g‖² (GradScaler's skipped step) neither takes SAM nor poisons μ, σ²."""
    _, opt = _linear_run(CLASSES[name], [2.0, 1.0], total_steps=5)
    before = (opt.grad_sq_mean, opt.grad_sq_var, opt.sam_steps)
    w = opt.param_groups[0]["params"][0]
    w.grad = torch.tensor([math.inf], dtype=torch.float64)
    assert opt.is_look_step is False
    opt.second_step(base_step=lambda: None)  # the scaler skips the update
    assert (opt.grad_sq_mean, opt.grad_sq_var, opt.sam_steps) == before
    assert opt.steps_done == 3


# ---------------------------------------------------------------------- validation


def _base(make_mlp: MakeMLP) -> torch.optim.Optimizer:
    return torch.optim.SGD(make_mlp().parameters(), lr=0.1)


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": -3}, "total_steps"),
        ({"total_steps": True}, "total_steps"),
        ({"total_steps": 10.0}, "total_steps"),
        ({"total_steps": "10"}, "total_steps"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": -0.5}, "delta"),
        ({"delta": math.nan}, "delta"),
        ({"delta": True}, "delta"),
        ({"lambda1": math.nan}, "lambda1"),
        ({"lambda2": math.inf}, "lambda2"),
        ({"lambda1": False}, "lambda1"),
        ({"lambda1": math.nextafter(1.0, math.inf), "lambda2": 1.0}, "lambda1 must be <="),
        ({"rho": -1e-12}, "rho"),
        ({"rho": math.inf}, "rho"),
    ],
)
def test_invalid_arguments(
    name: str, kwargs: dict[str, Any], match: str, make_mlp: MakeMLP
) -> None:
    args: dict[str, Any] = {"total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        CLASSES[name](_base(make_mlp), **args)


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_steps": 1},
        {"delta": 5e-324},
        {"delta": math.nextafter(1.0, 0.0)},
        {"lambda1": 1.0, "lambda2": 1.0},
        {"lambda1": -1e300, "lambda2": 1e300},
        {"rho": 0.0},
    ],
)
def test_boundary_arguments_are_accepted(
    name: str, kwargs: dict[str, Any], make_mlp: MakeMLP
) -> None:
    args: dict[str, Any] = {"total_steps": 10, **kwargs}
    CLASSES[name](_base(make_mlp), **args)


def test_wrapper_arguments(make_mlp: MakeMLP) -> None:
    with pytest.raises(ValueError, match="alpha"):
        AELookSAM(_base(make_mlp), total_steps=10, alpha=-0.1)
    AELookSAM(_base(make_mlp), total_steps=10, alpha=0.0)
    with pytest.raises(ValueError, match="base must be"):
        AESAM(make_mlp().parameters(), total_steps=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AESAM(_base(make_mlp))  # type: ignore[call-arg]  # total_steps is required
    with pytest.raises(TypeError):
        AELookSAM(_base(make_mlp), total_steps=10, k=3)  # type: ignore[call-arg]  # no k


@pytest.mark.parametrize("name", CLASSES)
def test_step_hooks_fire_once_per_step(name: str, make_mlp: MakeMLP) -> None:
    """torch wraps each optimizer class's ``step`` with its hook runner; overriding ``step`` must
    not run LookSAM's wrapped copy as well (the hooks would fire twice)."""
    from looksam.optim import LookSAM

    model = make_mlp()
    LookSAM(torch.optim.SGD(model.parameters(), lr=0.1))  # LookSAM.step gets torch's wrapper
    opt = CLASSES[name](torch.optim.SGD(model.parameters(), lr=0.1), total_steps=4)
    fired: list[int] = []
    opt.register_step_pre_hook(lambda *_: fired.append(0))
    opt.register_step_post_hook(lambda *_: fired.append(1))
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64)
    for _ in range(2):
        opt.step(build_closure(model, opt, x, y))
    assert fired == [0, 1, 0, 1]
