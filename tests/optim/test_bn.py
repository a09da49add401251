"""frozen_bn_stats: the perturbed pass must not touch BatchNorm running statistics."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from looksam import SAM, LookSAM, frozen_bn_stats

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def bn_model(momentum: float | None = 0.1) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(4, 6),
            nn.BatchNorm1d(6, momentum=momentum),
            nn.Tanh(),
            nn.Linear(6, 2),
            nn.BatchNorm1d(2, momentum=momentum),
        )
    return model.double().train()


def batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 3.0 + 2.0 * torch.randn(32, 4, generator=gen, dtype=torch.float64)
    return x, torch.randn(32, 2, generator=gen, dtype=torch.float64)


def bn_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[-1] in BN_BUFFERS}


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stats_unchanged_inside_and_tracking_restored() -> None:
    """Train-mode forwards inside the context leave running_mean/var/num_batches_tracked
    bit-identical, still normalise with batch statistics, and the flags come back after."""
    model = bn_model()
    x, _ = batch()
    before = bn_state(model)
    with torch.no_grad():
        reference_out = copy.deepcopy(model)(x)  # a normal train-mode forward, on a copy
        with frozen_bn_stats(model):
            assert all(
                not m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm1d)
            )
            out = model(x)
            model(x + 1.0)
    assert_same_state(bn_state(model), before)
    assert torch.equal(out, reference_out)  # batch statistics still used for normalisation
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_original_flags_restored_even_after_an_exception() -> None:
    """A layer that never tracked stays untracked; flags are restored when the body raises."""
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(KeyError), frozen_bn_stats(model):
        raise KeyError("boom")
    assert [m.track_running_stats for m in model] == [True, False]


def test_disabled_is_a_no_op() -> None:
    """enabled=False: the stats update exactly as without the context."""
    model, control = bn_model(), bn_model()
    x, _ = batch()
    with torch.no_grad():
        with frozen_bn_stats(model, enabled=False):
            model(x)
        control(x)
    assert_same_state(bn_state(model), bn_state(control))
    assert int(model[1].num_batches_tracked) == 1


def _bn_closure(
    model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, freeze: Callable[[], bool]
) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        opt.zero_grad()
        with frozen_bn_stats(model, enabled=freeze()):
            loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("momentum", [0.1, None])  # None: cumulative average over batches
def test_sam_step_updates_stats_once(momentum: float | None) -> None:
    """With ``enabled=opt.in_second_pass`` a full SAM step updates the stats exactly as one plain
    forward at w does; without freezing (control) the perturbed pass leaks in as a second update.
    """
    x, y = batch()
    expected_model = bn_model(momentum)
    with torch.no_grad():
        expected_model(x)
    expected = bn_state(expected_model)

    model = bn_model(momentum)
    opt = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    opt.step(_bn_closure(model, opt, x, y, lambda: opt.in_second_pass))
    assert_same_state(bn_state(model), expected)

    leaky = bn_model(momentum)
    leaky_opt = SAM(torch.optim.SGD(leaky.parameters(), lr=0.1), rho=0.5)
    leaky_opt.step(_bn_closure(leaky, leaky_opt, x, y, lambda: False))
    assert int(leaky[1].num_batches_tracked) == 2
    assert not torch.equal(bn_state(leaky)["1.running_mean"], expected["1.running_mean"])


def test_looksam_counts_one_stats_update_per_step() -> None:
    """LookSAM k=2 over 5 steps (3 look steps): num_batches_tracked == 5, one per step."""
    model = bn_model()
    opt = LookSAM(torch.optim.SGD(model.parameters(), lr=0.05), rho=0.1, k=2)
    for t in range(5):
        x, y = batch(t)
        opt.step(_bn_closure(model, opt, x, y, lambda: opt.in_second_pass))
    assert int(model[1].num_batches_tracked) == 5
    assert int(model[4].num_batches_tracked) == 5
