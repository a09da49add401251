"""No SAM-family step reads a value back to the host, beyond its registry's allowance.

On a GPU every ``.item()``, ``float()``, ``bool()`` or ``tolist()`` of a device value stops the
host until the device has caught up, so it cannot queue the next kernels meanwhile: a cost SGD
never pays. So do ``nonzero``, boolean-mask indexing, ``.cpu()``/``.to("cpu")`` and ``__index__``.
A CPU has no such stall, but the reads are the same Python calls, so counting them here (the
counter wraps them while ``step`` runs, the closure's forward and backward excepted) proves the
property without a GPU. The optimizers run with ``scalars="device"``, the path CUDA takes (on the
CPU ``"auto"`` reads its scalars on purpose: there a read is free). ``bench/gpu.sh`` repeats the
check on CUDA under ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from looksam.bench.host_reads import count_step_host_reads
from looksam.optim import create_optimizer, get_optimizer_info, list_optimizers
from looksam.optim._base import SharpnessAwareOptimizer

#: The wrappers a plain closure drives (the contract's methods have tests of their own).
SAM_FAMILY = [info.name for info in list_optimizers() if info.wraps_base and info.drop_in]
STEPS = 8  # with k = 2 (or a second pass replayed on every other step): 4 look, 4 plain


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _closure(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> Callable[[], Tensor]:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(16, 6, generator=generator)
    y = torch.randint(0, 3, (16,), generator=generator)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return closure


def _build(
    name: str, model: nn.Module, scalars: str = "device", **overrides: Any
) -> SharpnessAwareOptimizer:
    info = get_optimizer_info(name)
    hp: dict[str, Any] = {"k": 2} if info.takes_k else {}
    hp.update(overrides)
    opt = create_optimizer(name, model, base="sgd", total_steps=STEPS, lr=0.05, **hp)
    assert isinstance(opt, SharpnessAwareOptimizer)
    opt.scalars = scalars
    if not info.fixed_schedule:  # a rule or a phase: make both kinds of step happen
        opt.replay_look_schedule(lambda t: t % 2 == 0)
    return opt


def _count(opt: SharpnessAwareOptimizer, model: nn.Module) -> tuple[list[int], list[bool]]:
    """Host reads of each step, and whether it took a second pass."""
    looks: list[bool] = []
    with count_step_host_reads(opt) as counter:
        for step in range(STEPS):
            calls = 0
            inner = _closure(model, opt, step)

            def closure(inner: Callable[[], Tensor] = inner) -> Tensor:
                nonlocal calls
                calls += 1
                return inner()

            opt.step(closure)
            looks.append(calls == 2)
    return [s.host_reads for s in counter.steps], looks


@pytest.mark.parametrize("name", SAM_FAMILY)
def test_steps_read_nothing_back_beyond_the_allowance(name: str) -> None:
    model = _model()
    opt = _build(name, model)
    reads, looks = _count(opt, model)
    allowance = get_optimizer_info(name).host_read_allowance
    assert len(reads) == STEPS
    fewest, most = get_optimizer_info(name).pass_range({"k": 2})
    assert (True in looks) == (most > 1.0), looks  # every kind of step it has was counted
    assert (False in looks) == (fewest < 2.0), looks
    assert max(reads) <= allowance, list(zip(looks, reads, strict=True))


def test_the_allowance_is_used_where_a_rule_decides() -> None:
    """The boundary: AE-SAM's rule reads exactly one value per step (the decision's ‖g‖²), and
    nothing else does; an optimizer at 0 reads none."""
    model = _model()
    reads, _ = _count(_build("aesam", model), model)
    assert reads == [1] * STEPS
    model = _model()
    reads, _ = _count(_build("looksam", model), model)
    assert reads == [0] * STEPS


@pytest.mark.parametrize("name", ["sam", "looksam", "gsam", "layerlooksam"])
def test_zero_and_overflowing_gradients_need_no_host_read(name: str) -> None:
    """The zero and overflow guards (‖g‖ = 0, a non-finite g_s) run on the device too."""
    model = _model()
    opt = _build(name, model)
    w = [p.detach().clone() for p in model.parameters()]
    assert _reads_of(lambda: _zero_then_overflow(opt, model)) == 0
    assert all(torch.equal(p, v) for p, v in zip(model.parameters(), w, strict=True))


@pytest.mark.parametrize("name", ["sam", "looksam", "msam", "gsam"])
def test_auto_reads_its_scalars_on_the_cpu_and_device_forces_the_accelerator_path(
    name: str,
) -> None:
    """The switch is real: "auto" on a CPU keeps norms as floats (reads), "device" reads none."""
    for scalars, expect_reads in (("auto", True), ("host", True), ("device", False)):
        model = _model()
        reads, _ = _count(_build(name, model, scalars=scalars), model)
        assert (sum(reads) > 0) == expect_reads, (scalars, reads)


def test_the_scalars_switch_is_checked() -> None:
    model = _model()
    opt = _build("looksam", model)
    for bad in ("gpu", "", None, 1):
        with pytest.raises(ValueError, match="scalars must be one of 'auto', 'host', 'device'"):
            opt.scalars = bad  # type: ignore[assignment]
    assert opt.scalars == "device"


def _tensor_reads() -> list[tuple[str, Callable[[Tensor], object], int]]:
    """Each way a step can wait on the device, and a look-alike that does not."""
    mask = torch.tensor([True, False, True])
    index = torch.tensor([0, 2])
    return [
        ("item", lambda t: t[0].item(), 1),
        ("float", lambda t: float(t[0]), 1),
        ("bool", lambda t: bool(t[0] > 0), 1),
        ("tolist", lambda t: t.tolist(), 1),
        ("__index__", lambda t: [0, 1, 2][t[0].long()], 1),
        ("nonzero method", lambda t: t.nonzero(), 1),
        ("torch.nonzero", lambda t: torch.nonzero(t), 1),
        ("masked_select", lambda t: torch.masked_select(t, mask), 1),
        ("mask index", lambda t: t[mask], 1),
        ("mask index in a tuple", lambda t: t.view(1, 3)[0, mask], 1),
        ("mask assignment", lambda t: t.__setitem__(mask, 0.0), 1),
        (".cpu()", lambda t: t.cpu(), 1),
        ('.to("cpu")', lambda t: t.to("cpu"), 1),
        (".to(device=cpu)", lambda t: t.to(device=torch.device("cpu")), 1),
        ('.to("cpu", dtype)', lambda t: t.to("cpu", torch.float64), 1),
        # Look-alikes that stay on the device: not reads.
        ("long index", lambda t: t[index], 0),
        ("slice", lambda t: t[1:], 0),
        ("int index", lambda t: t[0], 0),
        (".to(dtype)", lambda t: t.to(torch.float64), 0),
        (".to(other tensor)", lambda t: t.to(index), 0),
        ("torch.where on a mask", lambda t: torch.where(mask, t, 0.0), 0),
    ]


@pytest.mark.parametrize(
    ("action", "expected"),
    [(a, n) for _, a, n in _tensor_reads()],
    ids=[label for label, _, _ in _tensor_reads()],
)
def test_the_counter_sees_every_way_a_step_waits_on_the_device(
    action: Callable[[Tensor], object], expected: int
) -> None:
    t = torch.tensor([1.0, -2.0, 3.0])
    assert _reads_of(lambda: action(t)) == expected


def _zero_then_overflow(opt: SharpnessAwareOptimizer, model: nn.Module) -> None:
    """A look step with g = 0, whose second pass overflows; the base step is skipped."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.first_step()
    for p in model.parameters():
        p.grad = torch.full_like(p, float("inf"))
    opt.second_step(lambda: None)


def _reads_of(action: Callable[[], None]) -> int:
    """Host reads made by ``action``, counted as the step counter counts them."""
    probe = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    original_step = probe.step

    def step(*_: Any, **__: Any) -> None:
        action()

    probe.step = step  # type: ignore[method-assign]
    try:
        with count_step_host_reads(probe) as counter:
            probe.step()
    finally:
        probe.step = original_step  # type: ignore[method-assign]
    return counter.steps[0].host_reads
