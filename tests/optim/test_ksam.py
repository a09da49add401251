"""K-SAM (Ni et al., 2022): a forward pass ranks the batch, SAM's two passes run on its top κ.

Checked against a literal float64 reference written from the class docstring's equations (the
subset picked with a plain sort), at κ = 1 against SAM, for the closure's call pattern, across a
checkpoint, and for its argument checks. A planted bug (the *lowest* losses) shows the reference
sees which examples run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
import torch
from _models import (
    BASES,
    OUT_FEATURES,
    assert_tensors_equal,
    base_step_with,
    build_batch,
    build_mlp,
    checkpoint_round_trip,
    make_base,
    snapshot,
    tiny_sgd,
)
from _per_example import (
    SUBSET_SIZES,
    TOL,
    Calls,
    N,
    assert_steps_like_sam,
    batch_closure,
    labelled_batch,
    mlp_losses,
    top_share,
)
from torch import Tensor, nn
from torch.testing import assert_close

import looksam.optim.ksam as ksam_module
from looksam.optim._contract import BatchClosure, largest
from looksam.optim.ksam import KSAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 5
RHO, FRACTION = 0.2, 0.25


class ReferenceKSAM:
    """K-SAM as the docstring states it, one tensor at a time:

    ℓ_i(w) from a forward pass over B; K = the ⌊κ|B| + ½⌋ largest ℓ_i; g = ∇L_K(w);
    ε = ρ·g/‖g‖; g_s = ∇L_K(w + ε); the base steps from w with g_s."""

    def __init__(
        self, base: torch.optim.Optimizer, model: nn.Module, *, rho: float, fraction: float
    ) -> None:
        self.base, self.params = base, list(model.parameters())
        self.rho, self.fraction = rho, fraction

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        w = self.params
        with torch.no_grad():
            at_w = mlp_losses(w, x, y)
        top = top_share(at_w, self.fraction)
        g = torch.autograd.grad(mlp_losses(w, x[top], y[top]).mean(), w)
        g_norm = torch.cat([gi.reshape(-1) for gi in g]).norm().item()
        w_eps = [
            (wi.detach() + self.rho * gi / g_norm).requires_grad_()
            for wi, gi in zip(w, g, strict=True)
        ]
        g_s = torch.autograd.grad(mlp_losses(w_eps, x[top], y[top]).mean(), w_eps)
        base_step_with(self.base, w, [gs.detach().clone() for gs in g_s])
        return at_w.mean()


def compare_with_reference(base_name: str, *, fraction: float = FRACTION) -> None:
    """STEPS steps of K-SAM and of the reference side by side: same loss, same weights (TOL)."""
    lib_model, ref_model = build_mlp(), build_mlp()
    lib = KSAM(make_base(base_name, lib_model.parameters()), rho=RHO, fraction=fraction)
    ref = ReferenceKSAM(
        make_base(base_name, ref_model.parameters()), ref_model, rho=RHO, fraction=fraction
    )
    for t in range(STEPS):
        x, y = labelled_batch(t)
        lib_loss = lib.step(batch_closure(lib_model, lib, x, y))
        ref_loss = ref.step(x, y)
        assert_close(lib_loss, ref_loss, **TOL, msg=f"loss differs at step {t}")
        assert_close(
            list(lib_model.parameters()),
            list(ref_model.parameters()),
            **TOL,
            msg=lambda m, t=t: f"weights differ after step {t}: {m}",
        )
    assert lib.steps_done == STEPS


# ---------------------------------------------------------------------- the reference


def test_functional_mlp_is_the_model() -> None:
    """The reference's written-out MLP gives the conftest model's per-example losses."""
    model = build_mlp()
    x, y = labelled_batch(0)
    assert_close(
        mlp_losses(list(model.parameters()), x, y),
        nn.functional.cross_entropy(model(x), y, reduction="none"),
        rtol=0.0,
        atol=1e-15,
    )


@pytest.mark.parametrize("fraction", [FRACTION, 0.5])
@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(base_name: str, fraction: float) -> None:
    compare_with_reference(base_name, fraction=fraction)


def smallest(scores: Tensor, fraction: float) -> Tensor:
    """A planted bug: the lowest-loss examples instead of the highest."""
    return largest(-scores, fraction)


@pytest.mark.parametrize("base_name", BASES)
def test_reference_catches_the_lowest_losses(
    base_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ksam_module, "largest", smallest)
    with pytest.raises(AssertionError, match="weights differ after step 0"):
        compare_with_reference(base_name)


# ---------------------------------------------------------------------- κ = 1 is SAM


@pytest.mark.parametrize("base_name", BASES)
def test_fraction_one_is_sam(base_name: str) -> None:
    """Both passes on the whole batch (the second and third calls): SAM's step."""
    assert_steps_like_sam(lambda base: KSAM(base, rho=RHO, fraction=1), base_name, RHO, 1, STEPS)


# ---------------------------------------------------------------------- the subset and the calls


@pytest.mark.parametrize(("fraction", "n", "count"), SUBSET_SIZES)
def test_subset_size(fraction: float, n: int, count: int) -> None:
    """⌊κn + ½⌋ examples, at least one: the helper and what both of K-SAM's passes get."""
    assert len(largest(torch.linspace(0.0, 1.0, n, dtype=torch.float64), fraction)) == count
    model = build_mlp()
    opt = KSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=RHO, fraction=fraction)
    x, _ = build_batch(7, n=n)
    y = torch.randint(OUT_FEATURES, (n,), generator=torch.Generator().manual_seed(7))
    calls: Calls = []
    opt.step(batch_closure(model, opt, x, y, calls))
    assert [None if s is None else len(s) for s, _ in calls] == [None, count, count]


@pytest.mark.parametrize(("fraction", "n"), [(0.58, 25), (0.29, 50), (0.35, 90), (0.7, 45)])
def test_subset_size_at_decimal_half_way_points(fraction: float, n: int) -> None:
    exact = max(1, math.floor(Fraction(repr(fraction)) * n + Fraction(1, 2)))
    assert len(largest(torch.zeros(n), fraction)) == exact


@pytest.mark.parametrize("fraction", [FRACTION, 0.5, 1.0])
def test_closure_call_pattern(fraction: float) -> None:
    """(whole batch, forward only), then (top ⌊κn + ½⌋, backward) twice, both passes with the
    very same subset tensor: int64 positions on the batch's device, each once, the highest
    losses of the ranking pass; the step returns that pass's mean loss."""
    model = build_mlp()
    opt = KSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=RHO, fraction=fraction)
    count = math.floor(fraction * N + 0.5)
    for t in range(3):
        x, y = labelled_batch(t)
        calls: Calls = []
        model_before = copy.deepcopy(model)
        loss = opt.step(batch_closure(model, opt, x, y, calls))
        pattern = [(None if s is None else len(s), backward) for s, backward in calls]
        assert pattern == [(None, False), (count, True), (count, True)]
        subset = calls[1][0]
        assert subset is not None
        assert calls[2][0] is subset
        assert subset.dtype == torch.int64
        assert subset.device == x.device
        assert len(set(subset.tolist())) == count
        with torch.no_grad():
            ranking = nn.functional.cross_entropy(model_before(x), y, reduction="none")
        assert set(subset.tolist()) == set(top_share(ranking, fraction).tolist())
        assert_close(loss, ranking.mean(), rtol=0.0, atol=1e-15)
        assert not opt.in_second_pass


# ---------------------------------------------------------------------- checkpoints


def train(model: nn.Module, opt: KSAM, start: int, stop: int) -> None:
    for t in range(start, stop):
        opt.step(batch_closure(model, opt, *labelled_batch(t)))


@pytest.mark.parametrize("stop_at", [0, 1, 3])
@pytest.mark.parametrize("base_name", BASES)
def test_resume_is_bit_for_bit(base_name: str, stop_at: int) -> None:
    """6 steps straight == ``stop_at`` steps, a checkpoint (torch.save/load) into a fresh model
    and K-SAM (another ρ and κ at construction, which the checkpoint does not carry: the same
    here), then the rest."""
    straight = build_mlp()
    straight_opt = KSAM(make_base(base_name, straight.parameters()), rho=RHO, fraction=FRACTION)
    train(straight, straight_opt, 0, 6)

    first = build_mlp()
    first_opt = KSAM(make_base(base_name, first.parameters()), rho=RHO, fraction=FRACTION)
    train(first, first_opt, 0, stop_at)
    checkpoint = checkpoint_round_trip(first, first_opt)

    resumed = build_mlp(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = KSAM(make_base(base_name, resumed.parameters()), rho=RHO, fraction=FRACTION)
    resumed_opt.load_state_dict(checkpoint["opt"])
    assert resumed_opt.steps_done == stop_at
    train(resumed, resumed_opt, stop_at, 6)

    assert_tensors_equal(resumed.parameters(), straight.parameters())
    assert resumed_opt.steps_done == 6


# ---------------------------------------------------------------------- argument checks

BAD_FRACTIONS = [0, 0.0, -0.1, 1.5, 2, True, False, math.nan, math.inf, "0.5", None]


@pytest.mark.parametrize("bad", BAD_FRACTIONS, ids=repr)
def test_fraction_validation(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^fraction must be a number in \(0, 1\]"):
        KSAM(tiny_sgd(), fraction=bad)


@pytest.mark.parametrize("good", [1, 1.0, 1e-9, 0.5])
def test_fraction_bounds_accepted(good: float) -> None:
    opt = KSAM(tiny_sgd(), fraction=good)
    assert opt.fraction == float(good)
    assert isinstance(opt.fraction, float)


def test_step_without_closure_names_batch_closure() -> None:
    model = build_mlp()
    opt = KSAM(torch.optim.SGD(model.parameters(), lr=0.1))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="BatchClosure"):
        opt.step()
    assert_tensors_equal(model.parameters(), before)
    assert opt.steps_done == 0


def plain_closure(model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def mean_closure(model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> BatchClosure:
    """A closure that takes (subset, backward) but returns the mean loss, not one per example."""

    def closure(subset: Tensor | None = None, *, backward: bool = True) -> Tensor:
        xs, ys = (x, y) if subset is None else (x[subset], y[subset])
        if not backward:
            with torch.no_grad():
                return nn.functional.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xs), ys)
        loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("make_closure", [plain_closure, mean_closure])
def test_plain_closure_fails_loudly(make_closure: Callable[..., Any]) -> None:
    """torch's closure (no subset) or one returning the mean loss is refused before any pass
    trains: an error, the weights untouched, nothing half done."""
    model = build_mlp()
    opt = KSAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=RHO)
    before = snapshot(model)
    with pytest.raises(TypeError):
        opt.step(make_closure(model, opt, *labelled_batch(0)))
    assert_tensors_equal(model.parameters(), before)
    assert opt.steps_done == 0
    assert not opt.in_second_pass
    assert len(opt.base.state) == 0
