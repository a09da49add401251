"""What a step is made of: ops, passes over |θ| and extra memory, counted on real training steps.

The counts follow from each method's definition, so they are asserted exactly: SGD (momentum and
weight decay, one tensor at a time on the CPU) reads and writes 11 |θ| per step; LookSAM's reuse
step adds a norm of g (1) and g += c·g_v (3); SAM keeps w + ε alive through its second pass.
"""

from __future__ import annotations

import pytest

from looksam.bench.profile import format_bytes, profile_step, profile_suite
from looksam.bench.suite import SuiteSpec
from looksam.optim._foreach import FlatLayout
from looksam.train.runner import RunConfig, TrainingSession

SPEC = SuiteSpec(
    workload="synthetic-mlp",
    optimizers=("sam", "samk", "looksam", "msam", "gsam", "aelooksam"),
)


@pytest.fixture(scope="module")
def profiles() -> dict[str, object]:
    return {p.optimizer: p for p in profile_suite(SPEC, steps=6)}


@pytest.fixture(scope="module")
def theta() -> tuple[int, int]:
    """|θ| in elements and the bytes of LookSAM's two flat rows (aligned) on synthetic-mlp."""
    session = TrainingSession(RunConfig(workload="synthetic-mlp", optimizer="sgd"))
    params = list(session.model.parameters())
    layout = FlatLayout.of(params)
    return sum(p.numel() for p in params), 2 * layout.total * 4


def test_extra_memory_is_what_each_method_keeps(
    profiles: dict[str, object], theta: tuple[int, int]
) -> None:
    """SAM, SAM-k and MSAM hold one perturbed copy of w through a pass; GSAM also keeps g; LookSAM
    keeps its two flat rows (g_v and g) on top of w + ε; SGD is the reference."""
    elements, rows = theta
    extra = {name: p.extra_bytes for name, p in profiles.items()}  # type: ignore[attr-defined]
    assert extra["sgd"] == 0
    # Within a few 0-dim tensors (the first pass's loss, kept to be returned, is one).
    for name in ("sam", "samk", "msam"):
        assert extra[name] == pytest.approx(4 * elements, abs=64), name
    assert extra["gsam"] == pytest.approx(2 * 4 * elements, abs=64)
    assert extra["looksam"] == pytest.approx(rows + 4 * elements, abs=64)
    state = {name: p.state_bytes for name, p in profiles.items()}  # type: ignore[attr-defined]
    assert state["looksam"] - state["sgd"] == rows


def test_passes_over_the_parameters_follow_the_definitions(profiles: dict[str, object]) -> None:
    """Elements read + written by the step's own code, in |θ| (a norm reads 1, ``x += c·y``
    reads 2 and writes 1, ``w + c·g`` into a new tensor reads 2 and writes 1)."""
    passes = {
        name: (p.plain_passes, p.look_passes)  # type: ignore[attr-defined]
        for name, p in profiles.items()
    }
    assert passes["sgd"] == (11.0, None)  # wd add 3, momentum mul_ 2 and add_ 3, update 3
    assert passes["samk"][0] == 11.0  # a plain SAM-k step is SGD's
    assert passes["samk"][1] == pytest.approx(15.0, abs=1e-3)  # + ‖g‖ (1) and w + ε (3)
    assert passes["looksam"][0] == pytest.approx(15.0, abs=1e-3)  # + ‖g‖ (1), g += c·g_v (3)
    assert passes["msam"][0] == pytest.approx(15.0, abs=1e-3)  # + ‖v‖ (1) and w̃ (3)
    assert passes["gsam"] == (None, pytest.approx(25.0, abs=1e-3))


def test_an_adaptive_rule_reuses_the_norm_it_decided_on(profiles: dict[str, object]) -> None:
    """AE-LookSAM reads ‖g‖ for its decision; its reuse step takes that value instead of a
    second norm, so it dispatches exactly what LookSAM's does."""
    ae, plain = profiles["aelooksam"], profiles["looksam"]
    assert ae.plain_ops == plain.plain_ops  # type: ignore[attr-defined]
    assert ae.plain_passes == plain.plain_passes  # type: ignore[attr-defined]


def test_op_counts_repeat_and_a_look_step_does_more(profiles: dict[str, object]) -> None:
    again = profile_step(SPEC, "looksam", steps=6)
    first = profiles["looksam"]
    assert (again.plain_ops, again.look_ops) == (first.plain_ops, first.look_ops)  # type: ignore[attr-defined]
    assert again.look_ops > again.plain_ops > profiles["sgd"].plain_ops  # type: ignore[attr-defined,operator]


def test_scalars_on_the_device_dispatch_more_than_floats_on_the_host() -> None:
    """The switch shows in the count: the device path's 0-dim guards are dispatches."""
    host = profile_step(SPEC, "looksam", steps=6)
    original = TrainingSession.__init__

    def device_scalars(self: TrainingSession, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.optimizer.scalars = "device"  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingSession, "__init__", device_scalars)
        device = profile_step(SPEC, "looksam", steps=6)
    assert device.look_ops > host.look_ops + 10  # type: ignore[operator]
    assert device.look_passes >= host.look_passes  # the same arithmetic, and a gather


@pytest.mark.parametrize(
    ("size", "signed", "text"),
    [
        (None, False, "—"),
        (0, True, "0 B"),
        (1023, False, "1023 B"),
        (1024, False, "1.0 KiB"),
        (340_000, True, "+332 KiB"),
        (-2 * 1024**2, True, "−2.0 MiB"),
        (3 * 1024**3, False, "3.0 GiB"),
    ],
)
def test_format_bytes(size: int | None, signed: bool, text: str) -> None:
    assert format_bytes(size, signed=signed) == text
