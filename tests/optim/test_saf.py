"""SAF and MESA (Du et al., NeurIPS 2022): the trajectory loss and the two ways to get ẑ.

The term λτ²·mean_i KL(softmax(ẑ_i/τ) ‖ softmax(z_i/τ)) against the paper's formula written out
with explicit sums; SAF (ẑ: the example's own logits from Ẽ epochs ago) and MESA (ẑ: an EMA
model's eval-mode logits) end to end against float64 training loops that keep their own past
logits and their own EMA; the start-epoch boundaries, the timing switch, the memory report, a
bit-for-bit resume and the argument checks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from _models import (
    IN_FEATURES,
    OUT_FEATURES,
    assert_tensors_equal,
    build_mlp,
    checkpoint_round_trip,
    tiny_sgd,
)
from torch import Tensor, nn
from torch.nn import functional
from torch.testing import assert_close

from looksam.optim._contract import LossTermMethod
from looksam.optim.saf import MESA, SAF, trajectory_kl

F64 = torch.float64
#: Every float64 library-against-reference comparison.
TIGHT: dict[str, Any] = {"rtol": 1e-12, "atol": 1e-12}


# ---------------------------------------------------------------------- the data

N, BATCH_SIZE, STEPS_PER_EPOCH = 24, 8, 3
LR, MOMENTUM = 0.2, 0.9


def dataset() -> tuple[Tensor, Tensor]:
    """24 examples: float64 inputs and class labels in [0, 3)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(N, IN_FEATURES, generator=gen, dtype=F64)
    y = torch.randint(0, OUT_FEATURES, (N,), generator=gen)
    return x, y


def schedule(epochs: int, missing: Sequence[int] = ()) -> list[tuple[int, Tensor]]:
    """(epoch, sample ids) per step: each epoch a permutation from a generator seeded by the
    epoch, in 3 batches of 8; in the epochs of ``missing`` the last batch loses its last two
    examples (so they are not written in that epoch)."""
    steps = []
    for epoch in range(epochs):
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(100 + epoch))
        batches = list(perm.split(BATCH_SIZE))
        if epoch in missing:
            batches[-1] = batches[-1][:-2]
        steps += [(epoch, ids) for ids in batches]
    return steps


def sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def build_bn_mlp(seed: int = 0) -> nn.Sequential:
    """5-8-3 with BatchNorm1d after the first layer (float running stats, int64
    num_batches_tracked), float64, fixed init."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, OUT_FEATURES)
        )
    return model.to(F64)


def lib_step(
    opt: LossTermMethod,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    ids: Tensor | None,
    terms: list[Tensor] | None = None,
) -> Tensor:
    """The runner's loop: the workload's mean loss plus ``loss_term`` in the closure, then
    ``step(closure)``. The terms go to ``terms`` when given."""

    def closure() -> Tensor:
        opt.zero_grad()
        logits = model(x)
        term = opt.loss_term(x, logits, ids)
        if terms is not None:
            terms.append(term.detach())
        loss = functional.cross_entropy(logits, y) + term
        loss.backward()
        return loss.detach()

    loss: Tensor = opt.step(closure)
    return loss


def max_gap(a: nn.Module, b: nn.Module) -> float:
    """The largest |difference| between the two models' weights."""
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max((p - q).abs().max().item() for p, q in pairs)


def bare_step(base: torch.optim.Optimizer, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    base.zero_grad()
    loss = functional.cross_entropy(model(x), y)
    loss.backward()
    base.step()
    return loss.detach()


# ---------------------------------------------------------------------- the paper's formula


def literal_log_softmax(row: list[Tensor], tau: float) -> list[Tensor]:
    """log softmax(v/τ) of a row of 0-dim tensors, as a sum over the classes (shifted by the
    row's largest value, a constant)."""
    scaled = [v / tau for v in row]
    shift = max(float(v.detach()) for v in scaled)
    total = sum(torch.exp(v - shift) for v in scaled)
    return [v - shift - torch.log(total) for v in scaled]


def literal_kl(z: Tensor, z_hat: Tensor, tau: float) -> Tensor:
    """KL(softmax(ẑ/τ) ‖ softmax(z/τ)) = Σ_c q_c (log q_c − log p_c) for one example."""
    log_p = literal_log_softmax(list(z), tau)
    log_q = literal_log_softmax(list(z_hat.detach()), tau)
    return sum(torch.exp(lq) * (lq - lp) for lq, lp in zip(log_q, log_p, strict=True))


def literal_term(
    logits: Tensor, references: Sequence[Tensor | None], weight: float, tau: float
) -> Tensor:
    """λτ²·(1/|B|)·Σ_i KL_i, an example without a reference (``None``) counting 0 (and still
    counting in |B|)."""
    total = logits.new_zeros(())
    for z, z_hat in zip(logits, references, strict=True):
        if z_hat is not None:
            total = total + literal_kl(z, z_hat, tau)
    return weight * tau**2 * total / len(logits)


def random_logits(seed: int, rows: int = 6, classes: int = 4) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = 3.0 * torch.randn(rows, classes, generator=gen, dtype=F64)
    z_hat = z + torch.randn(rows, classes, generator=gen, dtype=F64)
    return z, z_hat


def test_trajectory_kl_keeps_float64_and_upcasts_half() -> None:
    z, z_hat = random_logits(0)
    assert trajectory_kl(z, z_hat, 2.0).dtype == F64
    assert trajectory_kl(z.half(), z_hat.half(), 2.0).dtype == torch.float32


@pytest.mark.parametrize("tau", [1.0, 2.5, 5.0])
def test_trajectory_kl_matches_formula(tau: float) -> None:
    """Per example: τ²·KL(softmax(ẑ/τ) ‖ softmax(z/τ)), its sum over classes written out."""
    z, z_hat = random_logits(1)
    expected = torch.stack([tau**2 * literal_kl(a, b, tau) for a, b in zip(z, z_hat, strict=True)])
    actual = trajectory_kl(z, z_hat, tau)
    assert actual.shape == (6,)
    assert_close(actual, expected, **TIGHT)
    assert (actual >= 0).all()
    assert torch.equal(trajectory_kl(z, z, tau), torch.zeros_like(actual))


def saf_term_against(z_hat: Tensor, *, weight: float, tau: float) -> SAF:
    """An SAF (Ẽ = 1, start epoch 1, one step per epoch) whose bank holds ``z_hat`` as the
    examples' epoch-0 logits and that is in epoch 1."""
    opt = SAF(tiny_sgd(), weight=weight, temperature=tau, lag=1, start_epoch=1)
    opt.attach(nn.Identity(), num_examples=len(z_hat), steps_per_epoch=1)
    first = opt.loss_term(z_hat, z_hat, torch.arange(len(z_hat)))
    assert torch.equal(first, z_hat.new_zeros(()))  # epoch 0: before start_epoch
    opt.step()
    return opt


def mesa_term_against(z_hat: Tensor, *, weight: float, tau: float) -> MESA:
    """A MESA over the identity model (no parameters), so the EMA model's outputs are the
    inputs."""
    opt = MESA(tiny_sgd(), weight=weight, temperature=tau, decay=0.9, start_epoch=0)
    opt.attach(nn.Identity(), num_examples=len(z_hat), steps_per_epoch=1)
    return opt


@pytest.mark.parametrize("method", ["saf", "mesa"])
@pytest.mark.parametrize(("weight", "tau"), [(0.3, 5.0), (0.8, 1.0), (1.7, 2.5)])
def test_loss_term_matches_formula(method: str, weight: float, tau: float) -> None:
    """``loss_term`` = λτ²·mean_i KL_i, value and gradient with respect to the logits."""
    z, z_hat = random_logits(2)
    lib_z, ref_z = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    if method == "saf":
        term = saf_term_against(z_hat, weight=weight, tau=tau).loss_term(
            None, lib_z, torch.arange(len(z))
        )
    else:
        term = mesa_term_against(z_hat, weight=weight, tau=tau).loss_term(z_hat, lib_z, None)
    expected = literal_term(ref_z, list(z_hat), weight, tau)
    assert term.dtype == F64
    assert term.shape == ()
    assert_close(term, expected, **TIGHT)
    term.backward()
    expected.backward()
    assert_close(lib_z.grad, ref_z.grad, **TIGHT)


# ---------------------------------------------------------------------- SAF end to end


class ReferenceSAF:
    """SAF as a training loop: the logits of every (epoch, sample id) in a dict; from the start
    epoch each example adds its KL to its logits of epoch e − Ẽ, or nothing when it has none."""

    def __init__(
        self, model: nn.Module, *, weight: float, tau: float, lag: int, start_epoch: int
    ) -> None:
        self.model, self.base = model, sgd(model)
        self.weight, self.tau, self.lag, self.start_epoch = weight, tau, lag, start_epoch
        self.past: dict[tuple[int, int], Tensor] = {}
        self.found = self.missed = 0

    def step(self, epoch: int, x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
        self.base.zero_grad()
        logits = self.model(x)
        loss = functional.cross_entropy(logits, y)
        if epoch >= self.start_epoch:
            refs = [self.past.get((epoch - self.lag, i)) for i in ids.tolist()]
            self.found += sum(r is not None for r in refs)
            self.missed += sum(r is None for r in refs)
            loss = loss + literal_term(logits, refs, self.weight, self.tau)
        for i, row in zip(ids.tolist(), logits.detach(), strict=True):
            self.past[(epoch, i)] = row.clone()
        loss.backward()
        self.base.step()
        return loss.detach()


SAF_HP: dict[str, Any] = {"weight": 0.8, "tau": 2.0, "lag": 1, "start_epoch": 2}
#: Epoch 1 misses two examples (epoch 2 finds no row: never written) and epoch 3 two (epoch 4
#: finds their slot holding epoch 1's logits: stale, must not count).
SAF_MISSING = (1, 3)


def make_saf(model: nn.Module, *, attach: bool = True, **overrides: Any) -> SAF:
    hp = {**SAF_HP, **overrides}
    opt = SAF(
        sgd(model),
        weight=hp["weight"],
        temperature=hp["tau"],
        lag=hp["lag"],
        start_epoch=hp["start_epoch"],
    )
    if attach:
        opt.attach(model, num_examples=N, steps_per_epoch=STEPS_PER_EPOCH)
    return opt


def test_saf_matches_reference() -> None:
    """Six epochs (Ẽ = 1, start epoch 2, examples missing from epochs 1 and 3) side by side with
    the reference: bit for bit the bare SGD before the start epoch, then to 1e-12 after every
    step; the first step of the start epoch differs from a bare SGD step."""
    x_all, y_all = dataset()
    lib_model, ref_model, bare_model = build_mlp(), build_mlp(), build_mlp()
    lib = make_saf(lib_model)
    ref = ReferenceSAF(ref_model, **SAF_HP)
    bare = sgd(bare_model)
    start_step = SAF_HP["start_epoch"] * STEPS_PER_EPOCH
    missed_before = {}

    for t, (epoch, ids) in enumerate(schedule(6, SAF_MISSING)):
        assert lib.epoch(STEPS_PER_EPOCH) == epoch
        x, y = x_all[ids], y_all[ids]
        lib_loss = lib_step(lib, lib_model, x, y, ids)
        ref_loss = ref.step(epoch, x, y, ids)
        if t <= start_step:
            bare_loss = bare_step(bare, bare_model, x, y)
        if epoch < SAF_HP["start_epoch"]:
            assert torch.equal(lib_loss, ref_loss)
            assert torch.equal(lib_loss, bare_loss)
            assert_tensors_equal(lib_model.parameters(), ref_model.parameters())
            assert_tensors_equal(lib_model.parameters(), bare_model.parameters())
        else:
            assert_close(lib_loss, ref_loss, **TIGHT, msg=f"loss differs at step {t}")
            assert_close(
                list(lib_model.parameters()),
                list(ref_model.parameters()),
                **TIGHT,
                msg=lambda m, t=t: f"weights differ after step {t}: {m}",
            )
        if t == start_step:
            assert lib_loss > bare_loss
            assert max_gap(lib_model, bare_model) > 1e-4
        missed_before[epoch] = ref.missed
    # The rows that must not count were there: 2 never written (epoch 2), 2 stale (epoch 4).
    assert missed_before[2] == 2
    assert missed_before[4] - missed_before[3] == 2
    # Epochs 2–5 read 24 + 22 + 24 + 24 rows (epoch 3 runs without two examples), 4 missing.
    assert ref.found == 4 * N - 2 - 4
    # The bank holds the last two epochs' logits where they were written.
    assert lib.bank is not None
    assert lib.written is not None
    for epoch in (4, 5):
        slot = epoch % 2
        rows = [i for i in range(N) if (epoch, i) in ref.past]
        assert (lib.written[slot, rows] == epoch).all()
        assert_close(
            lib.bank[slot, rows], torch.stack([ref.past[(epoch, i)] for i in rows]), **TIGHT
        )


def test_saf_missing_row_contributes_zero() -> None:
    """A batch whose rows from epoch e − Ẽ are all missing has a term of exactly 0 (and so the
    bare step), even though its slot holds stale logits from epoch e − 2Ẽ."""
    x_all, y_all = dataset()
    model = build_mlp()
    opt = SAF(sgd(model), weight=0.8, temperature=2.0, lag=1, start_epoch=1)
    opt.attach(model, num_examples=N, steps_per_epoch=1)
    ids = torch.arange(8)
    other = torch.arange(8, 16)
    terms: list[Tensor] = []
    lib_step(opt, model, x_all[ids], y_all[ids], ids, terms)  # epoch 0: writes rows 0–7
    lib_step(opt, model, x_all[other], y_all[other], other, terms)  # epoch 1: rows 0–7 absent
    # epoch 2: slot 0 holds rows 0–7 from epoch 0 (stale): nothing counts
    bare_model = copy.deepcopy(model)
    bare = sgd(bare_model)
    bare.load_state_dict(copy.deepcopy(opt.base.state_dict()))  # no aliasing
    lib_step(opt, model, x_all[ids], y_all[ids], ids, terms)
    bare_step(bare, bare_model, x_all[ids], y_all[ids])
    assert torch.equal(terms[-1], torch.zeros((), dtype=F64))
    assert_tensors_equal(model.parameters(), bare_model.parameters())
    # epoch 3: rows 0–7 were written in epoch 2: they count
    lib_step(opt, model, x_all[ids], y_all[ids], ids, terms)
    assert terms[-1] > 0


@pytest.mark.parametrize(("lag", "start_epoch"), [(1, 0), (2, 0), (3, 1)])
def test_saf_waits_for_lag_epochs_of_bank(lag: int, start_epoch: int) -> None:
    """With start_epoch < Ẽ, no epoch before Ẽ has outputs from Ẽ epochs ago: every step of
    epochs 0 … Ẽ − 1 is the bare SGD's, bit for bit, with a term of exactly 0. (A "never
    written" stamp of −1 would match e − Ẽ = −1 in epoch Ẽ − 1 and pull towards the zero rows'
    uniform outputs.)"""
    x_all, y_all = dataset()
    lib_model, bare_model = build_mlp(), build_mlp()
    lib = make_saf(lib_model, lag=lag, start_epoch=start_epoch)
    bare = sgd(bare_model)
    terms: list[Tensor] = []
    for t, (epoch, ids) in enumerate(schedule(lag)):
        x, y = x_all[ids], y_all[ids]
        lib_step(lib, lib_model, x, y, ids, terms)
        bare_step(bare, bare_model, x, y)
        assert terms[-1] == 0, f"term {terms[-1].item():.3g} at step {t} (epoch {epoch})"
        assert_tensors_equal(lib_model.parameters(), bare_model.parameters())


def test_saf_loss_term_needs_index() -> None:
    model = build_mlp()
    opt = make_saf(model)
    x, _ = dataset()
    with pytest.raises(ValueError, match="sample ids"):
        opt.loss_term(x[:8], model(x[:8]), None)


# ---------------------------------------------------------------------- MESA end to end


class ReferenceMESA:
    """MESA as a training loop: its own EMA model (a separate copy, eval mode), moved by
    w̄ ← δ·w̄ + (1 − δ)·w per parameter and float buffer after each base step, the integer
    buffers copied; from the start epoch the KL to the EMA model's outputs on the batch."""

    def __init__(
        self, model: nn.Module, ema: nn.Module, *, weight: float, tau: float, decay: float
    ) -> None:
        self.model, self.base, self.ema = model, sgd(model), ema.eval()
        self.weight, self.tau, self.decay = weight, tau, decay

    def step(self, epoch: int, start_epoch: int, x: Tensor, y: Tensor) -> Tensor:
        self.base.zero_grad()
        logits = self.model(x)
        loss = functional.cross_entropy(logits, y)
        if epoch >= start_epoch:
            with torch.no_grad():
                reference = self.ema(x)
            loss = loss + literal_term(logits, list(reference), self.weight, self.tau)
        loss.backward()
        self.base.step()
        d = self.decay
        with torch.no_grad():
            for w_bar, w in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                w_bar.copy_(d * w_bar + (1.0 - d) * w)
            for b_bar, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                b_bar.copy_(d * b_bar + (1.0 - d) * b if b.is_floating_point() else b)
        return loss.detach()


MESA_HP: dict[str, Any] = {"weight": 0.8, "tau": 2.0, "decay": 0.6, "start_epoch": 1}


def make_mesa(model: nn.Module, *, attach: bool = True, **overrides: Any) -> MESA:
    hp = {**MESA_HP, **overrides}
    opt = MESA(
        sgd(model),
        weight=hp["weight"],
        temperature=hp["tau"],
        decay=hp["decay"],
        start_epoch=hp["start_epoch"],
    )
    if attach:
        opt.attach(model, num_examples=N, steps_per_epoch=STEPS_PER_EPOCH)
    return opt


def ema_state(opt: MESA) -> dict[str, Tensor]:
    assert opt.ema is not None
    return opt.ema.state_dict()


def test_mesa_matches_reference() -> None:
    """Four epochs (start epoch 1) of a BatchNorm MLP side by side with the reference: weights
    bit for bit the bare SGD's in epoch 0, then to 1e-12; the EMA's parameters and running
    statistics to 1e-12 after every step, num_batches_tracked exactly; the first step of the
    start epoch differs from a bare SGD step."""
    x_all, y_all = dataset()
    lib_model, ref_model, bare_model = build_bn_mlp(), build_bn_mlp(), build_bn_mlp()
    lib = make_mesa(lib_model)
    ref = ReferenceMESA(
        ref_model,
        build_bn_mlp(),
        weight=MESA_HP["weight"],
        tau=MESA_HP["tau"],
        decay=MESA_HP["decay"],
    )
    bare = sgd(bare_model)
    start_step = MESA_HP["start_epoch"] * STEPS_PER_EPOCH
    assert lib.ema is not None
    assert not lib.ema.training
    assert lib_model.training

    for t, (epoch, ids) in enumerate(schedule(4)):
        x, y = x_all[ids], y_all[ids]
        lib_loss = lib_step(lib, lib_model, x, y, None)
        ref_loss = ref.step(epoch, MESA_HP["start_epoch"], x, y)
        if t <= start_step:
            bare_loss = bare_step(bare, bare_model, x, y)
        if epoch < MESA_HP["start_epoch"]:
            assert torch.equal(lib_loss, ref_loss)
            assert torch.equal(lib_loss, bare_loss)
            assert_tensors_equal(lib_model.state_dict().values(), ref_model.state_dict().values())
            assert_tensors_equal(lib_model.parameters(), bare_model.parameters())
        else:
            assert_close(lib_loss, ref_loss, **TIGHT, msg=f"loss differs at step {t}")
            assert_close(
                lib_model.state_dict(),
                ref_model.state_dict(),
                **TIGHT,
                msg=lambda m, t=t: f"weights differ after step {t}: {m}",
            )
        assert_close(
            ema_state(lib),
            ref.ema.state_dict(),
            **TIGHT,
            msg=lambda m, t=t: f"EMA differs after step {t}: {m}",
        )
        tracked = ema_state(lib)["1.num_batches_tracked"]
        assert tracked.dtype == torch.int64
        assert tracked.item() == t + 1
        if t == start_step:
            assert max_gap(lib_model, bare_model) > 1e-4
    # The EMA really lags the weights (δ = 0.6), and its running stats moved off their init.
    assert not torch.allclose(ema_state(lib)["0.weight"], lib_model[0].weight, atol=1e-3)
    assert not torch.allclose(ema_state(lib)["1.running_var"], torch.ones(8, dtype=F64))


@pytest.mark.parametrize("start_epoch", [0, 2])
def test_mesa_weight_zero_is_the_base(start_epoch: int) -> None:
    """λ = 0: the bare SGD's losses and weights, bit for bit, over four epochs (no EMA forward);
    the EMA still follows the weights."""
    x_all, y_all = dataset()
    lib_model, bare_model = build_bn_mlp(), build_bn_mlp()
    lib = make_mesa(lib_model, weight=0.0, start_epoch=start_epoch)
    bare = sgd(bare_model)
    assert lib.ema is not None
    forwards: list[int] = []
    lib.ema.register_forward_hook(lambda *_: forwards.append(1))
    for _, ids in schedule(4):
        x, y = x_all[ids], y_all[ids]
        assert torch.equal(lib_step(lib, lib_model, x, y, None), bare_step(bare, bare_model, x, y))
        assert_tensors_equal(lib_model.state_dict().values(), bare_model.state_dict().values())
    assert not forwards
    assert lib.steps_done == 4 * STEPS_PER_EPOCH
    assert not torch.equal(ema_state(lib)["0.weight"], build_bn_mlp()[0].weight)


def test_saf_weight_zero_is_the_base() -> None:
    """λ = 0 with the term 'on' from epoch 0: the bare SGD, bit for bit (the bank still fills)."""
    x_all, y_all = dataset()
    lib_model, bare_model = build_mlp(), build_mlp()
    lib = make_saf(lib_model, weight=0.0, start_epoch=0)
    bare = sgd(bare_model)
    for _, ids in schedule(4, SAF_MISSING):
        x, y = x_all[ids], y_all[ids]
        assert torch.equal(lib_step(lib, lib_model, x, y, ids), bare_step(bare, bare_model, x, y))
        assert_tensors_equal(lib_model.parameters(), bare_model.parameters())
    assert lib.written is not None
    assert (lib.written[1] == 3).sum() == N - 2


# ---------------------------------------------------------------------- the timing switch


@pytest.mark.parametrize("method", ["saf", "mesa"])
def test_replay_look_schedule_turns_the_term_on_and_off(method: str) -> None:
    """start_epoch 5: off in epochs 0–1 by the run's rule; ``replay_look_schedule(...)`` with a
    schedule turns it on (the loss and the step differ from the bare SGD's; MESA runs its EMA
    forward); ``None`` turns it off again (a term of exactly 0, no EMA forward)."""
    x_all, y_all = dataset()
    model = build_mlp()
    opt: LossTermMethod = (
        make_saf(model, start_epoch=5) if method == "saf" else make_mesa(model, start_epoch=5)
    )
    forwards: list[int] = []
    if isinstance(opt, MESA):
        assert opt.ema is not None
        opt.ema.register_forward_hook(lambda *_: forwards.append(1))
    index = method == "saf"
    steps = schedule(2)
    terms: list[Tensor] = []
    for _, ids in steps[:STEPS_PER_EPOCH]:  # epoch 0 fills SAF's bank, moves MESA's EMA
        lib_step(opt, model, x_all[ids], y_all[ids], ids if index else None, terms)
    assert all(torch.equal(term, torch.zeros((), dtype=F64)) for term in terms)
    assert not forwards

    def step_against_bare(t: int) -> tuple[Tensor, Tensor, bool]:
        _, ids = steps[t]
        x, y = x_all[ids], y_all[ids]
        bare_model = copy.deepcopy(model)
        bare = sgd(bare_model)
        bare.load_state_dict(copy.deepcopy(opt.base.state_dict()))  # no aliasing
        loss = lib_step(opt, model, x, y, ids if index else None, terms)
        bare_loss = bare_step(bare, bare_model, x, y)
        same = all(
            torch.equal(a, b)
            for a, b in zip(model.parameters(), bare_model.parameters(), strict=True)
        )
        return loss, bare_loss, same

    opt.replay_look_schedule(lambda t: True)
    loss, bare_loss, same = step_against_bare(3)
    assert terms[-1] > 1e-6
    assert loss > bare_loss
    assert not same
    assert len(forwards) == (0 if index else 1)

    opt.replay_look_schedule(None)
    loss, bare_loss, same = step_against_bare(4)
    assert torch.equal(terms[-1], torch.zeros((), dtype=F64))
    assert torch.equal(loss, bare_loss)
    assert same
    assert len(forwards) == (0 if index else 1)


# ---------------------------------------------------------------------- memory


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("lag", [1, 3])
def test_saf_memory_bytes(lag: int, dtype: torch.dtype) -> None:
    """(Ẽ + 1)·N·C·itemsize for the logits plus (Ẽ + 1)·N·8 for the epochs; per example that / N.
    Nothing before the first pass allocates the bank."""
    model = build_mlp(dtype=dtype)
    opt = SAF(sgd(model), lag=lag)
    assert opt.memory_bytes() == {}
    assert opt.bytes_per_example() == 0
    opt.attach(model, num_examples=N, steps_per_epoch=STEPS_PER_EPOCH)
    assert opt.memory_bytes() == {}
    assert opt.bytes_per_example() == 0
    x, y = dataset()
    ids = torch.arange(BATCH_SIZE)
    lib_step(opt, model, x[ids].to(dtype), y[ids], ids)
    itemsize = 4 if dtype == torch.float32 else 8
    total = (lag + 1) * N * OUT_FEATURES * itemsize + (lag + 1) * N * 8
    assert total % N == 0
    assert opt.memory_bytes() == {"output bank": total}
    assert opt.bytes_per_example() == total // N
    assert opt.bank is not None
    assert opt.bank.dtype == dtype


def test_mesa_memory_bytes() -> None:
    """The EMA model's parameters and buffers: 5·8 + 8 + 2·8 (BN) + 8·3 + 3 = 91 float64
    parameters, 2·8 float64 running stats and one int64 counter: 91·8 + 16·8 + 8 = 864 bytes,
    none of it per training example. Nothing before attach."""
    model = build_bn_mlp()
    opt = make_mesa(model, attach=False)
    assert opt.memory_bytes() == {}
    opt.attach(model, num_examples=N, steps_per_epoch=STEPS_PER_EPOCH)
    expected = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert expected == 864
    assert opt.memory_bytes() == {"EMA model": 864}
    assert opt.bytes_per_example() == 0


# ---------------------------------------------------------------------- resume


def run_steps(
    opt: LossTermMethod, model: nn.Module, steps: list[tuple[int, Tensor]], index: bool
) -> None:
    x_all, y_all = dataset()
    for _, ids in steps:
        lib_step(opt, model, x_all[ids], y_all[ids], ids if index else None)


@pytest.mark.parametrize("order", ["attach-then-load", "load-then-attach"])
@pytest.mark.parametrize("method", ["saf", "mesa"])
def test_resume_is_bit_for_bit(method: str, order: str) -> None:
    """N steps straight == k steps, a checkpoint (torch.save and back) into a fresh model,
    optimizer and method, N − k more: weights, base state, step counter and the bank or the EMA
    model bit for bit. The runner attaches before it loads; loading first works as well."""
    index = method == "saf"
    steps = schedule(6, SAF_MISSING) if index else schedule(4)
    k = 7  # mid-epoch 2, with the term on
    build: Callable[..., nn.Sequential] = build_mlp if index else build_bn_mlp
    make: Callable[..., LossTermMethod] = make_saf if index else make_mesa

    straight_model = build()
    straight = make(straight_model)
    run_steps(straight, straight_model, steps, index)

    first_model = build()
    first = make(first_model)
    run_steps(first, first_model, steps[:k], index)
    checkpoint = checkpoint_round_trip(first_model, first)

    model = build(seed=99)  # a different init: everything must come from the checkpoint
    opt = make(model, attach=False)
    model.load_state_dict(checkpoint["model"])
    if order == "attach-then-load":
        opt.attach(model, num_examples=N, steps_per_epoch=STEPS_PER_EPOCH)
        opt.load_state_dict(checkpoint["opt"])
    else:
        opt.load_state_dict(checkpoint["opt"])
        opt.attach(model, num_examples=N, steps_per_epoch=STEPS_PER_EPOCH)
    assert opt.steps_done == k
    assert opt.param_groups is opt.base.param_groups
    run_steps(opt, model, steps[k:], index)

    assert opt.steps_done == straight.steps_done == len(steps)
    assert_tensors_equal(model.state_dict().values(), straight_model.state_dict().values())
    assert_tensors_equal(
        [opt.base.state[p]["momentum_buffer"] for p in model.parameters()],
        [straight.base.state[p]["momentum_buffer"] for p in straight_model.parameters()],
    )
    if isinstance(opt, SAF):
        assert isinstance(straight, SAF)
        assert opt.num_examples == N
        assert_tensors_equal([opt.bank, opt.written], [straight.bank, straight.written])  # type: ignore[list-item]
    else:
        assert isinstance(opt, MESA)
        assert isinstance(straight, MESA)
        assert_tensors_equal(ema_state(opt).values(), ema_state(straight).values())
        # The EMA still follows this model's weights (not the deep copy's at attach).
        assert opt._model_params[0] is next(model.parameters())


def test_saf_state_dict_holds_the_bank() -> None:
    model = build_mlp()
    opt = make_saf(model)
    assert opt.state_dict()["loss_term"] == {
        "steps_done": 0,
        "bank": None,
        "written": None,
        "num_examples": N,
    }
    run_steps(opt, model, schedule(1), index=True)
    extra = opt.state_dict()["loss_term"]
    assert extra["steps_done"] == STEPS_PER_EPOCH
    assert extra["bank"].shape == (2, N, OUT_FEATURES)
    assert extra["written"].shape == (2, N)


def test_load_state_dict_refuses_a_foreign_dict() -> None:
    opt = SAF(tiny_sgd())
    with pytest.raises(ValueError, match="not a SAF state_dict"):
        opt.load_state_dict(tiny_sgd().state_dict())


# ---------------------------------------------------------------------- argument checks

BAD_ARGUMENTS = [
    ("weight", -0.1),
    ("weight", True),
    ("weight", float("nan")),
    ("weight", float("inf")),
    ("weight", "0.3"),
    ("temperature", 0.0),
    ("temperature", -1.0),
    ("temperature", False),
    ("temperature", float("inf")),
    ("start_epoch", -1),
    ("start_epoch", True),
    ("start_epoch", 1.0),
]
SAF_ONLY = [("lag", 0), ("lag", -1), ("lag", True), ("lag", 1.5)]
MESA_ONLY = [
    ("decay", 1.0),
    ("decay", 1.5),
    ("decay", -0.1),
    ("decay", True),
    ("decay", float("nan")),
]


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [(SAF, n, v) for n, v in BAD_ARGUMENTS + SAF_ONLY]
    + [(MESA, n, v) for n, v in BAD_ARGUMENTS + MESA_ONLY],
)
def test_bad_arguments_are_refused(cls: type[LossTermMethod], name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        cls(tiny_sgd(), **{name: value})


@pytest.mark.parametrize("cls", [SAF, MESA])
def test_good_edge_arguments_are_taken(cls: type[LossTermMethod]) -> None:
    extra = {"lag": 1} if cls is SAF else {"decay": 0.0}
    opt: Any = cls(tiny_sgd(), weight=0, temperature=1e-3, start_epoch=0, **extra)
    assert opt.weight == 0.0
    assert isinstance(opt.weight, float)
    assert opt.start_epoch == 0


@pytest.mark.parametrize("cls", [SAF, MESA])
def test_base_must_be_a_plain_optimizer(cls: type[LossTermMethod]) -> None:
    with pytest.raises(ValueError, match="base must be a plain"):
        cls(SAF(tiny_sgd()))
    with pytest.raises(ValueError, match="base must be a plain"):
        cls([nn.Parameter(torch.zeros(2))])  # type: ignore[arg-type]
