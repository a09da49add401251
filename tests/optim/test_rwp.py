"""RWP (Li et al., arXiv:2211.11489), single-device: one pass at w + ε, ε filter-wise Gaussian.

The reference below is written from the formula: a generator of its own seeded like the
optimizer's, one ``randn`` over every parameter (in param-group order) split per parameter, each
filter's noise multiplied by γ·‖filter‖ in a Python loop (each entry of a 1-D parameter by γ·|w_j|,
or the whole tensor by γ·‖w‖), the weights moved in place and copied back, the base step from w.
It runs side by side with the library in float64 on two param groups and a parameter that never
gets a gradient.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
from _models import (
    BASES,
    Closure,
    MakeBatch,
    MakeMLP,
    TwoGroupNet,
    assert_tensors_equal,
    build_closure,
    checkpoint_round_trip,
    flat,
    make_base,
    snapshot,
    step_side_by_side,
    tiny_sgd,
)
from torch import Tensor, nn
from torch.testing import assert_close

from looksam import SAM, frozen_bn_stats
from looksam.bench.host_reads import count_step_host_reads
from looksam.optim.rwp import RWP

#: The numerical tests run on both scalar paths (conftest's ``scalar_path``; RWP has no scalars,
#: so both must agree trivially).
pytestmark = pytest.mark.usefixtures("scalar_path")

STEPS = 20
SEED = 77


def reference_noise(
    params: list[Tensor], generator: torch.Generator, gamma: float, vector_scale: str
) -> list[Tensor]:
    """ε for ``params`` as stated: N(0, (γ‖W_i‖)²) for every filter W_i (output row) of a tensor
    with ≥ 2 dimensions; per entry (γ|w_j|) or per tensor (γ‖w‖) for 1-D."""
    total = sum(p.numel() for p in params)
    z = torch.randn(total, generator=generator, dtype=params[0].dtype)
    out, offset = [], 0
    for p in params:
        w = p.detach()
        e = z[offset : offset + p.numel()].view(p.shape).clone()
        offset += p.numel()
        if p.dim() >= 2:
            for i in range(p.shape[0]):
                e[i] *= gamma * w[i].norm()
        elif vector_scale == "element":
            for j in range(p.numel()):
                e.view(-1)[j] *= gamma * abs(w.view(-1)[j])
        else:
            e *= gamma * w.norm()
        out.append(e)
    return out


class ReferenceRWP:
    """RWP as stated: w += ε in place, the gradient there, w copied back, the base step."""

    def __init__(
        self, base: torch.optim.Optimizer, *, gamma: float, vector_scale: str, seed: int
    ) -> None:
        self.base, self.gamma, self.vector_scale = base, gamma, vector_scale
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, closure: Closure) -> Tensor:
        params = [p for g in self.base.param_groups for p in g["params"]]
        saved = [p.detach().clone() for p in params]
        eps = reference_noise(params, self.generator, self.gamma, self.vector_scale)
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        loss = closure()  # g = ∇L(w + ε)
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)
        self.base.step()  # from w, with g
        return loss


def _sgd(params: Any, **kw: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, **{"lr": 0.05, "momentum": 0.9, **kw})


# ---------------------------------------------------------------------- the reference trajectory
@pytest.mark.parametrize("vector_scale", ["element", "tensor"])
@pytest.mark.parametrize("base_name", BASES)
def test_matches_reference(base_name: str, vector_scale: str, make_mlp: MakeMLP) -> None:
    """20 steps of RWP(γ = 0.3) follow the literal reference (same seed) to ~1e-10, on SGD
    (Nesterov, weight decay) and AdamW, two groups and a parameter without a gradient."""
    lib_net, ref_net, plain_net = (TwoGroupNet(make_mlp()) for _ in range(3))
    lib = RWP(lib_net.make_base(base_name), gamma=0.3, vector_scale=vector_scale, seed=SEED)
    ref = ReferenceRWP(
        ref_net.make_base(base_name), gamma=0.3, vector_scale=vector_scale, seed=SEED
    )
    plain = plain_net.make_base(base_name)
    for t in range(STEPS):
        x, y = step_side_by_side(t, lib, lib_net, ref, ref_net)
        plain.step(build_closure(plain_net, plain, x, y))
    assert lib.steps_done == STEPS
    lib_net.assert_never_used_untouched()
    # Not vacuous: RWP left the plain optimizer's trajectory.
    assert (flat(lib_net.parameters()) - flat(plain_net.parameters())).norm() > 1e-3


@pytest.mark.parametrize("vector_scale", ["element", "tensor"])
def test_noise_is_the_references_with_the_same_generator(vector_scale: str) -> None:
    """Inside the pass the weights are w + ε with ε the reference's (same seed) to ~1e-12, a
    parameter with rows of very different norms included; w is back, in its own storage, after."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-2, 2, 5, dtype=torch.float64)[:, None])
    opt = RWP(_sgd(model.parameters()), gamma=0.5, vector_scale=vector_scale, seed=SEED)
    w = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    expected = reference_noise(
        list(model.parameters()), torch.Generator().manual_seed(SEED), 0.5, vector_scale
    )
    opt.perturb()
    got = [p.detach() - wi for p, wi in zip(model.parameters(), w, strict=True)]
    assert_close(got, expected, rtol=1e-10, atol=1e-12)
    opt.restore()
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert_tensors_equal(model.parameters(), w)


# ---------------------------------------------------------------------- the per-filter scale
def _perturbations(model: nn.Module, opt: RWP, n: int) -> list[list[Tensor]]:
    w = snapshot(model)
    out = []
    for _ in range(n):
        opt.perturb()
        out.append([p.detach() - wi for p, wi in zip(model.parameters(), w, strict=True)])
        opt.restore()
    return out


def test_each_filter_gets_its_own_scale() -> None:
    """Rows whose norms span six decades: the empirical std of every filter's noise is γ times
    that filter's norm (within 6%), its mean ≈ 0; each bias entry's std is γ·|b_j| ("element")
    or γ‖b‖ ("tensor"). Dropping the per-filter scale (one scale per tensor) misses by decades."""
    torch.manual_seed(1)
    layer = nn.Linear(40, 6).double()
    with torch.no_grad():
        layer.weight.mul_(torch.logspace(-3, 3, 6, dtype=torch.float64)[:, None])
        layer.bias.copy_(torch.tensor([1e-2, -1.0, 1e2, 3.0, -0.5, 1e-1], dtype=torch.float64))
    gamma = 0.2
    for vector_scale in ("element", "tensor"):
        opt = RWP(_sgd(layer.parameters()), gamma=gamma, vector_scale=vector_scale, seed=3)
        samples = _perturbations(layer, opt, 300)
        eps_w = torch.stack([s[0] for s in samples])  # (300, 6, 40)
        eps_b = torch.stack([s[1] for s in samples])  # (300, 6)
        row_norms = layer.weight.detach().norm(dim=1)
        ratio = eps_w.std(dim=(0, 2)) / (gamma * row_norms)
        assert_close(ratio, torch.ones(6, dtype=torch.float64), rtol=0.06, atol=0.0)
        assert (eps_w.mean(dim=(0, 2)).abs() / (gamma * row_norms) < 0.03).all()
        b = layer.bias.detach()
        scale = gamma * (b.abs() if vector_scale == "element" else b.norm().expand(6))
        assert_close(
            eps_b.std(dim=0) / scale, torch.ones(6, dtype=torch.float64), rtol=0.25, atol=0
        )


def test_frozen_and_empty_parameters_are_not_perturbed(make_batch: MakeBatch) -> None:
    """A parameter that does not require a gradient, and an empty one, stay exactly at w during
    the pass; the others move."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    model[0].bias.requires_grad_(False)
    empty = nn.Parameter(torch.zeros(0, 3, dtype=torch.float64))
    opt = RWP(_sgd([*model.parameters(), empty]), gamma=0.5, seed=0)
    w = snapshot(model)
    seen: list[list[bool]] = []
    inner = build_closure(model, opt, *make_batch())

    def closure() -> Tensor:
        seen.append([torch.equal(p, q) for p, q in zip(model.parameters(), w, strict=True)])
        return inner()

    opt.step(closure)
    assert seen == [[False, True, False, False]]
    assert empty.shape == (0, 3)


# ---------------------------------------------------------------------- γ = 0 and γ read per step
@pytest.mark.parametrize("base_name", BASES)
def test_gamma_zero_is_the_base_optimizer(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """γ = 0 (the lower boundary) reproduces the base optimizer bit for bit."""
    model, twin = make_mlp(), make_mlp()
    opt = RWP(make_base(base_name, model.parameters()), gamma=0.0)
    plain = make_base(base_name, twin.parameters())
    for t in range(10):
        x, y = make_batch(100 + t % 3)
        loss = opt.step(build_closure(model, opt, x, y))
        assert torch.equal(loss, plain.step(build_closure(twin, plain, x, y)))
    assert_tensors_equal(model.parameters(), twin.parameters())


def test_gamma_is_read_at_every_step(make_mlp: MakeMLP) -> None:
    """Assigned between steps, ``gamma`` sets the next perturbation's scale (0: none)."""
    model = make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=1.0, seed=0)
    sizes = []
    for gamma in (0.0, 0.01, 0.1):
        opt.gamma = gamma
        (eps,) = _perturbations(model, opt, 1)
        sizes.append(flat(eps).norm().item())
    assert sizes[0] == 0.0
    assert 5 < sizes[2] / sizes[1] < 20
    opt.gamma = -1.0
    with pytest.raises(ValueError, match="gamma"):
        opt.perturb()
    assert not opt.is_perturbed


# ---------------------------------------------------------------------- closure and passes
def test_one_closure_call_per_step_gradient_at_w_plus_eps_update_from_w(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """The closure runs once per step, outside any "second pass", at w + ε (new storage); after
    ``step`` the weights are exactly what the base computes from w with that gradient, in w's own
    storage."""
    model = make_mlp()
    opt = RWP(_sgd(model.parameters(), weight_decay=1e-2), gamma=0.2, seed=5)
    for t in range(3):
        opt.step(build_closure(model, opt, *make_batch(200 + t)))
    w = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    twin = copy.deepcopy(model)
    twin_base = _sgd(twin.parameters(), weight_decay=1e-2)
    twin_base.load_state_dict(copy.deepcopy(opt.base.state_dict()))
    grads: list[Tensor] = []
    flags: list[tuple[bool, bool, bool]] = []
    inner = build_closure(model, opt, *make_batch(7))

    def closure() -> Tensor:
        moved = all(p.data_ptr() != q for p, q in zip(model.parameters(), pointers, strict=True))
        flags.append((opt.in_second_pass, opt.is_perturbed, moved))
        loss = inner()
        grads.extend(p.grad.detach().clone() for p in model.parameters())  # type: ignore[union-attr]
        return loss

    assert not opt.is_look_step
    opt.step(closure)
    assert flags == [(False, True, True)]
    assert [p.data_ptr() for p in model.parameters()] == pointers
    for p, g in zip(twin.parameters(), grads, strict=True):
        p.grad = g
    twin_base.step()
    assert_tensors_equal(model.parameters(), twin.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), w, strict=True))


def test_closure_raising_restores_w(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    model = make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=0.5, seed=0)
    w = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    inner = build_closure(model, opt, *make_batch())

    def failing() -> Tensor:
        inner()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        opt.step(failing)
    assert not opt.is_perturbed
    assert opt.steps_done == 0
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert_tensors_equal(model.parameters(), w)
    assert len(opt.base.state) == 0


def test_two_phase_api_matches_closure(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """perturb() → forward/backward → step() is step(closure), bit for bit (same seed); a second
    perturb() draws fresh noise, so it is not (the generators part ways)."""
    model, twin = make_mlp(), make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=0.3, seed=8)
    other = RWP(_sgd(twin.parameters()), gamma=0.3, seed=8)
    for t in range(5):
        x, y = make_batch(300 + t)
        opt.step(build_closure(model, opt, x, y))
        other.perturb()
        assert other.is_perturbed
        build_closure(twin, other, x, y)()
        assert other.step() is None
    assert other.steps_done == 5
    assert_tensors_equal(model.parameters(), twin.parameters())


def test_step_without_closure_or_perturb_raises_and_no_first_step(
    make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    model = make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=0.3)
    w = snapshot(model)
    build_closure(model, opt, *make_batch())()
    with pytest.raises(RuntimeError, match=r"closure.*perturb\(\)"):
        opt.step()
    with pytest.raises(RuntimeError, match="first_step"):
        opt.first_step()
    opt.perturb()
    opt.restore()
    opt.restore()  # a no-op the second time
    assert_tensors_equal(model.parameters(), w)
    assert opt.steps_done == 0


# ---------------------------------------------------------------------- seeds, checkpoints
def _run(seed: int | None, steps: int = 4) -> list[Tensor]:
    model = nn.Sequential(nn.Linear(5, 3)).double()
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.fill_(0.1)
    opt = RWP(_sgd(model.parameters()), gamma=0.3, seed=seed)
    x, y = torch.ones(4, 5, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
    for _ in range(steps):
        opt.step(build_closure(model, opt, x, y))
    return snapshot(model)


def test_seeds() -> None:
    """Same seed, same run; different seeds differ; seed None draws from torch's global RNG, so
    ``torch.manual_seed`` makes a run repeatable and different global seeds differ."""
    assert_tensors_equal(_run(1), _run(1))
    assert not torch.equal(flat(_run(1)), flat(_run(2)))
    runs = []
    for global_seed in (4, 4, 5):
        torch.manual_seed(global_seed)
        runs.append(_run(None))
    assert_tensors_equal(runs[0], runs[1])
    assert not torch.equal(flat(runs[0]), flat(runs[2]))


@pytest.mark.parametrize("base_name", BASES)
def test_state_dict_resume_is_bit_identical(
    base_name: str, make_mlp: MakeMLP, make_batch: MakeBatch
) -> None:
    """14 steps straight vs 6 steps, model + optimizer serialised and loaded into fresh objects
    (another seed), 8 more: bit for bit, the noise generator's state included."""
    model, straight_model = make_mlp(), make_mlp()
    opt = RWP(make_base(base_name, model.parameters()), gamma=0.3, seed=SEED)
    straight = RWP(make_base(base_name, straight_model.parameters()), gamma=0.3, seed=SEED)
    for t in range(14):
        x, y = make_batch(200 + t)
        straight.step(build_closure(straight_model, straight, x, y))
        if t < 6:
            opt.step(build_closure(model, opt, x, y))
    checkpoint = checkpoint_round_trip(model, opt)
    assert checkpoint["opt"]["sam_family"]["seed"] == SEED
    assert set(checkpoint["opt"]["sam_family"]["rng_states"]) == {"cpu"}

    fresh_model = make_mlp(seed=5)
    fresh = RWP(make_base(base_name, fresh_model.parameters()), gamma=0.3, seed=1)
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(checkpoint["opt"])
    assert (fresh.steps_done, fresh.seed) == (6, SEED)
    assert fresh.param_groups is fresh.base.param_groups
    for t in range(6, 14):
        fresh.step(build_closure(fresh_model, fresh, *make_batch(200 + t)))
    assert_tensors_equal(fresh_model.parameters(), straight_model.parameters())


def test_load_state_dict_undoes_a_pending_perturbation_and_validates(make_mlp: MakeMLP) -> None:
    model = make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=1.0, seed=0)
    w, sd = snapshot(model), opt.state_dict()
    opt.perturb()
    opt.load_state_dict(sd)
    assert not opt.is_perturbed
    assert_tensors_equal(model.parameters(), w)
    for broken in ({"rng_states": None}, {"rng_states": {"cpu": 3}}, {"seed": -1}):
        bad = copy.deepcopy(sd)
        bad["sam_family"].update(broken)
        bad["sam_family"]["steps_done"] = 9
        with pytest.raises(ValueError, match=r"seed|rng_states"):
            opt.load_state_dict(bad)
        assert opt.steps_done == 0


# ---------------------------------------------------------------------- host reads, GradScaler, BN
def test_no_host_read_in_a_step(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    model = make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=0.3, seed=0)
    with count_step_host_reads(opt) as counter:
        for t in range(4):
            opt.step(build_closure(model, opt, *make_batch(t)))
    assert [s.host_reads for s in counter.steps] == [0] * 4


def test_grad_scaler_recipe(make_mlp: MakeMLP, make_batch: MakeBatch) -> None:
    """The runner's fp16 recipe (scaled backward, ``base_step=scaler.step(base)``) equals the
    unscaled run exactly (power-of-two scale, same seed), ``unscale`` is never called, and an
    overflowing pass skips the update with w restored."""
    model, twin = make_mlp(), make_mlp()
    opt = RWP(_sgd(model.parameters()), gamma=0.3, seed=2)
    other = RWP(_sgd(twin.parameters()), gamma=0.3, seed=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    unscaled: list[int] = []

    def scaled_closure(x: Tensor, y: Tensor, poison: bool = False) -> Callable[[], Tensor]:
        def closure() -> Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss * (float("inf") if poison else 1.0)).backward()
            return loss.detach()

        return closure

    def fp16_step(closure: Callable[[], Tensor]) -> None:
        opt.step(
            closure, base_step=lambda: scaler.step(opt.base), unscale=lambda: unscaled.append(1)
        )
        scaler.update()

    for t in range(5):
        x, y = make_batch(t)
        fp16_step(scaled_closure(x, y))
        other.step(build_closure(twin, other, x, y))
    assert_tensors_equal(model.parameters(), twin.parameters())
    assert unscaled == []

    w = snapshot(model)
    fp16_step(scaled_closure(*make_batch(0), poison=True))
    assert scaler.get_scale() == 2.0**11
    assert_tensors_equal(model.parameters(), w)


def test_batchnorm_stats_update_on_the_single_pass() -> None:
    """``in_second_pass`` is never True, so the runner's closure lets every step's (perturbed)
    pass update BatchNorm's running statistics once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2)).double()
    opt = RWP(_sgd(model.parameters()), gamma=0.1, seed=0)
    bn = model[1]
    x = torch.randn(32, 4, dtype=torch.float64)
    y = torch.randn(32, 2, dtype=torch.float64)

    def closure() -> Tensor:
        opt.zero_grad()
        with frozen_bn_stats(model, enabled=opt.in_second_pass):
            loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert int(cast(Tensor, bn.num_batches_tracked)) == 3


def test_buckets_per_dtype() -> None:
    """Parameters in two dtypes are two buckets, each drawn and scaled on its own; a float32
    filter's noise has the float32 dtype and its own scale."""
    torch.manual_seed(0)
    a, b = nn.Linear(30, 4).double(), nn.Linear(30, 4).float()
    opt = RWP(_sgd([*a.parameters(), *b.parameters()]), gamma=0.1, seed=0)
    params = [*a.parameters(), *b.parameters()]
    w = [p.detach().clone() for p in params]
    samples = []
    for _ in range(200):
        opt.perturb()
        samples.append([p.detach() - q for p, q in zip(params, w, strict=True)])
        opt.restore()
    eps32 = torch.stack([s[2] for s in samples]).double()
    assert samples[0][2].dtype == torch.float32
    ratio = eps32.std(dim=(0, 2)) / (0.1 * w[2].double().norm(dim=1))
    assert_close(ratio, torch.ones(4, dtype=torch.float64), rtol=0.08, atol=0.0)


# ---------------------------------------------------------------------- validation
def _param() -> nn.Parameter:
    return nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize("gamma", [-1e-12, -1.0, math.nan, math.inf, "0.01", None, True])
def test_bad_gamma(gamma: Any) -> None:
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        RWP(_sgd([_param()]), gamma=gamma)


@pytest.mark.parametrize("vector_scale", ["row", "", None, 1])
def test_bad_vector_scale(vector_scale: Any) -> None:
    with pytest.raises(ValueError, match="vector_scale must be 'element'"):
        RWP(_sgd([_param()]), vector_scale=vector_scale)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.0, True, "1"], ids=repr)
def test_bad_seed(seed: Any) -> None:
    with pytest.raises(ValueError, match="seed must be None"):
        RWP(_sgd([_param()]), seed=seed)


def test_bad_base() -> None:
    with pytest.raises(ValueError, match=r"torch\.optim\.Optimizer"):
        RWP([_param()])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="plain optimizer"):
        RWP(SAM(tiny_sgd()))


def test_defaults_and_repr() -> None:
    """γ = 0.01 (the official code's default and CIFAR recipe), 1-D per tensor (the code's
    rule); any base (no momentum needed); γ = 0 allowed; seed bounds accepted."""
    opt = RWP(torch.optim.SGD([_param()], lr=0.1), seed=0)
    assert (opt.gamma, opt.vector_scale) == (0.01, "tensor")
    assert RWP(torch.optim.Adagrad([_param()]), gamma=0.0).gamma == 0.0
    assert RWP(tiny_sgd(), seed=2**64 - 1).seed == 2**64 - 1
    assert repr(opt) == "RWP(base=SGD, gamma=0.01, vector_scale='tensor', seed=0, steps_done=0)"
