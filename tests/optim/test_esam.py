"""ESAM (Du et al., ICLR 2022): SWP's random share β of ε, SDS's second pass on the sharpest γ.

Checked against a literal float64 reference written from the class docstring's equations (the
mask drawn from a generator seeded like the optimizer's, the subset picked with a plain sort), at
β = γ = 1 against SAM, for the closure's call pattern, across a checkpoint, and for its argument
checks. A planted bug (the *least* sharp examples) shows the reference sees which examples run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
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

import looksam.optim.esam as esam_module
from looksam.optim._contract import BatchClosure, largest
from looksam.optim.esam import ESAM

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 5
RHO, BETA, GAMMA, SEED = 0.2, 0.5, 0.25, 1234


class ReferenceESAM:
    """ESAM as the docstring states it, one tensor at a time:

    g = ∇L_B(w); m_j ~ Bernoulli(β), one uniform draw per weight over every parameter in order,
    compared < β; ε = (ρ/β)·m ⊙ g/‖g‖; B⁺ = the ⌊γ|B| + ½⌋ largest ℓ_i(w + ε) − ℓ_i(w);
    g_s = ∇L_{B⁺}(w + ε); the base steps from w with g_s."""

    def __init__(
        self,
        base: torch.optim.Optimizer,
        model: nn.Module,
        *,
        rho: float,
        beta: float,
        gamma: float,
        seed: int,
    ) -> None:
        self.base, self.params = base, list(model.parameters())
        self.rho, self.beta, self.gamma = rho, beta, gamma
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        w = self.params
        at_w = mlp_losses(w, x, y)
        g = torch.autograd.grad(at_w.mean(), w)
        g_norm = torch.cat([gi.reshape(-1) for gi in g]).norm().item()
        sizes = [p.numel() for p in w]
        uniform = torch.rand(sum(sizes), generator=self.generator, dtype=torch.float64)
        mask = (uniform < self.beta).to(torch.float64).split(sizes)
        w_eps = []
        for wi, gi, mi in zip(w, g, mask, strict=True):
            eps = (self.rho / self.beta) * mi.view_as(gi) * gi / g_norm
            w_eps.append((wi.detach() + eps).requires_grad_())
        with torch.no_grad():
            at_eps = mlp_losses(w_eps, x, y)
        sharpest = top_share(at_eps - at_w.detach(), self.gamma)
        g_s = torch.autograd.grad(mlp_losses(w_eps, x[sharpest], y[sharpest]).mean(), w_eps)
        base_step_with(self.base, w, [gs.detach().clone() for gs in g_s])
        return at_w.detach().mean()


def compare_with_reference(
    base_name: str, *, ref_seed: int = SEED, beta: float = BETA, gamma: float = GAMMA
) -> None:
    """STEPS steps of ESAM and of the reference side by side: same loss, same weights (TOL)."""
    lib_model, ref_model = build_mlp(), build_mlp()
    lib = ESAM(
        make_base(base_name, lib_model.parameters()), rho=RHO, beta=beta, gamma=gamma, seed=SEED
    )
    ref = ReferenceESAM(
        make_base(base_name, ref_model.parameters()),
        ref_model,
        rho=RHO,
        beta=beta,
        gamma=gamma,
        seed=ref_seed,
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


@pytest.mark.parametrize(("beta", "gamma"), [(BETA, GAMMA), (0.8, 0.5)])
@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(base_name: str, beta: float, gamma: float) -> None:
    compare_with_reference(base_name, beta=beta, gamma=gamma)


def smallest(scores: Tensor, fraction: float) -> Tensor:
    """A planted bug: the least sharp examples instead of the sharpest."""
    return largest(-scores, fraction)


@pytest.mark.parametrize("base_name", BASES)
def test_reference_catches_the_least_sharp_examples(
    base_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(esam_module, "largest", smallest)
    with pytest.raises(AssertionError, match="weights differ after step 0"):
        compare_with_reference(base_name)


def test_reference_catches_another_mask() -> None:
    """The reference sees the mask too: drawn from another seed, it no longer agrees."""
    with pytest.raises(AssertionError, match="weights differ after step 0"):
        compare_with_reference("sgd", ref_seed=SEED + 1)


# ---------------------------------------------------------------------- β = γ = 1 is SAM


@pytest.mark.parametrize("base_name", BASES)
def test_beta_gamma_one_is_sam(base_name: str) -> None:
    """Every weight perturbed, g_s on the whole batch (the third call): SAM's step."""
    assert_steps_like_sam(
        lambda base: ESAM(base, rho=RHO, beta=1, gamma=1.0), base_name, RHO, 2, STEPS
    )


# ---------------------------------------------------------------------- the subset and the calls


@pytest.mark.parametrize(("fraction", "n", "count"), SUBSET_SIZES)
def test_subset_size(fraction: float, n: int, count: int) -> None:
    """⌊γn + ½⌋ examples, at least one: the helper and what ESAM's second pass gets."""
    assert len(largest(torch.linspace(0.0, 1.0, n, dtype=torch.float64), fraction)) == count
    model = build_mlp()
    opt = ESAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=RHO, gamma=fraction, seed=SEED)
    x, _ = build_batch(7, n=n)
    y = torch.randint(OUT_FEATURES, (n,), generator=torch.Generator().manual_seed(7))
    calls: Calls = []
    opt.step(batch_closure(model, opt, x, y, calls))
    subset = calls[2][0]
    assert subset is not None
    assert len(subset) == count


@pytest.mark.parametrize("gamma", [GAMMA, 0.5, 1.0])
def test_closure_call_pattern(gamma: float) -> None:
    """(whole batch, backward), (whole batch, forward only), (⌊γn + ½⌋ sharpest, backward): the
    subset is int64 positions on the batch's device, each once; the step returns the first
    pass's mean loss, the loss at the weights before the step."""
    model = build_mlp()
    opt = ESAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=RHO, gamma=gamma, seed=SEED)
    for t in range(3):
        x, y = labelled_batch(t)
        calls: Calls = []
        model_before = copy.deepcopy(model)
        loss = opt.step(batch_closure(model, opt, x, y, calls))
        pattern = [(None if s is None else len(s), backward) for s, backward in calls]
        count = math.floor(gamma * N + 0.5)
        assert pattern == [(None, True), (None, False), (count, True)]
        subset = calls[2][0]
        assert subset is not None
        assert subset.dtype == torch.int64
        assert subset.device == x.device
        assert len(set(subset.tolist())) == count
        assert all(0 <= i < N for i in subset.tolist())
        assert not opt.in_second_pass
        assert_close(loss, nn.functional.cross_entropy(model_before(x), y), rtol=0.0, atol=1e-15)


# ---------------------------------------------------------------------- checkpoints


def train(model: nn.Module, opt: ESAM, start: int, stop: int) -> None:
    for t in range(start, stop):
        opt.step(batch_closure(model, opt, *labelled_batch(t)))


def make_esam(model: nn.Module, base_name: str, seed: int) -> ESAM:
    return ESAM(
        make_base(base_name, model.parameters()), rho=RHO, beta=BETA, gamma=GAMMA, seed=seed
    )


@pytest.mark.parametrize("stop_at", [0, 1, 3])
@pytest.mark.parametrize("base_name", BASES)
def test_resume_is_bit_for_bit(base_name: str, stop_at: int) -> None:
    """6 steps straight == ``stop_at`` steps, a checkpoint (torch.save/load) into a fresh model
    and an ESAM built with *another* seed, then the rest: the seed and the generator's state
    travel, so the resumed run draws the same masks."""
    straight = build_mlp()
    straight_opt = make_esam(straight, base_name, seed=SEED)
    train(straight, straight_opt, 0, 6)

    first = build_mlp()
    first_opt = make_esam(first, base_name, seed=SEED)
    train(first, first_opt, 0, stop_at)
    checkpoint = checkpoint_round_trip(first, first_opt)

    resumed = build_mlp(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = make_esam(resumed, base_name, seed=SEED + 99)
    resumed_opt.load_state_dict(checkpoint["opt"])
    assert resumed_opt.seed == SEED
    assert resumed_opt.steps_done == stop_at
    train(resumed, resumed_opt, stop_at, 6)

    assert_tensors_equal(resumed.parameters(), straight.parameters())
    assert resumed_opt.steps_done == 6


def test_resume_needs_the_generator_state() -> None:
    """Control for the test above: restoring the seed alone (no generator state) draws step 0's
    masks again, and the run no longer matches: the state is what makes the resume exact."""
    straight = build_mlp()
    straight_opt = make_esam(straight, "sgd", seed=SEED)
    train(straight, straight_opt, 0, 6)

    first = build_mlp()
    first_opt = make_esam(first, "sgd", seed=SEED)
    train(first, first_opt, 0, 3)
    checkpoint = checkpoint_round_trip(first, first_opt)
    assert set(checkpoint["opt"]["sam_family"]["generator_states"]) == {"cpu"}
    del checkpoint["opt"]["sam_family"]["generator_states"]

    resumed = build_mlp()
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = make_esam(resumed, "sgd", seed=SEED + 99)
    resumed_opt.load_state_dict(checkpoint["opt"])
    train(resumed, resumed_opt, 3, 6)
    assert not all(
        torch.equal(a, b) for a, b in zip(resumed.parameters(), straight.parameters(), strict=True)
    )


def test_seed_from_global_rng_is_reproducible() -> None:
    """No seed: drawn from torch's global RNG, so torch.manual_seed(s) fixes the masks."""
    seeds = []
    for s in (3, 3, 4):
        torch.manual_seed(s)
        seeds.append(ESAM(tiny_sgd()).seed)
    assert seeds[0] == seeds[1] != seeds[2]


# ---------------------------------------------------------------------- argument checks

BAD_FRACTIONS = [0, 0.0, -0.1, 1.5, 2, True, False, math.nan, math.inf, "0.5", None]


@pytest.mark.parametrize("bad", BAD_FRACTIONS, ids=repr)
@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_fraction_validation(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a number in \(0, 1\]"):
        ESAM(tiny_sgd(), **{name: bad})


@pytest.mark.parametrize("good", [1, 1.0, 1e-9, 0.6])
def test_fraction_bounds_accepted(good: float) -> None:
    opt = ESAM(tiny_sgd(), beta=good, gamma=good)
    assert opt.beta == opt.gamma == float(good)
    assert isinstance(opt.beta, float)


def test_step_without_closure_names_batch_closure() -> None:
    model = build_mlp()
    opt = ESAM(torch.optim.SGD(model.parameters(), lr=0.1), seed=SEED)
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


def test_plain_closure_fails_loudly() -> None:
    """torch's closure (no subset, mean loss) is refused on the first call: nothing trains."""
    model = build_mlp()
    opt = ESAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=RHO, seed=SEED)
    before = snapshot(model)
    with pytest.raises(TypeError):
        opt.step(plain_closure(model, opt, *labelled_batch(0)))
    assert_tensors_equal(model.parameters(), before)
    assert opt.steps_done == 0
    assert not opt.in_second_pass
    assert len(opt.base.state) == 0


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


def short_forward_closure(model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> BatchClosure:
    """A closure whose forward-only pass drops the batch's last example."""
    closure = batch_closure(model, opt, x, y)

    def short(subset: Tensor | None = None, *, backward: bool = True) -> Tensor:
        losses = closure(subset, backward=backward)
        return losses if backward else losses[:-1]

    return short


@pytest.mark.parametrize(
    ("make_closure", "error"),
    [(mean_closure, ValueError), (short_forward_closure, ValueError)],
    ids=["mean-loss", "short-forward"],
)
def test_a_bad_closure_leaves_w(make_closure: Callable[..., Any], error: type) -> None:
    """A closure that breaks the contract (not one loss per example) fails with one line naming
    the contract, and the model is left at w: the check runs inside the undo of the look."""
    model = build_mlp()
    opt = ESAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=RHO, seed=SEED)
    before = snapshot(model)
    with pytest.raises(error):
        opt.step(make_closure(model, opt, *labelled_batch(0)))
    assert not opt.in_second_pass
    assert_tensors_equal(model.parameters(), before)
